package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
)

var testModelConfig = model.Config{
	VocabSize: 64, HiddenSize: 16, IntermediateSize: 32, NumLayers: 1,
	NumHeads: 2, NumKVHeads: 1, HeadDim: 8, RMSNormEps: 1e-6, RopeTheta: 10000,
	MaxPositionEmbeddings: 32, TieWordEmbeddings: true, InitializerRange: 0.1,
}

// newTestModel returns a random model and its AdamW in the given mode.
func newTestModel(t *testing.T, mode model.Mode, seed uint64) (*model.Model, *model.AdamW) {
	t.Helper()
	be, err := cpu.New(cpu.Options{Workers: 1})
	require.NoError(t, err)
	opts := model.Options{Mode: mode, MaxBatch: 1, MaxSeq: 4}
	if mode == model.ModeLoRA {
		opts.LoRA = model.LoRAConfig{Rank: 2, Alpha: 4, TargetModules: []string{"q_proj", "v_proj"}}
	}
	m, err := model.New(be, testModelConfig, opts)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.InitRandom(seed))
	require.NoError(t, m.InitAdapters(seed))
	opt, err := model.NewAdamW(m, model.DefaultAdamW())
	require.NoError(t, err)
	t.Cleanup(opt.Close)
	return m, opt
}

// trainOneStep runs one update on a fixed batch, so that the optimizer state
// is not zero.
func trainOneStep(t *testing.T, m *model.Model, opt *model.AdamW) {
	t.Helper()
	batch := &data.Batch{
		Size: 1, SeqLen: 4,
		IDs: []int32{1, 2, 3, 4}, Targets: []int32{2, 3, 4, 5}, Positions: []int32{0, 1, 2, 3},
		Starts: [][]int32{{0}}, Lengths: []int{4}, RowIndices: []int{0}, Tokens: 4, TargetTokens: 4,
	}
	m.ZeroGrad()
	_, _, err := m.ForwardBackward(batch, 0.25, nil)
	require.NoError(t, err)
	require.NoError(t, opt.Step(1e-2))
}

func TestCheckpointRoundTrip(t *testing.T) {
	for _, mode := range []model.Mode{model.ModeFull, model.ModeLoRA} {
		t.Run(mode.String(), func(t *testing.T) {
			out := t.TempDir()
			m, opt := newTestModel(t, mode, 1)
			trainOneStep(t, m, opt)
			st := TrainerState{Step: 3, DropoutStep: 9, Mode: mode.String(), WorldSize: 2, ConfigHash: "h", JobID: "j",
				Sampler: data.SamplerState{Epoch: 1, RowsConsumed: 4, Seed: 5, WorldSize: 2, NumRows: 10, Shuffle: true}}
			path, err := saveCheckpoint(out, m, opt, st, "base", 0)
			require.NoError(t, err)
			assert.Equal(t, filepath.Join(out, "checkpoints", "step-00000003"), path)

			// A model from another seed takes the checkpoint's values.
			restored, restoredOpt := newTestModel(t, mode, 2)
			require.NoError(t, loadCheckpoint(path, restored, restoredOpt))
			assert.Equal(t, opt.StepCount(), restoredOpt.StepCount())
			for _, p := range m.Trainable() {
				want, err := m.ReadTensor(p.Name)
				require.NoError(t, err)
				got, err := restored.ReadTensor(p.Name)
				require.NoError(t, err)
				assert.Equal(t, want, got, "tensor %s", p.Name)
			}

			gotState, err := ReadTrainerState(path)
			require.NoError(t, err)
			st.Format = trainerStateFormat
			assert.Equal(t, st, gotState)
		})
	}
}

func TestCheckpointPruneKeepsNewest(t *testing.T) {
	out := t.TempDir()
	m, opt := newTestModel(t, model.ModeLoRA, 1)
	for _, step := range []int{2, 4, 6, 8} {
		_, err := saveCheckpoint(out, m, opt, TrainerState{Step: step}, "base", 2)
		require.NoError(t, err)
	}
	steps, err := listCheckpoints(filepath.Join(out, "checkpoints"))
	require.NoError(t, err)
	assert.Equal(t, []int{6, 8}, steps)
}

func TestResolveCheckpoint(t *testing.T) {
	out := t.TempDir()
	parent := filepath.Join(out, "checkpoints")
	for _, name := range []string{"step-00000005", "step-00000010", ".step-00000020.tmp-1", "notes"} {
		require.NoError(t, os.MkdirAll(filepath.Join(parent, name), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(parent, "step-00000005", trainerStateFile), []byte("{}"), 0o644))
	newest := filepath.Join(parent, "step-00000010")

	// An output folder and its checkpoints folder resolve to the newest complete checkpoint.
	got, err := ResolveCheckpoint(out)
	require.NoError(t, err)
	assert.Equal(t, newest, got)
	got, err = ResolveCheckpoint(parent)
	require.NoError(t, err)
	assert.Equal(t, newest, got)

	// A checkpoint folder resolves to itself.
	got, err = ResolveCheckpoint(filepath.Join(parent, "step-00000005"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(parent, "step-00000005"), got)

	// A folder without checkpoints and a missing path fail with the path named.
	empty := t.TempDir()
	_, err = ResolveCheckpoint(empty)
	require.Error(t, err)
	assert.Contains(t, err.Error(), empty)
	_, err = ResolveCheckpoint(filepath.Join(empty, "missing"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing")
}

func TestReadTrainerStateRejectsInvalid(t *testing.T) {
	cases := map[string]string{
		"not JSON":          `{"format": 1,`,
		"other format":      `{"format": 2, "step": 3}`,
		"step zero":         `{"format": 1, "step": 0}`,
		"negative skips":    `{"format": 1, "step": 3, "consecutive_skips": -1}`,
		"wrong field types": `{"format": 1, "step": "three"}`,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, trainerStateFile), []byte(content), 0o644))
			_, err := ReadTrainerState(dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), trainerStateFile)
		})
	}
}

func TestTruncateMetricsKeepsEarlierSteps(t *testing.T) {
	path := filepath.Join(t.TempDir(), MetricsFile)
	content := `{"step":0,"eval_loss":9}
{"step":1,"loss":5}
{"step":2,"loss":4}
not json
{"step":3,"loss":3}
{"step":4,"loss":2}
`
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	require.NoError(t, truncateMetrics(path, 2))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "{\"step\":0,\"eval_loss\":9}\n{\"step\":1,\"loss\":5}\n{\"step\":2,\"loss\":4}\n", string(got))

	require.NoError(t, truncateMetrics(path, 0))
	got, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Empty(t, got, "a new run keeps no line, not even the old step-0 evaluation")

	// A missing file is not an error.
	require.NoError(t, truncateMetrics(filepath.Join(t.TempDir(), MetricsFile), 3))
}
