package peft_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

func newModel(t *testing.T, opts model.Options) *model.Model {
	t.Helper()
	cfg, err := model.LoadConfig(filepath.Dir(goldenConfig))
	require.NoError(t, err)
	backend, err := cpu.New(cpu.Options{})
	require.NoError(t, err)
	opts.MaxBatch, opts.MaxSeq = 1, 12
	m, err := model.New(backend, cfg, opts)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

// testBatch is one row of 12 tokens with every target trained.
func testBatch() *data.Batch {
	ids := []int32{3, 17, 42, 99, 7, 120, 5, 61, 200, 11, 8, 77}
	b := &data.Batch{Size: 1, SeqLen: len(ids), IDs: ids, Starts: [][]int32{{0}}, Lengths: []int{len(ids)}}
	for t := range ids {
		b.Positions = append(b.Positions, int32(t))
		target := int32(-100)
		if t+1 < len(ids) {
			target = ids[t+1]
		}
		b.Targets = append(b.Targets, target)
	}
	b.Tokens, b.TargetTokens = len(ids), len(ids)-1
	return b
}

func loss(t *testing.T, m *model.Model) float64 {
	t.Helper()
	sum, count, err := m.Loss(testBatch())
	require.NoError(t, err)
	return sum / float64(count)
}

func loraOptions() model.Options {
	return model.Options{Mode: model.ModeLoRA, LoRA: model.LoRAConfig{Rank: 4, Alpha: 8, TargetModules: []string{"q_proj", "v_proj", "down_proj"}}}
}

// trainedLoRA returns a LoRA model whose adapter has random nonzero matrices, so that
// it changes the output.
func trainedLoRA(t *testing.T, seed uint64) *model.Model {
	t.Helper()
	m := newModel(t, loraOptions())
	require.NoError(t, m.InitRandom(1))
	require.NoError(t, m.InitAdapters(seed))
	for _, p := range m.Trainable() {
		values, err := m.ReadTensor(p.Name)
		require.NoError(t, err)
		for i := range values {
			values[i] = 0.05 * float32((i*7+int(seed))%13-6)
		}
		require.NoError(t, m.SetTensor(p.Name, values))
	}
	return m
}

func TestSaveAdapterRoundTrip(t *testing.T) {
	m := trainedLoRA(t, 2)
	dir := filepath.Join(t.TempDir(), "adapter")
	require.NoError(t, peft.SaveAdapter(m, dir, "Qwen/Qwen3-0.6B"))

	fresh := newModel(t, loraOptions())
	require.NoError(t, fresh.InitRandom(1))
	_, err := peft.LoadAdapter(fresh, dir)
	require.NoError(t, err)
	for _, p := range m.Trainable() {
		want, err := m.ReadTensor(p.Name)
		require.NoError(t, err)
		got, err := fresh.ReadTensor(p.Name)
		require.NoError(t, err)
		assert.Equal(t, want, got, p.Name)
	}
	assert.Equal(t, loss(t, m), loss(t, fresh))
}

func TestSwitchAdapters(t *testing.T) {
	dirs := make([]string, 2)
	losses := make([]float64, 2)
	for i := range dirs {
		m := trainedLoRA(t, uint64(10+i))
		dirs[i] = filepath.Join(t.TempDir(), "adapter")
		require.NoError(t, peft.SaveAdapter(m, dirs[i], "base"))
		losses[i] = loss(t, m)
	}
	require.NotEqual(t, losses[0], losses[1], "the two adapters must differ")

	m := newModel(t, loraOptions())
	require.NoError(t, m.InitRandom(1))
	for _, i := range []int{0, 1, 0} {
		_, err := peft.LoadAdapter(m, dirs[i])
		require.NoError(t, err)
		assert.Equal(t, losses[i], loss(t, m), "adapter %d on the loaded base", i)
	}
}

func TestApplyRejectsOtherConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "adapter")
	require.NoError(t, peft.SaveAdapter(trainedLoRA(t, 3), dir, "base"))

	other := loraOptions()
	other.LoRA.Rank = 8
	m := newModel(t, other)
	require.NoError(t, m.InitRandom(1))
	_, err := peft.LoadAdapter(m, dir)
	assert.ErrorContains(t, err, "the model was built for rank 8")

	full := newModel(t, model.Options{})
	_, err = peft.FromModel(full, "base")
	assert.ErrorContains(t, err, "full mode")
}

// TestMergedForwardEqualsAdapter checks that the merged Hugging Face model computes the
// same loss in full mode as the base with the adapter in LoRA mode.
func TestMergedForwardEqualsAdapter(t *testing.T) {
	m := trainedLoRA(t, 4)
	root := t.TempDir()
	baseDir, adapterDir, mergedDir := filepath.Join(root, "base"), filepath.Join(root, "adapter"), filepath.Join(root, "merged")
	require.NoError(t, m.SaveBase(baseDir))
	require.NoError(t, peft.SaveAdapter(m, adapterDir, baseDir))
	_, err := peft.Merge(t.Context(), baseDir, adapterDir, mergedDir, peft.MergeOptions{})
	require.NoError(t, err)

	merged := newModel(t, model.Options{})
	require.NoError(t, merged.LoadBase(mergedDir))
	want, got := loss(t, m), loss(t, merged)
	assert.InDelta(t, want, got, 1e-5*want, "merged loss %v, base+adapter loss %v", got, want)
}
