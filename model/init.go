package model

import (
	"hash/fnv"
	"math"
	"math/rand/v2"

	"github.com/ringtune/ringtune/kernels"
)

// InitRandom sets every tensor as transformers initializes a new Qwen3 model
// and PEFT a new adapter: projections, the embedding and an untied lm_head
// from normal(0, initializer_range), norm weights to 1, and in LoRA mode the
// adapters as InitAdapters does. Each tensor draws from its own stream, keyed
// by seed and its name, so the result depends on neither the order of the
// tensors nor which adapters exist.
func (m *Model) InitRandom(seed uint64) error {
	std := m.cfg.InitializerRange
	var scratch initScratch
	for _, e := range m.baseEntries() {
		var err error
		if len(e.shape) == 1 {
			err = m.fillTensor(e, &scratch, func(values []float32) {
				for i := range values {
					values[i] = 1
				}
			})
		} else {
			rng := tensorRand(seed, e.name)
			err = m.fillTensor(e, &scratch, func(values []float32) {
				for i := range values {
					values[i] = float32(rng.NormFloat64() * std)
				}
			})
		}
		if err != nil {
			return err
		}
	}
	return m.InitAdapters(seed)
}

// initChunkElements bounds the host memory that initialization uses per tensor: the
// Qwen3-0.6B embedding alone would take 622 MB as one float32 slice.
const initChunkElements = 1 << 20

// initScratch holds the host buffers that fillTensor reuses across tensors.
type initScratch struct {
	values []float32
	bits   []uint16
}

// fillTensor sets e's value in chunks of whole rows, calling fill for each chunk in
// order, so a tensor's values do not depend on the chunk size.
func (m *Model) fillTensor(e *tensorEntry, scratch *initScratch, fill func(values []float32)) error {
	rows := e.shape[0]
	rowLen := e.numElements() / max(rows, 1)
	chunkRows := max(1, initChunkElements/max(rowLen, 1))
	for start := 0; start < rows; start += chunkRows {
		end := min(rows, start+chunkRows)
		n := (end - start) * rowLen
		if cap(scratch.values) < n {
			scratch.values = make([]float32, n)
		}
		values := scratch.values[:n]
		fill(values)

		dst, err := e.value.Rows(start, end)
		if err != nil {
			return err
		}
		if !e.bf16 {
			if err := m.backend.CopyFromHostF32(dst, values); err != nil {
				return err
			}
			continue
		}
		if cap(scratch.bits) < n {
			scratch.bits = make([]uint16, n)
		}
		bits := scratch.bits[:n]
		for i, v := range values {
			bits[i] = kernels.BF16FromFloat32(v)
		}
		if err := m.backend.CopyFromHostBF16(dst, bits); err != nil {
			return err
		}
	}
	return nil
}

// InitAdapters sets the LoRA adapters as PEFT's LoraLayer.reset_lora_parameters
// does with init_lora_weights=True: lora_A from kaiming_uniform_ with
// a = sqrt(5), which is uniform(−1/sqrt(in), 1/sqrt(in)), and lora_B to zero,
// so a new adapter leaves the model's output unchanged. It does nothing in
// ModeFull.
func (m *Model) InitAdapters(seed uint64) error {
	for _, e := range m.adapterEntries() {
		values := make([]float32, e.numElements())
		if e.loraA {
			bound := 1 / math.Sqrt(float64(e.shape[1]))
			rng := tensorRand(seed, e.name)
			for i := range values {
				values[i] = float32((2*rng.Float64() - 1) * bound)
			}
		}
		if err := m.SetTensor(e.name, values); err != nil {
			return err
		}
	}
	return nil
}

// tensorRand returns a generator seeded by seed and the FNV-1a hash of name.
func tensorRand(seed uint64, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}
