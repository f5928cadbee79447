package model

import (
	"fmt"

	"github.com/ringtune/ringtune/kernels"
)

// layerActs holds the activations of one decoder layer that its backward pass
// reads. Shapes are those of the bound batch.
type layerActs struct {
	ln1        kernels.Tensor // (B, T, C) input_layernorm output
	ln1Rstd    kernels.Tensor // (B, T)
	qProj      kernels.Tensor // (B, T, NH·HS) q_proj output, before q_norm
	qProjHeads kernels.Tensor // (B, T, NH, HS) view of qProj
	qRstd      kernels.Tensor // (B, T, NH) q_norm's rstd
	q          kernels.Tensor // (B, T, NH, HS) after q_norm and RoPE
	kProj      kernels.Tensor // (B, T, NKV·HS)
	kProjHeads kernels.Tensor // (B, T, NKV, HS)
	kRstd      kernels.Tensor // (B, T, NKV)
	k          kernels.Tensor // (B, T, NKV, HS) after k_norm and RoPE
	v          kernels.Tensor // (B, T, NKV·HS) v_proj output
	vHeads     kernels.Tensor // (B, T, NKV, HS) view of v
	attn       kernels.Tensor // (B, T, NH·HS) attention output, o_proj input
	attnHeads  kernels.Tensor // (B, T, NH, HS) view of attn
	lse        kernels.Tensor // (B, NH, T) log-sum-exp of the attention scores
	h          kernels.Tensor // (B, T, C) residual stream after the attention block
	ln2        kernels.Tensor // (B, T, C) post_attention_layernorm output
	ln2Rstd    kernels.Tensor // (B, T)
	gate       kernels.Tensor // (B, T, I) gate_proj output
	up         kernels.Tensor // (B, T, I) up_proj output
	act        kernels.Tensor // (B, T, I) silu(gate)·up, down_proj input
	// lora[p] is (B, T, r), A·x of projection p, or absent when p has no adapter.
	lora [numProjections]kernels.Tensor
}

// gradScratch holds the activation gradients of the backward pass. One set
// serves every layer, because each op overwrites them.
type gradScratch struct {
	residual  kernels.Tensor // (B, T, C) gradient of the residual stream
	norm      kernels.Tensor // (B, T, C) gradient of a norm's output, then of its input
	attn      kernels.Tensor // (B, T, NH·HS) gradient of the attention output
	attnHeads kernels.Tensor // (B, T, NH, HS)
	q         kernels.Tensor // (B, T, NH·HS) gradient of q, then of q_proj's output
	qHeads    kernels.Tensor // (B, T, NH, HS)
	k         kernels.Tensor // (B, T, NKV·HS)
	kHeads    kernels.Tensor // (B, T, NKV, HS)
	v         kernels.Tensor // (B, T, NKV·HS)
	vHeads    kernels.Tensor // (B, T, NKV, HS)
	act       kernels.Tensor // (B, T, I) gradient of the SwiGLU output, then of gate
	up        kernels.Tensor // (B, T, I)
	lora      kernels.Tensor // (B, T, r) gradient of A·x, absent in ModeFull
}

// activations holds every per-token buffer of a step. They are allocated once
// for MaxBatch × MaxSeq tokens and bound to the shape of each batch.
type activations struct {
	maxBatch, maxSeq int
	// batchSize and seqLen are the bound shape, 0 before the first batch.
	batchSize, seqLen int

	ids       kernels.Tensor // (B, T) I32 input token ids
	targets   kernels.Tensor // (B, T) I32 next-token targets or IgnoreIndex
	positions kernels.Tensor // (B, T) I32 RoPE positions
	segments  kernels.Tensor // (B, T) I32 first key each query may attend to
	// segmentHost is the host copy of segments, MaxBatch·MaxSeq long.
	segmentHost []int32

	// residual[l] is (B, T, C), the input of layer l, and residual[L] is the
	// output of the last layer. Each is kept even with checkpointing.
	residual []kernels.Tensor
	// layers has one entry per decoder layer, or a single entry that every
	// layer shares when checkpointing.
	layers   []layerActs
	normed   kernels.Tensor // (B, T, C) final norm output
	normRstd kernels.Tensor // (B, T)
	grads    gradScratch

	slots  []activationSlot
	floats kernels.Buffer
	ints   kernels.Buffer
}

// activationSlot is one per-token buffer of the activation table, of width
// elements per token.
type activationSlot struct {
	// tensor, when set, receives the view (B, T, width), or (B, T) when width
	// is 1.
	tensor *kernels.Tensor
	dtype  kernels.DType
	width  int
	// heads, when set, receives the view (B, T, numHeads, width/numHeads) of
	// the same memory.
	heads    *kernels.Tensor
	numHeads int
	// headMajor views the slot as (B, numHeads, T) instead, for lse.
	headMajor bool
	offset    int // in elements, from the start of the buffer of dtype
}

// layer returns the activations of decoder layer l.
func (a *activations) layer(l int) *layerActs {
	if len(a.layers) == 1 {
		return &a.layers[0]
	}
	return &a.layers[l]
}

// table lists every activation slot. It is the one place that sizes the
// activation memory.
func (a *activations) table(m *Model) []activationSlot {
	cfg := m.cfg
	C, I, HS := cfg.HiddenSize, cfg.IntermediateSize, cfg.HeadDim
	NH, NKV := cfg.NumHeads, cfg.NumKVHeads
	f32 := func(t *kernels.Tensor, width int) activationSlot {
		return activationSlot{tensor: t, dtype: kernels.F32, width: width}
	}
	withHeads := func(t, heads *kernels.Tensor, numHeads int) activationSlot {
		return activationSlot{tensor: t, dtype: kernels.F32, width: numHeads * HS, heads: heads, numHeads: numHeads}
	}
	headsOnly := func(heads *kernels.Tensor, numHeads int) activationSlot {
		return activationSlot{dtype: kernels.F32, width: numHeads * HS, heads: heads, numHeads: numHeads}
	}
	i32 := func(t *kernels.Tensor) activationSlot {
		return activationSlot{tensor: t, dtype: kernels.I32, width: 1}
	}

	slots := []activationSlot{i32(&a.ids), i32(&a.targets), i32(&a.positions), i32(&a.segments)}
	for l := range a.residual {
		slots = append(slots, f32(&a.residual[l], C))
	}
	for l := range a.layers {
		la := &a.layers[l]
		slots = append(slots,
			f32(&la.ln1, C), f32(&la.ln1Rstd, 1),
			withHeads(&la.qProj, &la.qProjHeads, NH), f32(&la.qRstd, NH),
			headsOnly(&la.q, NH),
			withHeads(&la.kProj, &la.kProjHeads, NKV), f32(&la.kRstd, NKV),
			headsOnly(&la.k, NKV),
			withHeads(&la.v, &la.vHeads, NKV),
			withHeads(&la.attn, &la.attnHeads, NH),
			activationSlot{tensor: &la.lse, dtype: kernels.F32, width: NH, numHeads: NH, headMajor: true},
			f32(&la.h, C), f32(&la.ln2, C), f32(&la.ln2Rstd, 1),
			f32(&la.gate, I), f32(&la.up, I), f32(&la.act, I),
		)
		for p, adapted := range m.adaptedProjections() {
			if adapted {
				slots = append(slots, f32(&la.lora[p], m.opts.LoRA.Rank))
			}
		}
	}
	g := &a.grads
	slots = append(slots,
		f32(&a.normed, C), f32(&a.normRstd, 1),
		f32(&g.residual, C), f32(&g.norm, C),
		withHeads(&g.attn, &g.attnHeads, NH), withHeads(&g.q, &g.qHeads, NH),
		withHeads(&g.k, &g.kHeads, NKV), withHeads(&g.v, &g.vHeads, NKV),
		f32(&g.act, I), f32(&g.up, I),
	)
	if m.opts.Mode == ModeLoRA {
		slots = append(slots, f32(&g.lora, m.opts.LoRA.Rank))
	}
	return slots
}

// allocate sizes the activation table for MaxBatch × MaxSeq tokens and
// allocates one F32 and one I32 buffer for it.
func (a *activations) allocate(m *Model) error {
	a.maxBatch, a.maxSeq = m.opts.MaxBatch, m.opts.MaxSeq
	maxTokens := a.maxBatch * a.maxSeq
	a.segmentHost = make([]int32, maxTokens)
	a.residual = make([]kernels.Tensor, m.cfg.NumLayers+1)
	numLayerSlots := m.cfg.NumLayers
	if m.opts.Checkpointing {
		numLayerSlots = 1
	}
	a.layers = make([]layerActs, numLayerSlots)
	a.slots = a.table(m)

	var floats, ints int
	for i := range a.slots {
		s := &a.slots[i]
		size := maxTokens * s.width
		if s.dtype == kernels.I32 {
			s.offset, ints = ints, ints+size
		} else {
			s.offset, floats = floats, floats+size
		}
	}
	var err error
	if a.floats, err = m.alloc(kernels.F32, floats); err != nil {
		return err
	}
	if a.ints, err = m.alloc(kernels.I32, ints); err != nil {
		return err
	}
	return a.bind(a.maxBatch, a.maxSeq)
}

// bind points every activation tensor at a view of shape (batchSize, seqLen,
// ...). It allocates nothing when the shape is already bound.
func (a *activations) bind(batchSize, seqLen int) error {
	if batchSize == a.batchSize && seqLen == a.seqLen {
		return nil
	}
	if batchSize > a.maxBatch || seqLen > a.maxSeq {
		return fmt.Errorf("batch of %d rows × %d tokens does not fit the activations, which are allocated for %d rows × %d tokens (Options.MaxBatch, Options.MaxSeq)",
			batchSize, seqLen, a.maxBatch, a.maxSeq)
	}
	for i := range a.slots {
		if err := a.slots[i].bind(a.floats, a.ints, batchSize, seqLen); err != nil {
			return err
		}
	}
	a.batchSize, a.seqLen = batchSize, seqLen
	return nil
}

func (s *activationSlot) bind(floats, ints kernels.Buffer, batchSize, seqLen int) error {
	buf := floats
	if s.dtype == kernels.I32 {
		buf = ints
	}
	var err error
	switch {
	case s.tensor == nil:
	case s.headMajor:
		*s.tensor, err = kernels.NewTensor(buf, s.offset, batchSize, s.numHeads, seqLen)
	case s.width == 1:
		*s.tensor, err = kernels.NewTensor(buf, s.offset, batchSize, seqLen)
	default:
		*s.tensor, err = kernels.NewTensor(buf, s.offset, batchSize, seqLen, s.width)
	}
	if err != nil || s.heads == nil {
		return err
	}
	*s.heads, err = kernels.NewTensor(buf, s.offset, batchSize, seqLen, s.numHeads, s.width/s.numHeads)
	return err
}
