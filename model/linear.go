package model

import "github.com/ringtune/ringtune/kernels"

// The projections of a decoder layer, with an optional LoRA adapter:
//
//	y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ,  s = alpha / r
//
// as PEFT's lora.Linear computes it. dropout is the identity unless
// Options.LoRA.Dropout is positive and ForwardBackward is running (see
// dropout.go). W is (out, in), A is (r, in) and B is (out, r). Parameter gradients accumulate (+=). dx is
// overwritten or accumulated as the caller asks, because q_proj, k_proj and
// v_proj share their input, and so do gate_proj and up_proj.

// projection is one linear layer of a decoder layer and its adapter.
type projection struct {
	group  string // "self_attn" or "mlp"
	module string // q_proj, ..., down_proj
	index  int    // position of module in projectionModules
	layer  int    // index of the decoder layer
	weight *tensorEntry
	loraA  *tensorEntry // nil unless LoRA targets module
	loraB  *tensorEntry // nil unless LoRA targets module
}

// linearForward computes y = x·Wᵀ plus the adapter's term.
// y: (B, T, out), overwritten; x: (B, T, in);
// hidden: (B, T, r), receives dropout(x)·Aᵀ for backward, absent without an
// adapter.
func (m *Model) linearForward(p *projection, y, x, hidden kernels.Tensor) {
	be := m.backend
	be.Matmul(y, x, p.weight.value, false, true, 1, 0)
	if p.loraA == nil {
		return
	}
	m.loraHiddenForward(p, x, hidden)
	be.Matmul(y, hidden, p.loraB.value, false, true, m.loraScaling, 1)
}

// loraHiddenForward computes the adapter's hidden = dropout(x)·Aᵀ, the only
// activation of a projection that its backward pass reads besides x. It does
// nothing without an adapter.
// x: (B, T, in); hidden: (B, T, r).
func (m *Model) loraHiddenForward(p *projection, x, hidden kernels.Tensor) {
	if p.loraA == nil {
		return
	}
	if m.dropoutActive() {
		x = m.dropout.forward(m.backend, p, m.dropoutStep, x)
	}
	m.backend.Matmul(hidden, x, p.loraA.value, false, true, 1, 0)
}

// linearBackward computes dx from dy and accumulates the gradients of W, or
// of B and A, marking each ready as soon as it is final.
// dx: (B, T, in), overwritten, or added to when accumulate is true;
// dy: (B, T, out); x: (B, T, in), the forward input;
// hidden: (B, T, r), the forward's dropout(x)·Aᵀ, absent without an adapter.
func (m *Model) linearBackward(p *projection, dx, dy, x, hidden kernels.Tensor, accumulate bool) {
	be := m.backend
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	be.Matmul(dx, dy, p.weight.value, false, false, 1, beta) // dx (+)= dy·W
	if !p.weight.frozen {
		be.Matmul(p.weight.grad, dy, x, true, false, 1, 1) // dW += dyᵀ·x
		m.ready.mark(p.weight)
	}
	if p.loraA == nil {
		return
	}
	dHidden := m.acts.grads.lora                                       // (B, T, r)
	be.Matmul(p.loraB.grad, dy, hidden, true, false, m.loraScaling, 1) // dB += s·dyᵀ·hidden
	m.ready.mark(p.loraB)
	be.Matmul(dHidden, dy, p.loraB.value, false, false, m.loraScaling, 0) // dHidden = s·dy·B
	if m.dropoutActive() {
		// Draw the forward's mask again, for dA and for dx.
		dropped := m.dropout.forward(be, p, m.dropoutStep, x)
		be.Matmul(p.loraA.grad, dHidden, dropped, true, false, 1, 1) // dA += dHiddenᵀ·dropout(x)
		m.ready.mark(p.loraA)
		m.dropout.backward(be, p, dx, dHidden, p.loraA.value) // dx += mask ⊙ dHidden·A/(1−p)
		return
	}
	be.Matmul(p.loraA.grad, dHidden, x, true, false, 1, 1) // dA += dHiddenᵀ·x
	m.ready.mark(p.loraA)
	be.Matmul(dx, dHidden, p.loraA.value, false, false, 1, 1) // dx += dHidden·A
}

// dropoutActive reports whether the adapters apply dropout now: in
// ForwardBackward, with a positive Options.LoRA.Dropout.
func (m *Model) dropoutActive() bool {
	return m.training && m.dropout != nil
}
