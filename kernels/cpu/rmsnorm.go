package cpu

import (
	"math"

	"github.com/ringtune/ringtune/kernels"
)

// RMSNorm over the last dimension, as Hugging Face's Qwen3RMSNorm computes it
// in fp32: y = w · (x · r) with r = 1/sqrt(mean(x²) + eps). The sums run in
// float64. See package kernels for the gradient policy and the dimension
// letters.

// RMSNormForward normalizes each row of x.
func (b *Backend) RMSNormForward(out, rstd, x, weight kernels.Tensor, eps float32) {
	d, err := kernels.CheckRMSNormForward(out, rstd, x, weight, eps)
	if err != nil {
		panic(err)
	}
	t := &b.tasks.rmsNormForward
	*t = rmsNormForwardTask{out: Float32s(out), x: Float32s(x), weight: Float32s(weight), c: d.C, eps: float64(eps)}
	if !rstd.IsAbsent() {
		t.rstd = Float32s(rstd)
	}
	b.pool.run(t, d.N, max(1, elementGrain/max(1, d.C)))
	*t = rmsNormForwardTask{}
}

// rmsNormForwardTask normalizes rows.
// out, x: (N, C); weight: (C); rstd: (N) or nil.
type rmsNormForwardTask struct {
	out, x, weight, rstd []float32
	c                    int
	eps                  float64
}

func (t *rmsNormForwardTask) run(_, start, end int) {
	c := t.c
	w := t.weight[:c]
	for n := start; n < end; n++ {
		x := t.x[n*c : (n+1)*c]
		var sumSquares float64
		for _, v := range x {
			sumSquares += float64(v) * float64(v)
		}
		r := float32(1 / math.Sqrt(sumSquares/float64(c)+t.eps))
		if t.rstd != nil {
			t.rstd[n] = r
		}
		out := t.out[n*c : (n+1)*c]
		out = out[:len(x)]
		w := w[:len(x)]
		for i, v := range x {
			out[i] = w[i] * (v * r)
		}
	}
}

// RMSNormBackward computes dx and accumulates dWeight. dWeight comes first,
// because dx may overwrite dOut.
//
// With y_i = w_i·x_i·r and r = (Σx²/C + eps)^(−1/2), dr/dx_j = −r³·x_j/C, so
//
//	dx_j = r·w_j·g_j − (r³/C)·x_j·Σ_i g_i·w_i·x_i
//	dw_i += Σ_rows g_i·x_i·r
func (b *Backend) RMSNormBackward(dx, dWeight, dOut, x, weight, rstd kernels.Tensor) {
	d, err := kernels.CheckRMSNormBackward(dx, dWeight, dOut, x, weight, rstd)
	if err != nil {
		panic(err)
	}
	if !dWeight.IsAbsent() {
		t := &b.tasks.rmsNormWeightGrad
		*t = rmsNormWeightGradTask{dWeight: Float32s(dWeight), dOut: Float32s(dOut), x: Float32s(x), rstd: Float32s(rstd), n: d.N, c: d.C}
		b.pool.run(t, (d.C+rmsNormColumnBlock-1)/rmsNormColumnBlock, 1)
		*t = rmsNormWeightGradTask{}
	}
	t := &b.tasks.rmsNormBackward
	*t = rmsNormBackwardTask{dx: Float32s(dx), dOut: Float32s(dOut), x: Float32s(x), weight: Float32s(weight), rstd: Float32s(rstd), c: d.C}
	b.pool.run(t, d.N, max(1, elementGrain/max(1, d.C)))
	*t = rmsNormBackwardTask{}
}

// rmsNormBackwardTask computes dx row by row.
// dx, dOut, x: (N, C); weight: (C); rstd: (N).
type rmsNormBackwardTask struct {
	dx, dOut, x, weight, rstd []float32
	c                         int
}

func (t *rmsNormBackwardTask) run(_, start, end int) {
	c := t.c
	w := t.weight[:c]
	for n := start; n < end; n++ {
		x := t.x[n*c : (n+1)*c]
		g := t.dOut[n*c : (n+1)*c]
		g = g[:len(x)]
		w := w[:len(x)]
		var dot float64
		for i, v := range x {
			dot += float64(g[i]) * float64(w[i]) * float64(v)
		}
		r := t.rstd[n]
		k := float32(float64(r) * float64(r) * float64(r) * dot / float64(c))
		dx := t.dx[n*c : (n+1)*c]
		dx = dx[:len(x)]
		for i, v := range x {
			dx[i] = r*w[i]*g[i] - k*v
		}
	}
}

// rmsNormColumnBlock is the number of weight columns per task of the weight
// gradient, which keeps one float64 accumulator per column on the stack.
const rmsNormColumnBlock = 64

// rmsNormWeightGradTask accumulates dWeight over column blocks, so the sums
// run in row order whatever the number of workers.
// dWeight: (C), accumulated; dOut, x: (N, C); rstd: (N).
type rmsNormWeightGradTask struct {
	dWeight, dOut, x, rstd []float32
	n, c                   int
}

func (t *rmsNormWeightGradTask) run(_, start, end int) {
	for block := start; block < end; block++ {
		c0 := block * rmsNormColumnBlock
		c1 := min(t.c, c0+rmsNormColumnBlock)
		var acc [rmsNormColumnBlock]float64
		sums := acc[:c1-c0]
		for n := range t.n {
			g := t.dOut[n*t.c+c0 : n*t.c+c1]
			x := t.x[n*t.c+c0 : n*t.c+c1]
			x = x[:len(g)]
			sums := sums[:len(g)]
			r := float64(t.rstd[n])
			for i, gi := range g {
				sums[i] += float64(gi) * float64(x[i]) * r
			}
		}
		dw := t.dWeight[c0:c1]
		dw = dw[:len(sums)]
		for i, s := range sums {
			dw[i] += float32(s)
		}
	}
}
