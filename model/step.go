package model

import (
	"errors"
	"fmt"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
)

// ForwardBackward runs the forward and backward passes on batch and adds the
// gradients to the trainable tensors' gradients, which ZeroGrad clears. It
// returns the summed cross-entropy over the batch's targets and their number.
//
// gradScale multiplies the gradient of the summed loss. For the gradient of
// the mean loss over a global batch, pass 1 / (target tokens of all
// micro-batches on all ranks), so that accumulating micro-batches and summing
// over ranks gives exactly that mean.
//
// onGradReady, when not nil, is called with the index in Trainable of each
// tensor whose gradient is final for this call, in decreasing index order,
// each index once, as early as that order allows. A trainer can start
// reducing the tail of FlatGrads while backward continues on the front. The
// callback must not call methods of the model.
//
// With a positive Options.LoRA.Dropout, each adapted projection applies
// dropout to its adapter's input with masks keyed by Options.DropoutSeed and
// DropoutStep, and each call that runs the passes adds 1 to DropoutStep.
//
// The error reports an invalid batch, before any computation. An invalid
// kernel argument panics, as in package kernels.
func (m *Model) ForwardBackward(batch *data.Batch, gradScale float32, onGradReady func(paramIndex int)) (lossSum float64, targetCount int, err error) {
	if err := m.loadBatch(batch); err != nil {
		return 0, 0, err
	}
	m.training = true
	defer func() { m.training = false }()
	m.forward()
	lossSum, targetCount = m.headForwardBackward(gradScale)
	m.backward(onGradReady)
	m.dropoutStep++
	return lossSum, targetCount, nil
}

// Loss runs the forward pass only, without dropout, and returns the summed
// cross-entropy over the batch's targets and their number. Gradients and
// DropoutStep are left unchanged.
func (m *Model) Loss(batch *data.Batch) (lossSum float64, targetCount int, err error) {
	if err := m.loadBatch(batch); err != nil {
		return 0, 0, err
	}
	m.forward()
	m.finalNormForward()
	lossSum, targetCount = m.backend.LinearCrossEntropy(kernels.Tensor{}, kernels.Tensor{}, m.acts.normed, m.head.value, m.acts.targets, 1)
	return lossSum, targetCount, nil
}

// Logits runs the forward pass, without dropout, and returns the logits of
// one row of the batch, (T, V) in row-major order. It allocates a (MaxSeq, V)
// buffer on its first call, so it suits evaluation and tests, not the
// training loop.
func (m *Model) Logits(batch *data.Batch, row int) ([]float32, error) {
	if err := m.loadBatch(batch); err != nil {
		return nil, err
	}
	if row < 0 || row >= batch.Size {
		return nil, fmt.Errorf("row %d is out of range for a batch of %d rows", row, batch.Size)
	}
	if m.logits.IsAbsent() {
		buf, err := m.alloc(kernels.F32, m.opts.MaxSeq*m.cfg.VocabSize)
		if err != nil {
			return nil, err
		}
		if m.logits, err = kernels.NewTensor(buf, 0, m.opts.MaxSeq, m.cfg.VocabSize); err != nil {
			return nil, err
		}
	}
	m.forward()
	m.finalNormForward()
	hidden, err := m.acts.normed.Rows(row, row+1) // (1, T, C)
	if err != nil {
		return nil, err
	}
	logits, err := m.logits.Rows(0, batch.SeqLen) // (T, V)
	if err != nil {
		return nil, err
	}
	m.backend.Matmul(logits, hidden, m.head.value, false, true, 1, 0)
	out := make([]float32, logits.Len())
	return out, m.backend.CopyToHostF32(out, logits)
}

// forward runs the embedding and every decoder layer, leaving the last
// layer's output in residual[L].
func (m *Model) forward() {
	a := &m.acts
	m.backend.EmbeddingForward(a.residual[0], m.embed.value, a.ids)
	for l := range m.layers {
		m.layerForward(&m.layers[l], a.layer(l), a.residual[l], a.residual[l+1])
	}
}

// finalNormForward applies model.norm to the last layer's output.
// residual[L]: (B, T, C) → normed: (B, T, C); normRstd: (B, T).
func (m *Model) finalNormForward() {
	a := &m.acts
	m.backend.RMSNormForward(a.normed, a.normRstd, a.residual[m.cfg.NumLayers], m.finalNorm.value, m.eps)
}

// headForwardBackward runs the final norm and the fused head and loss, which
// also produces the gradient of the normed hidden states, and backward through
// the final norm into g.residual.
func (m *Model) headForwardBackward(gradScale float32) (lossSum float64, targetCount int) {
	be, a, g := m.backend, &m.acts, &m.acts.grads
	m.finalNormForward()
	// normed: (B, T, C); head: (V, C); targets: (B, T) → g.norm = dNormed: (B, T, C).
	// A trainable head accumulates gradScale·dLogitsᵀ·normed into its gradient.
	lossSum, targetCount = be.LinearCrossEntropy(g.norm, m.head.grad, a.normed, m.head.value, a.targets, gradScale)
	be.RMSNormBackward(g.residual, m.finalNorm.grad, g.norm, a.residual[m.cfg.NumLayers], m.finalNorm.value, a.normRstd)
	return lossSum, targetCount
}

// backward marks the head's gradients ready, then runs the layers in reverse
// and the embedding's backward pass. g.residual holds the gradient of the
// last layer's output on entry.
func (m *Model) backward(onGradReady func(int)) {
	a := &m.acts
	m.ready.start(onGradReady)
	if m.head != m.embed {
		m.ready.mark(m.head) // an untied lm_head has no other use
	}
	m.ready.mark(m.finalNorm)
	for l := len(m.layers) - 1; l >= 0; l-- {
		w, la := &m.layers[l], a.layer(l)
		if m.opts.Checkpointing {
			m.layerForward(w, la, a.residual[l], kernels.Tensor{})
		}
		m.layerBackward(w, la, a.residual[l])
	}
	if !m.embed.frozen {
		m.backend.EmbeddingBackward(m.embed.grad, a.grads.residual, a.ids)
		m.ready.mark(m.embed)
	}
	m.ready.finish()
}

// loadBatch checks batch against the model and copies its inputs to the
// backend.
func (m *Model) loadBatch(batch *data.Batch) error {
	if batch == nil {
		return errors.New("batch is nil")
	}
	batchSize, seqLen := batch.Size, batch.SeqLen
	if batchSize <= 0 || seqLen <= 0 {
		return fmt.Errorf("batch shape %d rows × %d tokens is empty", batchSize, seqLen)
	}
	if err := m.acts.bind(batchSize, seqLen); err != nil {
		return err
	}
	if m.dropout != nil {
		if err := m.dropout.bind(batchSize, seqLen); err != nil {
			return err
		}
	}
	n := batchSize * seqLen
	switch {
	case len(batch.IDs) != n || len(batch.Targets) != n || len(batch.Positions) != n:
		return fmt.Errorf("batch of %d rows × %d tokens has %d ids, %d targets and %d positions, want %d each",
			batchSize, seqLen, len(batch.IDs), len(batch.Targets), len(batch.Positions), n)
	case len(batch.Starts) != batchSize:
		return fmt.Errorf("batch of %d rows has example starts for %d rows", batchSize, len(batch.Starts))
	case batch.Lengths != nil && len(batch.Lengths) != batchSize:
		return fmt.Errorf("batch of %d rows has lengths for %d rows", batchSize, len(batch.Lengths))
	}
	vocab := int32(m.cfg.VocabSize)
	for i := range n {
		if id := batch.IDs[i]; id < 0 || id >= vocab {
			return fmt.Errorf("batch row %d, token %d: id %d is outside the vocabulary [0, %d)", i/seqLen, i%seqLen, id, vocab)
		}
		if target := batch.Targets[i]; (target < 0 || target >= vocab) && target != kernels.IgnoreIndex {
			return fmt.Errorf("batch row %d, token %d: target %d is neither in [0, %d) nor %d (ignored)", i/seqLen, i%seqLen, target, vocab, kernels.IgnoreIndex)
		}
		if batch.Positions[i] < 0 {
			return fmt.Errorf("batch row %d, token %d: position %d is negative", i/seqLen, i%seqLen, batch.Positions[i])
		}
	}
	segments := m.acts.segmentHost[:n]
	if err := kernels.SegmentStarts(segments, batch.Starts, batch.Lengths, seqLen); err != nil {
		return fmt.Errorf("invalid batch starts or lengths: %w", err)
	}

	be, a := m.backend, &m.acts
	if err := be.CopyFromHostI32(a.ids, batch.IDs); err != nil {
		return err
	}
	if err := be.CopyFromHostI32(a.targets, batch.Targets); err != nil {
		return err
	}
	if err := be.CopyFromHostI32(a.positions, batch.Positions); err != nil {
		return err
	}
	return be.CopyFromHostI32(a.segments, segments)
}

// gradReadiness reports final gradients to the caller of ForwardBackward in
// decreasing Trainable order. Backward marks a tensor when its gradient is
// final, and every marked tensor above the highest unmarked one is reported.
// o_proj, for example, is final before q_norm and k_norm, which come after it
// in the table, so it is reported right after them.
type gradReadiness struct {
	done     []bool
	next     int // highest index not yet reported
	callback func(int)
}

func (r *gradReadiness) init(n int) {
	r.done = make([]bool, n)
	r.next = -1
}

func (r *gradReadiness) start(callback func(int)) {
	clear(r.done)
	r.next = len(r.done) - 1
	r.callback = callback
}

// mark records that e's gradient is final. Frozen tensors are ignored.
func (r *gradReadiness) mark(e *tensorEntry) {
	if e.trainIndex < 0 {
		return
	}
	r.done[e.trainIndex] = true
	for r.next >= 0 && r.done[r.next] {
		if r.callback != nil {
			r.callback(r.next)
		}
		r.next--
	}
}

// finish checks that backward marked every trainable tensor.
func (r *gradReadiness) finish() {
	if r.next >= 0 {
		panic(fmt.Sprintf("model: backward finished without marking the gradient of trainable tensor %d as ready", r.next))
	}
	r.callback = nil
}
