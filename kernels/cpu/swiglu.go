package cpu

import "github.com/ringtune/ringtune/kernels"

// The gated activation of Qwen3's MLP, down_proj(silu(gate)·up):
// out = silu(gate)·up with silu(x) = x·σ(x), σ(x) = 1/(1 + e^−x). See
// package kernels for the gradient policy and the dimension letters.

// SwiGLUForward computes out = silu(gate)·up elementwise.
func (b *Backend) SwiGLUForward(out, gate, up kernels.Tensor) {
	n, err := kernels.CheckSwiGLUForward(out, gate, up)
	if err != nil {
		panic(err)
	}
	t := &b.tasks.swiGLUForward
	*t = swiGLUForwardTask{out: Float32s(out), gate: Float32s(gate), up: Float32s(up)}
	b.pool.run(t, n, elementGrain)
	*t = swiGLUForwardTask{}
}

// swiGLUForwardTask: out, gate, up: (N, I).
type swiGLUForwardTask struct {
	out, gate, up []float32
}

func (t *swiGLUForwardTask) run(_, start, end int) {
	out := t.out[start:end]
	gate := t.gate[start:end]
	up := t.up[start:end]
	gate = gate[:len(out)]
	up = up[:len(out)]
	for i := range out {
		x := gate[i]
		out[i] = x / (1 + expf(-x)) * up[i]
	}
}

// SwiGLUBackward computes, with s = σ(gate),
//
//	dUp   = dOut·silu(gate)
//	dGate = dOut·up·s·(1 + gate·(1 − s))
//
// where s·(1 + x·(1 − s)) is the derivative of x·σ(x).
func (b *Backend) SwiGLUBackward(dGate, dUp, dOut, gate, up kernels.Tensor) {
	n, err := kernels.CheckSwiGLUBackward(dGate, dUp, dOut, gate, up)
	if err != nil {
		panic(err)
	}
	t := &b.tasks.swiGLUBackward
	*t = swiGLUBackwardTask{dGate: Float32s(dGate), dUp: Float32s(dUp), dOut: Float32s(dOut), gate: Float32s(gate), up: Float32s(up)}
	b.pool.run(t, n, elementGrain)
	*t = swiGLUBackwardTask{}
}

// swiGLUBackwardTask: all (N, I). Each element reads its inputs before it
// writes, so the outputs may be the same views as the inputs.
type swiGLUBackwardTask struct {
	dGate, dUp, dOut, gate, up []float32
}

func (t *swiGLUBackwardTask) run(_, start, end int) {
	dGate := t.dGate[start:end]
	dUp := t.dUp[start:end]
	dOut := t.dOut[start:end]
	gate := t.gate[start:end]
	up := t.up[start:end]
	dUp = dUp[:len(dGate)]
	dOut = dOut[:len(dGate)]
	gate = gate[:len(dGate)]
	up = up[:len(dGate)]
	for i := range dGate {
		x, u, g := gate[i], up[i], dOut[i]
		s := 1 / (1 + expf(-x))
		dUp[i] = g * x * s
		dGate[i] = g * u * s * (1 + x*(1-s))
	}
}
