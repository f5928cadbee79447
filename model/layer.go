package model

import (
	"slices"

	"github.com/ringtune/ringtune/kernels"
)

// One Qwen3 decoder layer, as Qwen3DecoderLayer in transformers'
// modeling_qwen3.py computes it. layerForward is a flat list of kernel calls in
// architecture order, and layerBackward runs the same list in reverse with
// d-prefixed names: each backward line is the derivative of the forward line
// it mirrors. Parameter gradients accumulate, activation gradients are
// overwritten, and the residual stream's gradient g.residual collects each
// branch with Add.

// numProjections is the number of linear layers in a decoder layer.
const numProjections = 7

// layerWeights holds the tensors of one decoder layer.
type layerWeights struct {
	inputNorm *tensorEntry // (C) input_layernorm
	qNorm     *tensorEntry // (HS) q_norm, shared by the query heads
	kNorm     *tensorEntry // (HS) k_norm, shared by the key heads
	postNorm  *tensorEntry // (C) post_attention_layernorm

	q, k, v, o     projection // (NH·HS, C), (NKV·HS, C), (NKV·HS, C), (C, NH·HS)
	gate, up, down projection // (I, C), (I, C), (C, I)
}

// projections returns the layer's projections in the order of
// projectionModules, with their names and indices set.
func (w *layerWeights) projections() [numProjections]*projection {
	list := [numProjections]*projection{&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down}
	for i, p := range list {
		p.module = projectionModules[i]
		p.index = i
		p.group = "self_attn"
		if i >= 4 {
			p.group = "mlp"
		}
	}
	return list
}

// adaptedProjections reports, by projection index, which projections carry a
// LoRA adapter.
func (m *Model) adaptedProjections() [numProjections]bool {
	var adapted [numProjections]bool
	if m.opts.Mode != ModeLoRA {
		return adapted
	}
	for i, module := range projectionModules {
		adapted[i] = slices.Contains(m.opts.LoRA.TargetModules, module)
	}
	return adapted
}

// layerForward runs one decoder layer.
// x: (B, T, C), the layer input; out: (B, T, C), the layer output.
// With out absent it skips down_proj's product and the residual add, and
// computes only down_proj's adapter input. Backward uses that to recompute a
// checkpointed layer, whose output is already stored as the next layer's input.
func (m *Model) layerForward(w *layerWeights, a *layerActs, x, out kernels.Tensor) {
	be, eps := m.backend, m.eps
	positions, segments, theta := m.acts.positions, m.acts.segments, m.cfg.RopeTheta

	// Attention block.
	be.RMSNormForward(a.ln1, a.ln1Rstd, x, w.inputNorm.value, eps)
	m.linearForward(&w.q, a.qProj, a.ln1, a.lora[w.q.index])
	m.linearForward(&w.k, a.kProj, a.ln1, a.lora[w.k.index])
	m.linearForward(&w.v, a.v, a.ln1, a.lora[w.v.index])
	be.RMSNormForward(a.q, a.qRstd, a.qProjHeads, w.qNorm.value, eps) // per head, over HS
	be.RMSNormForward(a.k, a.kRstd, a.kProjHeads, w.kNorm.value, eps)
	be.RoPEForward(a.q, a.q, positions, theta)
	be.RoPEForward(a.k, a.k, positions, theta)
	be.AttentionForward(a.attnHeads, a.lse, a.q, a.k, a.vHeads, segments)
	m.linearForward(&w.o, a.h, a.attn, a.lora[w.o.index])
	be.Add(a.h, a.h, x) // h = x + o_proj(attn)

	// MLP block.
	be.RMSNormForward(a.ln2, a.ln2Rstd, a.h, w.postNorm.value, eps)
	m.linearForward(&w.gate, a.gate, a.ln2, a.lora[w.gate.index])
	m.linearForward(&w.up, a.up, a.ln2, a.lora[w.up.index])
	be.SwiGLUForward(a.act, a.gate, a.up)
	if out.IsAbsent() {
		m.loraHiddenForward(&w.down, a.act, a.lora[w.down.index])
		return
	}
	m.linearForward(&w.down, out, a.act, a.lora[w.down.index])
	be.Add(out, out, a.h) // out = h + down_proj(act)
}

// layerBackward runs the backward pass of one decoder layer.
// x: (B, T, C), the layer input. On entry g.residual holds dOut, the gradient
// of the layer output, and on return dx, the gradient of x.
func (m *Model) layerBackward(w *layerWeights, a *layerActs, x kernels.Tensor) {
	be := m.backend
	g := &m.acts.grads
	positions, segments, theta := m.acts.positions, m.acts.segments, m.cfg.RopeTheta

	// MLP block. out = h + down_proj(act), so dh starts as dOut.
	m.linearBackward(&w.down, g.act, g.residual, a.act, a.lora[w.down.index], false) // dAct
	be.SwiGLUBackward(g.act, g.up, g.act, a.gate, a.up)                              // dGate (in place of dAct), dUp
	m.linearBackward(&w.up, g.norm, g.up, a.ln2, a.lora[w.up.index], false)          // dLn2 = dUp·W_up
	m.linearBackward(&w.gate, g.norm, g.act, a.ln2, a.lora[w.gate.index], true)      // dLn2 += dGate·W_gate
	be.RMSNormBackward(g.norm, w.postNorm.grad, g.norm, a.h, w.postNorm.value, a.ln2Rstd)
	m.ready.mark(w.postNorm)
	be.Add(g.residual, g.residual, g.norm) // dh

	// Attention block. h = x + o_proj(attn), so dx starts as dh.
	m.linearBackward(&w.o, g.attn, g.residual, a.attn, a.lora[w.o.index], false) // dAttn
	be.AttentionBackward(g.qHeads, g.kHeads, g.vHeads, g.attnHeads, a.q, a.k, a.vHeads, a.attnHeads, a.lse, segments)
	be.RoPEBackward(g.kHeads, g.kHeads, positions, theta)
	be.RoPEBackward(g.qHeads, g.qHeads, positions, theta)
	be.RMSNormBackward(g.kHeads, w.kNorm.grad, g.kHeads, a.kProjHeads, w.kNorm.value, a.kRstd) // dKProj
	m.ready.mark(w.kNorm)
	be.RMSNormBackward(g.qHeads, w.qNorm.grad, g.qHeads, a.qProjHeads, w.qNorm.value, a.qRstd) // dQProj
	m.ready.mark(w.qNorm)
	m.linearBackward(&w.v, g.norm, g.v, a.ln1, a.lora[w.v.index], false) // dLn1 = dV·W_v
	m.linearBackward(&w.k, g.norm, g.k, a.ln1, a.lora[w.k.index], true)  // dLn1 += dKProj·W_k
	m.linearBackward(&w.q, g.norm, g.q, a.ln1, a.lora[w.q.index], true)  // dLn1 += dQProj·W_q
	be.RMSNormBackward(g.norm, w.inputNorm.grad, g.norm, x, w.inputNorm.value, a.ln1Rstd)
	m.ready.mark(w.inputNorm)
	be.Add(g.residual, g.residual, g.norm) // dx
}
