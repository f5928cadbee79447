package model

import (
	"errors"
	"fmt"

	"github.com/ringtune/ringtune/kernels"
)

// Inference with a key/value cache. A Decoder runs the forward pass of a
// Model over new tokens of one sequence. Each layer writes the new tokens'
// keys (after k_norm and RoPE) and values into its KVCache, and
// Backend.AttentionDecode lets their queries attend to every cached position
// up to their own. A prompt is one such call over many tokens, and a
// decoding step one over a single token, so a step costs one token's
// projections, not the whole sequence's.
//
// The decoder computes the layer of layerForward (layer.go) with the same
// kernels in the same order, LoRA adapters included, except that attention
// reads the cache. It has its own activation buffers, so it leaves the
// model's training activations untouched.

// KVCache holds the keys and values of every decoder layer for one sequence,
// allocated once for MaxLen positions. It takes 2·L·MaxLen·NKV·HS float32
// values: 229 KB per position for Qwen3-0.6B.
type KVCache struct {
	backend kernels.Backend
	buffer  kernels.Buffer
	maxLen  int
	// length is the number of positions filled, [0, length) of every layer.
	length     int
	numLayers  int
	numKVHeads int
	headDim    int
}

// NewKVCache allocates a cache for maxLen positions of a model of shape cfg on
// backend. Close releases it.
func NewKVCache(backend kernels.Backend, cfg Config, maxLen int) (*KVCache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if maxLen <= 0 {
		return nil, fmt.Errorf("KV cache length %d must be positive", maxLen)
	}
	c := &KVCache{backend: backend, maxLen: maxLen, numLayers: cfg.NumLayers, numKVHeads: cfg.NumKVHeads, headDim: cfg.HeadDim}
	n := 2 * c.numLayers * maxLen * c.rowLen()
	buf, err := backend.Alloc(kernels.F32, n)
	if err != nil {
		return nil, fmt.Errorf("allocating a KV cache of %d positions (%d F32 elements) on %s: %w", maxLen, n, backend.Name(), err)
	}
	c.buffer = buf
	return c, nil
}

// Len returns the number of cached positions.
func (c *KVCache) Len() int { return c.length }

// MaxLen returns the number of positions the cache holds.
func (c *KVCache) MaxLen() int { return c.maxLen }

// Reset empties the cache for a new sequence, keeping its memory.
func (c *KVCache) Reset() { c.length = 0 }

// Truncate drops the positions from length on, so that a sequence can
// continue from a shorter prefix of itself.
func (c *KVCache) Truncate(length int) error {
	if length < 0 || length > c.length {
		return fmt.Errorf("cannot truncate a KV cache of %d positions to %d: want 0 ≤ length ≤ %d", c.length, length, c.length)
	}
	c.length = length
	return nil
}

// Close releases the cache's memory. The cache is invalid afterwards.
func (c *KVCache) Close() {
	if c.buffer != nil {
		c.backend.Free(c.buffer)
		c.buffer = nil
	}
}

// rowLen is NKV·HS, the values of one position of one layer.
func (c *KVCache) rowLen() int { return c.numKVHeads * c.headDim }

// layerOffset returns the offset of the keys (values false) or values of
// layer l in the buffer. Each is (1, MaxLen, NKV, HS).
func (c *KVCache) layerOffset(l int, values bool) int {
	i := 2 * l
	if values {
		i++
	}
	return i * c.maxLen * c.rowLen()
}

// keys returns the whole key cache of layer l, (1, MaxLen, NKV, HS).
func (c *KVCache) keys(l int) kernels.Tensor {
	return mustView(c.buffer, c.layerOffset(l, false), 1, c.maxLen, c.numKVHeads, c.headDim)
}

// values returns the whole value cache of layer l, (1, MaxLen, NKV, HS).
func (c *KVCache) values(l int) kernels.Tensor {
	return mustView(c.buffer, c.layerOffset(l, true), 1, c.maxLen, c.numKVHeads, c.headDim)
}

// keySpan returns positions [start, start+count) of layer l's keys,
// (1, count, NKV, HS).
func (c *KVCache) keySpan(l, start, count int) kernels.Tensor {
	return mustView(c.buffer, c.layerOffset(l, false)+start*c.rowLen(), 1, count, c.numKVHeads, c.headDim)
}

// valueSpan returns positions [start, start+count) of layer l's values,
// (1, count, NKV·HS), as v_proj writes them.
func (c *KVCache) valueSpan(l, start, count int) kernels.Tensor {
	return mustView(c.buffer, c.layerOffset(l, true)+start*c.rowLen(), 1, count, c.rowLen())
}

// mustView returns a view that the caller has sized to fit buf.
func mustView(buf kernels.Buffer, offset int, shape ...int) kernels.Tensor {
	t, err := kernels.NewTensor(buf, offset, shape...)
	if err != nil {
		panic(fmt.Sprintf("model: inference buffer view: %v", err))
	}
	return t
}

// DecoderOptions configures a Decoder.
type DecoderOptions struct {
	// MaxLen is the number of positions of the KV cache: the longest
	// sequence, prompt and generated tokens together.
	MaxLen int
	// MaxChunk is the largest number of tokens one forward pass processes.
	// Longer inputs run in chunks of it. It sizes the activation buffers at
	// 4·(3·C + 2·NH·HS + NKV·HS + 2·I + r) bytes per token, 57 KB for
	// Qwen3-0.6B. 0 means min(MaxLen, 256).
	MaxChunk int
}

// defaultMaxChunk is DecoderOptions.MaxChunk's default: 15 MB of
// activations for Qwen3-0.6B. Larger chunks would save little, because a
// product of 256 rows already spreads the packing of each weight over 256
// rows.
const defaultMaxChunk = 256

// Decoder runs inference of a Model over one sequence with a KV cache. It
// shares the model's backend and weights, so neither may be used by another
// goroutine while it runs, and weights changed in between (SetTensor,
// LoadBase, a training step) apply from the next call on.
type Decoder struct {
	m        *Model
	cache    *KVCache
	maxChunk int

	floats, ints kernels.Buffer // activations for MaxChunk tokens
	// widths and offsets give each F32 activation's values per token and
	// its offset in floats, in the order of decodeWidths.
	widths, offsets []int
	positions       []int32 // host positions of a chunk, MaxChunk long

	lastLogits     kernels.Tensor // (1, V)
	lastLogitsHost []float32      // V, returned by Forward
	// allLogits is (MaxChunk, V), allocated by the first Forward that
	// requests every position's logits.
	allLogits kernels.Tensor
	buffers   []kernels.Buffer // freed by Close, the cache's excepted
}

// decodeActs are the activations of one chunk of T tokens. Shapes are those
// of the chunk, (1, T, ...).
type decodeActs struct {
	ids, positions kernels.Tensor // (1, T) I32
	x              kernels.Tensor // (1, T, C) residual stream, the layer input and output
	h              kernels.Tensor // (1, T, C) residual stream after the attention block
	norm           kernels.Tensor // (1, T, C) output of an RMSNorm
	q              kernels.Tensor // (1, T, NH·HS) q_proj output, then q after q_norm and RoPE
	qHeads         kernels.Tensor // (1, T, NH, HS) view of q
	kProj          kernels.Tensor // (1, T, NKV·HS) k_proj output, before k_norm
	kProjHeads     kernels.Tensor // (1, T, NKV, HS) view of kProj
	attn           kernels.Tensor // (1, T, NH·HS) attention output, o_proj input
	attnHeads      kernels.Tensor // (1, T, NH, HS) view of attn
	gate, up       kernels.Tensor // (1, T, I); gate then holds silu(gate)·up
	lora           kernels.Tensor // (1, T, r) adapter hidden x·Aᵀ, absent in ModeFull
}

// decodeWidths returns the per-token width of each F32 activation, in the
// order that bind lays them out: x, h, norm, q, kProj, attn, gate, up, lora.
func (m *Model) decodeWidths() []int {
	cfg := m.cfg
	C, I := cfg.HiddenSize, cfg.IntermediateSize
	qWidth, kvWidth := cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	rank := 0
	if m.opts.Mode == ModeLoRA {
		rank = m.opts.LoRA.Rank
	}
	return []int{C, C, C, qWidth, kvWidth, qWidth, I, I, rank}
}

// NewDecoder allocates a KV cache and activations for inference with m.
// Close releases them. The model keeps its own buffers, so a model built
// only for inference can set Options.MaxBatch and MaxSeq to 1.
func NewDecoder(m *Model, opts DecoderOptions) (*Decoder, error) {
	if opts.MaxLen <= 0 {
		return nil, fmt.Errorf("decoder MaxLen %d must be positive: it is the longest sequence, prompt and generated tokens together", opts.MaxLen)
	}
	if opts.MaxChunk < 0 {
		return nil, fmt.Errorf("decoder MaxChunk %d must not be negative (0 selects min(MaxLen, %d))", opts.MaxChunk, defaultMaxChunk)
	}
	maxChunk := opts.MaxChunk
	if maxChunk == 0 {
		maxChunk = defaultMaxChunk
	}
	maxChunk = min(maxChunk, opts.MaxLen)

	cache, err := NewKVCache(m.backend, m.cfg, opts.MaxLen)
	if err != nil {
		return nil, err
	}
	d := &Decoder{m: m, cache: cache, maxChunk: maxChunk, positions: make([]int32, maxChunk)}
	if err := d.allocate(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Decoder) allocate() error {
	d.widths = d.m.decodeWidths()
	d.offsets = make([]int, len(d.widths))
	floats := 0
	for i, width := range d.widths {
		d.offsets[i] = floats
		floats += d.maxChunk * width
	}
	var err error
	if d.floats, err = d.alloc(kernels.F32, floats); err != nil {
		return err
	}
	if d.ints, err = d.alloc(kernels.I32, 2*d.maxChunk); err != nil {
		return err
	}
	vocab := d.m.cfg.VocabSize
	logits, err := d.alloc(kernels.F32, vocab)
	if err != nil {
		return err
	}
	d.lastLogits = mustView(logits, 0, 1, vocab)
	d.lastLogitsHost = make([]float32, vocab)
	return nil
}

func (d *Decoder) alloc(dtype kernels.DType, n int) (kernels.Buffer, error) {
	be := d.m.backend
	buf, err := be.Alloc(dtype, n)
	if err != nil {
		return nil, fmt.Errorf("allocating %d %s elements for the decoder on %s: %w", n, dtype, be.Name(), err)
	}
	d.buffers = append(d.buffers, buf)
	return buf, nil
}

// Close releases the cache and the activations. The decoder is invalid
// afterwards, and the model stays usable.
func (d *Decoder) Close() {
	for _, buf := range d.buffers {
		d.m.backend.Free(buf)
	}
	d.buffers = nil
	d.cache.Close()
}

// Cache returns the decoder's KV cache, which Forward appends to.
func (d *Decoder) Cache() *KVCache { return d.cache }

// Model returns the model the decoder runs.
func (d *Decoder) Model() *Model { return d.m }

// bind returns views of the activation buffers for a chunk of T tokens.
func (d *Decoder) bind(T int) decodeActs {
	cfg := d.m.cfg
	NH, NKV, HS := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	view := func(slot int) kernels.Tensor { return mustView(d.floats, d.offsets[slot], 1, T, d.widths[slot]) }
	heads := func(slot, numHeads int) kernels.Tensor {
		return mustView(d.floats, d.offsets[slot], 1, T, numHeads, HS)
	}
	a := decodeActs{
		ids:       mustView(d.ints, 0, 1, T),
		positions: mustView(d.ints, d.maxChunk, 1, T),
		x:         view(0), h: view(1), norm: view(2),
		q: view(3), qHeads: heads(3, NH),
		kProj: view(4), kProjHeads: heads(4, NKV),
		attn: view(5), attnHeads: heads(5, NH),
		gate: view(6), up: view(7),
	}
	if d.widths[8] > 0 {
		a.lora = view(8)
	}
	return a
}

// Forward appends ids to the cached sequence and returns logits. With
// allPositions false they are those of the last token, (V), in a slice that
// the next call overwrites. With allPositions true they are those of every
// token of ids, (len(ids), V) in row-major order, in a new slice. Inputs
// longer than MaxChunk run in chunks.
//
// It fails, changing nothing, when ids is empty, holds an id outside the
// vocabulary or does not fit in the cache.
func (d *Decoder) Forward(ids []int32, allPositions bool) ([]float32, error) {
	if len(ids) == 0 {
		return nil, errors.New("decoder Forward: no token ids")
	}
	if free := d.cache.maxLen - d.cache.length; len(ids) > free {
		return nil, fmt.Errorf("decoder Forward: %d new tokens do not fit the KV cache, which has %d of %d positions filled (DecoderOptions.MaxLen)",
			len(ids), d.cache.length, d.cache.maxLen)
	}
	vocab := d.m.cfg.VocabSize
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			return nil, fmt.Errorf("decoder Forward: token %d has id %d, outside the vocabulary [0, %d)", i, id, vocab)
		}
	}
	if allPositions && d.allLogits.IsAbsent() {
		buf, err := d.alloc(kernels.F32, d.maxChunk*vocab)
		if err != nil {
			return nil, err
		}
		d.allLogits = mustView(buf, 0, d.maxChunk, vocab)
	}

	var out []float32
	if allPositions {
		out = make([]float32, len(ids)*vocab)
	}
	for start := 0; start < len(ids); start += d.maxChunk {
		end := min(len(ids), start+d.maxChunk)
		var logits []float32
		switch {
		case allPositions:
			logits = out[start*vocab : end*vocab]
		case end == len(ids):
			logits = d.lastLogitsHost
		}
		if err := d.forwardChunk(ids[start:end], logits); err != nil {
			return nil, err
		}
	}
	if !allPositions {
		out = d.lastLogitsHost
	}
	return out, nil
}

// forwardChunk runs the model over ids, at most MaxChunk tokens that follow
// the cached positions, and appends their keys and values to the cache.
// logits, when not nil, receives the logits of every token (len(ids)·V
// values) or of the last one (V values).
//
// NOTE: for one token every Matmul is a matrix-vector product, for which the
// CPU Sgemm still packs the whole weight on each call. That packing took
// about 75% of a decoding step of the tiny preset (BenchmarkDecoderStep
// profile, 2 cores), most of it for the (V, C) head.
func (d *Decoder) forwardChunk(ids []int32, logits []float32) error {
	m, be, c := d.m, d.m.backend, d.cache
	T, start := len(ids), c.length
	a := d.bind(T)
	positions := d.positions[:T]
	for i := range positions {
		positions[i] = int32(start + i)
	}
	if err := be.CopyFromHostI32(a.ids, ids); err != nil {
		return err
	}
	if err := be.CopyFromHostI32(a.positions, positions); err != nil {
		return err
	}

	be.EmbeddingForward(a.x, m.embed.value, a.ids)
	for l := range m.layers {
		d.layerForward(l, &a, start)
	}
	c.length = start + T
	if logits == nil {
		return nil
	}
	return d.headForward(&a, logits)
}

// layerForward runs decoder layer l on the chunk at positions [start,
// start+T), in the order of layerForward in layer.go. The keys and values
// go straight into the cache.
func (d *Decoder) layerForward(l int, a *decodeActs, start int) {
	m, be, c := d.m, d.m.backend, d.cache
	w := &m.layers[l]
	eps, theta := m.eps, m.cfg.RopeTheta
	T := a.x.Dim(1)
	keys := c.keySpan(l, start, T) // (1, T, NKV, HS)
	values := c.valueSpan(l, start, T)
	none := kernels.Tensor{}

	// Attention block.
	be.RMSNormForward(a.norm, none, a.x, w.inputNorm.value, eps)
	m.linearForward(&w.q, a.q, a.norm, a.lora)
	m.linearForward(&w.k, a.kProj, a.norm, a.lora)
	m.linearForward(&w.v, values, a.norm, a.lora)
	be.RMSNormForward(a.qHeads, none, a.qHeads, w.qNorm.value, eps) // per head, over HS
	be.RMSNormForward(keys, none, a.kProjHeads, w.kNorm.value, eps)
	be.RoPEForward(a.qHeads, a.qHeads, a.positions, theta)
	be.RoPEForward(keys, keys, a.positions, theta)
	be.AttentionDecode(a.attnHeads, a.qHeads, c.keys(l), c.values(l), start+T)
	m.linearForward(&w.o, a.h, a.attn, a.lora)
	be.Add(a.h, a.h, a.x) // h = x + o_proj(attn)

	// MLP block.
	be.RMSNormForward(a.norm, none, a.h, w.postNorm.value, eps)
	m.linearForward(&w.gate, a.gate, a.norm, a.lora)
	m.linearForward(&w.up, a.up, a.norm, a.lora)
	be.SwiGLUForward(a.gate, a.gate, a.up)
	m.linearForward(&w.down, a.x, a.gate, a.lora)
	be.Add(a.x, a.x, a.h) // x = h + down_proj(act)
}

// headForward applies the final norm and the head to every token of the
// chunk, or to the last one when logits has V values, and copies the logits
// to the host.
func (d *Decoder) headForward(a *decodeActs, logits []float32) error {
	m, be := d.m, d.m.backend
	C, vocab := m.cfg.HiddenSize, m.cfg.VocabSize
	T := a.x.Dim(1)
	rows, out := T, d.lastLogits
	if len(logits) == vocab {
		rows = 1
	} else {
		out = mustView(d.allLogits.Buffer(), 0, T, vocab)
	}
	first := (T - rows) * C
	hidden := mustView(a.x.Buffer(), a.x.Offset()+first, rows, C)
	normed := mustView(a.norm.Buffer(), a.norm.Offset()+first, rows, C)
	be.RMSNormForward(normed, kernels.Tensor{}, hidden, m.finalNorm.value, m.eps)
	be.Matmul(out, normed, m.head.value, false, true, 1, 0)
	return be.CopyToHostF32(logits, out)
}
