package cuda

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
)

// testModelConfig is a small Qwen3 with Qwen3's head size (64 in the smaller
// presets) and grouped-query attention of 4 query heads per key/value head.
var testModelConfig = model.Config{
	VocabSize: 500, HiddenSize: 128, IntermediateSize: 320, NumLayers: 2,
	NumHeads: 4, NumKVHeads: 1, HeadDim: 64, RMSNormEps: 1e-6, RopeTheta: 1e6,
	MaxPositionEmbeddings: 512, TieWordEmbeddings: true, InitializerRange: 0.02,
}

// testBatch returns two rows of 48 tokens: row 0 packs examples at 0 and 20,
// row 1 has 40 real tokens and padding. Every third target and the padding
// take no loss.
func testBatch(vocab int) *data.Batch {
	const rows, seqLen = 2, 48
	b := &data.Batch{
		Size: rows, SeqLen: seqLen,
		IDs:       make([]int32, rows*seqLen),
		Targets:   make([]int32, rows*seqLen),
		Positions: make([]int32, rows*seqLen),
		Starts:    [][]int32{{0, 20}, {0}},
		Lengths:   []int{seqLen, 40},
	}
	for r := range rows {
		start := int32(0)
		for t := range seqLen {
			i := r*seqLen + t
			for _, s := range b.Starts[r] {
				if int32(t) >= s {
					start = s
				}
			}
			b.IDs[i] = int32((i*37 + 11) % vocab)
			b.Positions[i] = int32(t) - start
			b.Targets[i] = int32((i*53 + 7) % vocab)
			if t%3 == 2 || t >= b.Lengths[r] {
				b.Targets[i] = kernels.IgnoreIndex
			}
		}
		b.Tokens += b.Lengths[r]
	}
	for _, target := range b.Targets {
		if target != kernels.IgnoreIndex {
			b.TargetTokens++
		}
	}
	return b
}

// newTestModel builds the test model on be with the weights of seed, and in
// LoRA mode adapters with nonzero B, so that every gradient is nonzero.
func newTestModel(t *testing.T, be kernels.Backend, opts model.Options) *model.Model {
	t.Helper()
	m, err := model.New(be, testModelConfig, opts)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.InitRandom(7))
	if opts.Mode == model.ModeLoRA {
		for i, p := range m.Trainable() {
			values := make([]float32, p.Value.Len())
			for j := range values {
				values[j] = 0.05 * float32(math.Sin(float64(i*1000+j)))
			}
			require.NoError(t, m.SetTensor(p.Name, values), p.Name)
		}
	}
	return m
}

func TestModelStepMatchesCPU(t *testing.T) {
	requireGPU(t)
	lora := model.LoRAConfig{Rank: 8, Alpha: 16, TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
	cases := []struct {
		name    string
		opts    model.Options
		strict  bool
		lossTol float64
		gradTol float64
	}{
		{"full strict", model.Options{Mode: model.ModeFull}, true, 1e-5, 1e-3},
		{"full TF32", model.Options{Mode: model.ModeFull}, false, 1e-2, 5e-2},
		{"LoRA strict", model.Options{Mode: model.ModeLoRA, LoRA: lora}, true, 1e-5, 1e-3},
		{"LoRA TF32", model.Options{Mode: model.ModeLoRA, LoRA: lora}, false, 1e-2, 5e-2},
		{"LoRA BF16 frozen", model.Options{Mode: model.ModeLoRA, LoRA: lora, FrozenBF16: true}, false, 1e-2, 5e-2},
		{"full checkpointing", model.Options{Mode: model.ModeFull, Checkpointing: true}, true, 1e-5, 1e-3},
	}
	batch := testBatch(testModelConfig.VocabSize)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.MaxBatch, c.opts.MaxSeq = batch.Size, batch.SeqLen
			ref := newTestModel(t, newCPU(t, cpu.Options{}), c.opts)
			gpu := newTestModel(t, newGPU(t, Options{StrictFP32: c.strict, CrossEntropyChunkRows: 16}), c.opts)

			scale := 1 / float32(batch.TargetTokens)
			wantLoss, wantCount, err := ref.ForwardBackward(batch, scale, nil)
			require.NoError(t, err)
			gotLoss, gotCount, err := gpu.ForwardBackward(batch, scale, nil)
			require.NoError(t, err)
			require.NoError(t, gpu.Backend().Sync())
			require.Equal(t, wantCount, gotCount)
			require.InEpsilon(t, wantLoss, gotLoss, c.lossTol, "loss sum")

			for _, p := range ref.Trainable() {
				want, err := ref.ReadGrad(p.Name)
				require.NoError(t, err)
				got, err := gpu.ReadGrad(p.Name)
				require.NoError(t, err)
				relErr, at := relativeError(got, want)
				require.LessOrEqual(t, relErr, c.gradTol, fmt.Sprintf("gradient of %s: relative error %.3g at element %d", p.Name, relErr, at))
			}
		})
	}
}
