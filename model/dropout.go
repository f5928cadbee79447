package model

import (
	"fmt"
	"math"

	"github.com/ringtune/ringtune/kernels"
)

// LoRA dropout, as PEFT's lora.Linear applies it in training:
//
//	y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ
//
// dropout(x) zeroes each element of x with probability p and multiplies the
// kept ones by 1/(1−p). Each adapted projection draws its own mask in each
// ForwardBackward call. Loss, Logits and the Decoder apply no dropout.
//
// A counter-based generator computes the mask as a function of
// (Options.DropoutSeed, the dropout step, layer, projection, element index).
// Backward therefore recomputes the mask instead of storing one per
// projection, and the recomputed forward pass of a checkpointed layer draws
// the same mask.
//
// The backends have no elementwise product, so the mask is applied as a
// gather: a table holds 0 at row 0 and x/(1−p) at rows 1…n, and
// EmbeddingForward with ids[i] = i+1 for a kept element and 0 for a dropped
// one writes dropout(x). The mask is symmetric, so the same gather applied to
// the gradient of dropout(x) gives the contribution to dx.
//
// TODO: the mask is drawn on the host and copied to the backend's ids
// tensor, twice per adapted projection and step (forward and backward). A
// device kernel for dropout would avoid the copy on a GPU backend.

// dropoutGamma is SplitMix64's increment, the golden ratio times 2⁶⁴.
const dropoutGamma = 0x9E3779B97F4A7C15

// loraDropout holds the buffers of LoRA dropout. They are allocated once for
// MaxBatch × MaxSeq tokens and the widest adapted projection input.
type loraDropout struct {
	// keepScale is 1/(1−p), rounded to float32.
	keepScale float32
	// dropBelow is p·2⁶⁴: an element whose 64 random bits are below it is
	// dropped.
	dropBelow uint64
	seed      uint64

	// widths[p] is the input width of projection p, 0 when p has no adapter.
	widths [numProjections]int
	// views[p] are the views of projection p for the bound batch shape.
	views [numProjections]dropoutViews

	batchSize, seqLen int
	hostIDs           []int32        // host copy of the gather ids
	ids, table, out   kernels.Buffer // I32 ids; F32 table with table[0] = 0; F32 gather output
}

// dropoutViews are the views of one projection's dropout for the bound
// batch shape, where n = B·T·in.
type dropoutViews struct {
	hostIDs []int32        // (n) host ids, a prefix of loraDropout.hostIDs
	ids     kernels.Tensor // (n) I32: i+1 for a kept element i, 0 for a dropped one
	table   kernels.Tensor // (n+1, 1) gather table; row 0 is always 0
	values  kernels.Tensor // (B, T, in) rows 1…n of table: x/(1−p), or the gradient of dropout(x)
	rows    kernels.Tensor // (n, 1) gather output
	dropped kernels.Tensor // (B, T, in) the same memory as rows: dropout(x), or its masked gradient
}

// newLoRADropout allocates the dropout buffers of m, which must be in
// ModeLoRA with a positive Options.LoRA.Dropout.
func newLoRADropout(m *Model) (*loraDropout, error) {
	p := m.opts.LoRA.Dropout
	d := &loraDropout{
		keepScale: float32(1 / (1 - p)),
		dropBelow: dropoutThreshold(p),
		seed:      m.opts.DropoutSeed,
	}
	maxWidth := 0
	for _, proj := range m.layers[0].projections() {
		if proj.loraA != nil {
			d.widths[proj.index] = proj.weight.shape[1]
			maxWidth = max(maxWidth, d.widths[proj.index])
		}
	}

	// The gather ids run up to maxLen, so they must fit int32.
	maxLen := m.opts.MaxBatch * m.opts.MaxSeq * maxWidth
	if maxLen+1 > math.MaxInt32 {
		return nil, fmt.Errorf("LoRA dropout needs %d × %d tokens × %d inputs + 1 gather ids, more than the int32 maximum %d: lower MaxBatch or MaxSeq",
			m.opts.MaxBatch, m.opts.MaxSeq, maxWidth, math.MaxInt32)
	}

	var err error
	d.hostIDs = make([]int32, maxLen)
	if d.ids, err = m.alloc(kernels.I32, maxLen); err != nil {
		return nil, err
	}
	if d.table, err = m.alloc(kernels.F32, maxLen+1); err != nil {
		return nil, err
	}
	if d.out, err = m.alloc(kernels.F32, maxLen); err != nil {
		return nil, err
	}
	return d, nil
}

// bind points the views at the front of the buffers for a batch of
// batchSize × seqLen tokens, which activations.bind has already checked
// against MaxBatch and MaxSeq. It allocates nothing when the shape is
// already bound.
func (d *loraDropout) bind(batchSize, seqLen int) error {
	if batchSize == d.batchSize && seqLen == d.seqLen {
		return nil
	}
	for p, width := range d.widths {
		if width == 0 {
			continue
		}
		n := batchSize * seqLen * width
		v := &d.views[p]
		v.hostIDs = d.hostIDs[:n]
		var err error
		if v.ids, err = kernels.NewTensor(d.ids, 0, n); err != nil {
			return err
		}
		if v.table, err = kernels.NewTensor(d.table, 0, n+1, 1); err != nil {
			return err
		}
		if v.values, err = kernels.NewTensor(d.table, 1, batchSize, seqLen, width); err != nil {
			return err
		}
		if v.rows, err = kernels.NewTensor(d.out, 0, n, 1); err != nil {
			return err
		}
		if v.dropped, err = kernels.NewTensor(d.out, 0, batchSize, seqLen, width); err != nil {
			return err
		}
	}
	d.batchSize, d.seqLen = batchSize, seqLen
	return nil
}

// forward computes dropout(x) for projection proj at the given dropout step
// and returns it, a view that the next call overwrites. It draws the mask
// again, so a second call with the same arguments returns the same values.
// x: (B, T, in) → (B, T, in).
func (d *loraDropout) forward(be kernels.Backend, proj *projection, step uint64, x kernels.Tensor) kernels.Tensor {
	v := &d.views[proj.index]
	d.loadMask(be, v, step, proj.layer, proj.index)
	be.Copy(v.values, x)
	be.Scale(v.values, d.keepScale)
	be.EmbeddingForward(v.rows, v.table, v.ids) // dropped = mask ⊙ x/(1−p)
	return v.dropped
}

// backward adds the gradient that flows through dropout(x)·Aᵀ to dx:
// dx += mask ⊙ (dHidden·A)/(1−p). It uses the mask of the last forward call
// for proj, which must be the most recent forward call on d.
// dx: (B, T, in); dHidden: (B, T, r); a: (r, in).
func (d *loraDropout) backward(be kernels.Backend, proj *projection, dx, dHidden, a kernels.Tensor) {
	v := &d.views[proj.index]
	be.Matmul(v.values, dHidden, a, false, false, 1, 0) // dDropped = dHidden·A
	be.EmbeddingForward(v.rows, v.table, v.ids)         // mask ⊙ dDropped
	be.Scale(v.dropped, d.keepScale)
	be.Add(dx, dx, v.dropped)
}

// loadMask draws the mask of (step, layer, projection) into the ids of v.
func (d *loraDropout) loadMask(be kernels.Backend, v *dropoutViews, step uint64, layer, projIndex int) {
	fillDropoutIDs(v.hostIDs, dropoutKey(d.seed, step, layer, projIndex), d.dropBelow)
	if err := be.CopyFromHostI32(v.ids, v.hostIDs); err != nil {
		// bind sized v.ids for v.hostIDs, so this is a bug.
		panic(fmt.Sprintf("model: copying %d dropout ids to %s: %v", len(v.hostIDs), v.ids, err))
	}
}

// dropoutThreshold returns p·2⁶⁴, the bound below which 64 uniform random
// bits drop an element with probability p. p is in [0, 1), so p·2⁶⁴ ≤
// 2⁶⁴ − 2¹¹ is exact in float64 and fits uint64.
func dropoutThreshold(p float64) uint64 {
	return uint64(p * (1 << 64))
}

// fillDropoutIDs sets ids[i] to 0 when element i is dropped, that is when its
// 64 random bits are below dropBelow, and to i+1 otherwise.
func fillDropoutIDs(ids []int32, key, dropBelow uint64) {
	for i := range ids {
		ids[i] = int32(i + 1)
		if mix64(key+uint64(i+1)*dropoutGamma) < dropBelow {
			ids[i] = 0
		}
	}
}

// dropoutKey returns the state of the SplitMix64 stream of one projection's
// mask: element i of the mask takes the 64 bits mix64(key + (i+1)·gamma),
// which is output i of SplitMix64 started at key.
func dropoutKey(seed, step uint64, layer, projIndex int) uint64 {
	key := mix64(seed ^ dropoutGamma)
	key = mix64(key ^ step)
	return mix64(key ^ uint64(layer)<<8 ^ uint64(projIndex))
}

// mix64 is the output function of SplitMix64 (Steele, Lea and Flood,
// "Fast splittable pseudorandom number generators", OOPSLA 2014), a bijection
// of 64-bit words with good avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}
