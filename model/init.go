package model

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
)

// InitRandom sets every tensor as transformers initializes a new Qwen3 model
// and PEFT a new adapter: projections, the embedding and an untied lm_head
// from normal(0, initializer_range), norm weights to 1, and in LoRA mode the
// adapters as InitAdapters does. Each tensor draws from its own stream, keyed
// by seed and its name, so the result depends on neither the order of the
// tensors nor which adapters exist.
func (m *Model) InitRandom(seed uint64) error {
	std := m.cfg.InitializerRange
	for _, e := range m.baseEntries() {
		values := make([]float32, e.numElements())
		if len(e.shape) == 1 {
			for i := range values {
				values[i] = 1
			}
		} else {
			rng := tensorRand(seed, e.name)
			for i := range values {
				values[i] = float32(rng.NormFloat64() * std)
			}
		}
		if err := m.SetTensor(e.name, values); err != nil {
			return err
		}
	}
	return m.InitAdapters(seed)
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
