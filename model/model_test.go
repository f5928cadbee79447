package model

import (
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
)

func TestNewRejectsOptions(t *testing.T) {
	cfg := goldenConfig(t)
	lora := DefaultLoRA()
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"bf16 in full mode", Options{FrozenBF16: true, MaxBatch: 1, MaxSeq: 8}, "FrozenBF16 needs ModeLoRA"},
		{"no activation shape", Options{MaxBatch: 0, MaxSeq: 8}, "MaxBatch 0 and MaxSeq 8 must both be positive"},
		{"invalid LoRA", Options{Mode: ModeLoRA, LoRA: LoRAConfig{Rank: 0, Alpha: 1, TargetModules: []string{"q_proj"}}, MaxBatch: 1, MaxSeq: 8}, "rank 0"},
		{"LoRA dropout 1", Options{Mode: ModeLoRA, LoRA: LoRAConfig{Rank: 4, Alpha: 8, Dropout: 1, TargetModules: lora.TargetModules}, MaxBatch: 1, MaxSeq: 8}, "LoRA dropout 1 must be in [0, 1)"},
		{"unknown mode", Options{Mode: Mode(7), MaxBatch: 1, MaxSeq: 8}, "invalid mode Mode(7)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(newBackend(t), cfg, c.opts)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

func TestParseMode(t *testing.T) {
	for _, mode := range []Mode{ModeFull, ModeLoRA} {
		parsed, err := ParseMode(mode.String())
		require.NoError(t, err)
		assert.Equal(t, mode, parsed)
	}
	_, err := ParseMode("qlora")
	assert.ErrorContains(t, err, `unknown training mode "qlora"`)
}

func TestBatchLargerThanAllocated(t *testing.T) {
	c := loadGoldenCase(t, "full_packed")
	m := newFullModel(t, Options{MaxBatch: 1, MaxSeq: 24})
	_, _, err := m.ForwardBackward(c.batch, 1, nil)
	assert.ErrorContains(t, err, "batch of 2 rows × 24 tokens does not fit the activations, which are allocated for 1 rows × 24 tokens")

	m = newFullModel(t, Options{MaxBatch: 2, MaxSeq: 16})
	_, _, err = m.Loss(c.batch)
	assert.ErrorContains(t, err, "batch of 2 rows × 24 tokens does not fit the activations, which are allocated for 2 rows × 16 tokens")
}

func TestBatchRejectsInvalidValues(t *testing.T) {
	c := loadGoldenCase(t, "full_packed")
	cases := []struct {
		name string
		edit func(b *data.Batch)
		want string
	}{
		{"id outside vocabulary", func(b *data.Batch) { b.IDs[30] = 250 }, "batch row 1, token 6: id 250 is outside the vocabulary [0, 250)"},
		{"negative id", func(b *data.Batch) { b.IDs[0] = -1 }, "id -1"},
		{"invalid target", func(b *data.Batch) { b.Targets[2] = -1 }, "target -1 is neither in [0, 250) nor -100"},
		{"negative position", func(b *data.Batch) { b.Positions[3] = -2 }, "position -2 is negative"},
		{"short ids", func(b *data.Batch) { b.IDs = b.IDs[:40] }, "has 40 ids, 48 targets and 48 positions, want 48 each"},
		{"starts per row", func(b *data.Batch) { b.Starts = b.Starts[:1] }, "has example starts for 1 rows"},
		{"unordered starts", func(b *data.Batch) { b.Starts[0] = []int32{0, 9, 5} }, "not increasing"},
		{"empty", func(b *data.Batch) { b.Size = 0 }, "is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			batch := cloneBatch(c.batch)
			tc.edit(batch)
			m := newFullModel(t, Options{})
			_, _, err := m.ForwardBackward(batch, 1, nil)
			assert.ErrorContains(t, err, tc.want)
		})
	}
	_, _, err := newFullModel(t, Options{}).Loss(nil)
	assert.ErrorContains(t, err, "batch is nil")
}

func cloneBatch(b *data.Batch) *data.Batch {
	clone := *b
	clone.IDs = slices.Clone(b.IDs)
	clone.Targets = slices.Clone(b.Targets)
	clone.Positions = slices.Clone(b.Positions)
	clone.Starts = slices.Clone(b.Starts)
	clone.Lengths = slices.Clone(b.Lengths)
	return &clone
}

// TestLossMatchesForwardBackward checks that the forward-only loss equals the
// loss of a training step and leaves the gradients alone.
func TestLossMatchesForwardBackward(t *testing.T) {
	c := loadGoldenCase(t, "lora_packed")
	m := newGoldenModel(t, newBackend(t), c, nil)
	lossSum, count, err := m.Loss(c.batch)
	require.NoError(t, err)
	assert.Equal(t, c.targetCount, count)
	assert.InEpsilon(t, c.lossSum, lossSum, 1e-5)
	assert.Zero(t, m.GradNorm(), "Loss computes no gradient")

	stepLoss, _, err := m.ForwardBackward(c.batch, 1, nil)
	require.NoError(t, err)
	assert.Equal(t, lossSum, stepLoss)
}

func TestLogitsRejectsRow(t *testing.T) {
	c := loadGoldenCase(t, "full_packed")
	_, err := newFullModel(t, Options{}).Logits(c.batch, 2)
	assert.ErrorContains(t, err, "row 2 is out of range for a batch of 2 rows")
}

func TestInitRandom(t *testing.T) {
	lora := LoRAConfig{Rank: 4, Alpha: 8, TargetModules: []string{"q_proj", "down_proj"}}
	opts := Options{Mode: ModeLoRA, LoRA: lora}
	a, b := newFullModel(t, opts), newFullModel(t, opts)
	require.NoError(t, a.InitRandom(42))
	require.NoError(t, b.InitRandom(42))
	valuesA := readAll(t, a)
	assert.Equal(t, valuesA, readAll(t, b), "the same seed gives the same tensors")
	require.NoError(t, b.InitRandom(43))
	assert.NotEqual(t, valuesA["model.embed_tokens.weight"], readAll(t, b)["model.embed_tokens.weight"])

	cfg := goldenConfig(t)
	for _, p := range a.Params() {
		values := valuesA[p.Name]
		switch {
		case p.Value.Rank() == 1:
			assert.Equal(t, slices.Repeat([]float32{1}, len(values)), values, "norm %s", p.Name)
		case isAdapterName(p.Name, "lora_B"):
			assert.Equal(t, make([]float32, len(values)), values, "%s starts at zero", p.Name)
		case isAdapterName(p.Name, "lora_A"):
			bound := 1 / math.Sqrt(float64(p.Value.Dim(1)))
			mean, std := moments(values)
			assert.LessOrEqual(t, maxAbs(values), bound, p.Name)
			assert.InDelta(t, 0, mean, bound/4, p.Name)
			assert.InDelta(t, bound/math.Sqrt(3), std, bound/4, "%s is uniform(±1/sqrt(in))", p.Name)
		default:
			mean, std := moments(values)
			assert.InDelta(t, 0, mean, 0.005, p.Name)
			assert.InDelta(t, cfg.InitializerRange, std, 0.003, "%s is normal(0, initializer_range)", p.Name)
		}
	}

	// The adapters of a module draw the same values whatever else is targeted.
	other := newFullModel(t, Options{Mode: ModeLoRA, LoRA: LoRAConfig{Rank: 4, Alpha: 8, TargetModules: []string{"down_proj"}}})
	require.NoError(t, other.InitRandom(42))
	name := "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"
	assert.Equal(t, valuesA[name], readAll(t, other)[name])
}

func isAdapterName(name, matrix string) bool {
	return len(name) > len(matrix)+7 && name[len(name)-len(matrix)-7:] == matrix+".weight"
}

func moments(values []float32) (mean, std float64) {
	for _, v := range values {
		mean += float64(v)
	}
	mean /= float64(len(values))
	for _, v := range values {
		std += (float64(v) - mean) * (float64(v) - mean)
	}
	return mean, math.Sqrt(std / float64(len(values)))
}

func maxAbs(values []float32) float64 {
	var m float64
	for _, v := range values {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return m
}

func TestParamsOrder(t *testing.T) {
	c := loadGoldenCase(t, "lora_all_packed")
	m := newGoldenModel(t, newBackend(t), c, nil)
	cfg := goldenConfig(t)
	var want []string
	for _, spec := range cfg.Params() {
		want = append(want, spec.Name)
	}
	var adapters []string
	for _, spec := range cfg.Adapters(c.lora) {
		adapters = append(adapters, spec.Name)
	}
	var got, trainable []string
	for _, p := range m.Params() {
		got = append(got, p.Name)
	}
	for _, p := range m.Trainable() {
		trainable = append(trainable, p.Name)
		assert.True(t, p.Decay, "adapter %s takes weight decay", p.Name)
	}
	assert.Equal(t, append(want, adapters...), got)
	assert.Equal(t, adapters, trainable)

	offset := 0
	for _, p := range m.Trainable() {
		assert.Equal(t, offset, p.Grad.Offset(), "%s follows the tensor before it in FlatGrads", p.Name)
		assert.Same(t, m.FlatGrads().Buffer(), p.Grad.Buffer())
		assert.Equal(t, p.Grad.Offset(), p.Value.Offset(), "FlatTrainable has the layout of FlatGrads")
		offset += p.Grad.Len()
	}
	assert.Equal(t, offset, m.FlatGrads().Len())
}

func TestTensorAccessors(t *testing.T) {
	m := newFullModel(t, Options{})
	_, err := m.Tensor("model.layers.9.mlp.up_proj.weight")
	assert.ErrorContains(t, err, `model has no tensor "model.layers.9.mlp.up_proj.weight"`)
	assert.ErrorContains(t, m.SetTensor("model.norm.weight", []float32{1}), "got 1 values, want 48 for shape [48]")

	values := make([]float32, 48)
	values[3] = 2.5
	require.NoError(t, m.SetTensor("model.norm.weight", values))
	got, err := m.ReadTensor("model.norm.weight")
	require.NoError(t, err)
	assert.Equal(t, values, got)
	tensor, err := m.Tensor("model.norm.weight")
	require.NoError(t, err)
	assert.Equal(t, []int{48}, tensor.Shape())
	assert.Equal(t, kernels.F32, tensor.DType())
}
