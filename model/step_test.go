package model

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
)

// TestStepAllocatesNothing checks that once the backend's scratch memory has
// grown, a training step (zero, forward and backward, clip, AdamW) and an
// evaluation allocate nothing.
func TestStepAllocatesNothing(t *testing.T) {
	if raceDetectorOn {
		t.Skip("the race detector's instrumentation allocates")
	}

	c := loadGoldenCase(t, "full_packed")
	lora := LoRAConfig{Rank: 4, Alpha: 8, TargetModules: ProjectionModules()}
	loraDropout := lora
	loraDropout.Dropout = 0.1
	cases := []struct {
		name string
		opts Options
	}{
		{"full", Options{}},
		{"full checkpointing", Options{Checkpointing: true}},
		{"lora bf16", Options{Mode: ModeLoRA, LoRA: lora, FrozenBF16: true}},
		{"lora dropout", Options{Mode: ModeLoRA, LoRA: loraDropout}},
		{"lora dropout checkpointing", Options{Mode: ModeLoRA, LoRA: loraDropout, Checkpointing: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newFullModel(t, tc.opts)
			require.NoError(t, m.InitRandom(1))
			opt, err := NewAdamW(m, DefaultAdamW())
			require.NoError(t, err)
			defer opt.Close()
			ready := 0
			onGradReady := func(int) { ready++ }
			step := func() {
				m.ZeroGrad()
				if _, _, err := m.ForwardBackward(c.batch, 1/float32(c.targetCount), onGradReady); err != nil {
					panic(err)
				}
				m.ClipGradNorm(1)
				if err := opt.Step(1e-3); err != nil {
					panic(err)
				}
			}
			evaluate := func() {
				if _, _, err := m.Loss(c.batch); err != nil {
					panic(err)
				}
			}
			// Sgemm's sync.Pool also drops its buffers at a garbage collection.
			// Collect the garbage of the set-up first, then let the buffers
			// grow to the sizes of every product.
			runtime.GC()
			for range 3 {
				step()
				evaluate()
			}
			assert.Zero(t, testing.AllocsPerRun(10, step), "allocations per training step")
			assert.Zero(t, testing.AllocsPerRun(10, evaluate), "allocations per evaluation")
			assert.Equal(t, 14*len(m.Trainable()), ready, "onGradReady calls")
		})
	}
}

// randomBatch returns a batch of one example per row with random tokens, and
// targets that are the next token.
func randomBatch(rng *rand.Rand, batchSize, seqLen, vocab int) *data.Batch {
	n := batchSize * seqLen
	b := &data.Batch{
		Size: batchSize, SeqLen: seqLen,
		IDs: make([]int32, n), Targets: make([]int32, n), Positions: make([]int32, n),
		Starts: make([][]int32, batchSize), Lengths: make([]int, batchSize),
	}
	for i := range n {
		b.IDs[i] = int32(rng.IntN(vocab))
		b.Positions[i] = int32(i % seqLen)
	}
	for i := range n {
		b.Targets[i] = -100
		if (i+1)%seqLen != 0 {
			b.Targets[i] = b.IDs[i+1]
			b.TargetTokens++
		}
	}
	for r := range batchSize {
		b.Starts[r] = []int32{0}
		b.Lengths[r] = seqLen
	}
	b.Tokens = n
	return b
}

// BenchmarkStepTiny times one training step (ForwardBackward, clip and AdamW)
// of the tiny preset on a batch of 1 × 128 tokens.
func BenchmarkStepTiny(b *testing.B) {
	cfg, err := Preset("tiny")
	require.NoError(b, err)
	lora := LoRAConfig{Rank: 8, Alpha: 16, TargetModules: ProjectionModules()}
	cases := []struct {
		name string
		opts Options
	}{
		{"full", Options{}},
		{"full_checkpointing", Options{Checkpointing: true}},
		{"lora", Options{Mode: ModeLoRA, LoRA: lora}},
		{"lora_bf16", Options{Mode: ModeLoRA, LoRA: lora, FrozenBF16: true}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			opts := tc.opts
			opts.MaxBatch, opts.MaxSeq = 1, 128
			m, err := New(newBackend(b), cfg, opts)
			require.NoError(b, err)
			defer m.Close()
			require.NoError(b, m.InitRandom(1))
			opt, err := NewAdamW(m, DefaultAdamW())
			require.NoError(b, err)
			defer opt.Close()
			batch := randomBatch(rand.New(rand.NewPCG(1, 2)), 1, 128, cfg.VocabSize)
			b.ResetTimer()
			for b.Loop() {
				m.ZeroGrad()
				if _, _, err := m.ForwardBackward(batch, 1/float32(batch.TargetTokens), nil); err != nil {
					b.Fatal(err)
				}
				m.ClipGradNorm(1)
				if err := opt.Step(1e-4); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
