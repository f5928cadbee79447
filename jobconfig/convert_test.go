package jobconfig

import (
	"testing"
	"time"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTotalSteps(t *testing.T) {
	tests := []struct {
		name         string
		steps        int
		epochs       float64
		accum        int
		microBatches int
		want         int
	}{
		{"steps win", 100, 0, 4, 10, 100},
		{"default one epoch", 0, 0, 1, 10, 10},
		{"accumulation rounds up", 0, 0, 3, 10, 4},
		{"two epochs, each ending with a short step", 0, 2, 4, 10, 6},
		{"fractional epochs without float error", 0, 0.3, 1, 10, 3},
		{"fractional epochs round up", 0, 0.25, 1, 10, 3},
		{"at least one", 0, 1, 8, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			cfg.Schedule.Steps, cfg.Schedule.Epochs, cfg.Batch.GradAccumSteps = tt.steps, tt.epochs, tt.accum
			assert.Equal(t, tt.want, cfg.TotalSteps(tt.microBatches))
		})
	}
}

func TestLRScheduleWarmupRatio(t *testing.T) {
	cfg := validConfig(t)
	cfg.Optimizer.LR = 2e-4
	cfg.Schedule.WarmupRatio = 0.03
	cfg.Schedule.MinLRRatio = floatPointer(0.2)

	schedule := cfg.LRSchedule(1000)
	assert.Equal(t, model.Schedule{PeakLR: 2e-4, WarmupSteps: 30, TotalSteps: 1000, MinLRRatio: 0.2}, schedule)
	assert.NoError(t, schedule.Validate())
	assert.Equal(t, 1, cfg.LRSchedule(10).WarmupSteps, "ceil(0.03 × 10)")
}

func TestLRScheduleWarmupSteps(t *testing.T) {
	cfg := validConfig(t)
	cfg.Schedule.WarmupSteps = 50
	assert.Equal(t, 50, cfg.LRSchedule(1000).WarmupSteps)
	assert.Equal(t, 20, cfg.LRSchedule(20).WarmupSteps, "warmup never exceeds the total")
	assert.Equal(t, 0.1, cfg.LRSchedule(20).MinLRRatio)
}

func TestModelOptions(t *testing.T) {
	cfg := validConfig(t)
	cfg.Model.FrozenBF16, cfg.Model.Checkpointing = true, true
	cfg.Eval.BatchSize = 16
	cfg.Data.SeqLen = 256

	opts, err := cfg.ModelOptions(0)
	require.NoError(t, err)
	assert.Equal(t, model.ModeLoRA, opts.Mode)
	assert.Equal(t, model.DefaultLoRA(), opts.LoRA)
	assert.True(t, opts.FrozenBF16)
	assert.True(t, opts.Checkpointing)
	assert.Equal(t, 16, opts.MaxBatch)
	assert.Equal(t, 256, opts.MaxSeq)
	assert.NoError(t, opts.Validate())

	opts, err = cfg.ModelOptions(32)
	require.NoError(t, err)
	assert.Equal(t, 32, opts.MaxBatch)
}

func TestModelConfigPreset(t *testing.T) {
	cfg := validConfig(t)
	got, err := cfg.ModelConfig()
	require.NoError(t, err)
	want, err := model.Preset("tiny")
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestModelConfigOverrides(t *testing.T) {
	cfg := validConfig(t)
	cfg.Mode, cfg.Model.Init = "full", "random"
	cfg.Model.Overrides = map[string]any{"num_hidden_layers": 2, "vocab_size": 1000, "rope_theta": 10000.0}
	require.NoError(t, cfg.Validate())

	got, err := cfg.ModelConfig()
	require.NoError(t, err)
	assert.Equal(t, 2, got.NumLayers)
	assert.Equal(t, 1000, got.VocabSize)
	assert.Equal(t, 10000.0, got.RopeTheta)
	assert.Equal(t, 256, got.HiddenSize, "keys without an override keep the preset's value")
}

func TestModelConfigOverrideInvalidShape(t *testing.T) {
	cfg := validConfig(t)
	cfg.Mode, cfg.Model.Init = "full", "random"
	cfg.Model.Overrides = map[string]any{"num_attention_heads": 0}
	_, err := cfg.ModelConfig()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model.overrides")
}

func TestModelConfigMissingBase(t *testing.T) {
	cfg := validConfig(t)
	cfg.Model.Base = "/nonexistent/model"
	_, err := cfg.ModelConfig()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model.base")
}

func TestDataOptions(t *testing.T) {
	cfg := parseExample(t)
	opts, err := cfg.DataOptions()
	require.NoError(t, err)
	assert.Equal(t, data.FormatChat, opts.Format)
	assert.Equal(t, 256, opts.MaxSeqLen)
	assert.Equal(t, data.PackingOff, opts.Packing)
	assert.True(t, opts.SkipInvalid)
	assert.True(t, opts.TrainOnAll)
	assert.Equal(t, cfg.Data.Eval, opts.EvalPath)
	assert.Equal(t, 0.0, opts.EvalFraction)
	assert.Equal(t, uint64(7), opts.Seed)

	auto := validConfig(t)
	opts, err = auto.DataOptions()
	require.NoError(t, err)
	assert.Equal(t, data.FormatAuto, opts.Format)
	assert.Equal(t, data.PackingAuto, opts.Packing)
}

func TestClusterAccessors(t *testing.T) {
	cfg := parseExample(t)
	assert.Equal(t, collective.BFloat16, cfg.WireDType())
	assert.Equal(t, int(12.5*(1<<20)), cfg.BucketBytes())
	assert.Equal(t, 90*time.Second, cfg.JoinTimeoutDuration())
	assert.Equal(t, model.AdamWConfig{Beta1: 0.8, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.01}, cfg.AdamW())

	defaults := validConfig(t)
	assert.Equal(t, collective.Float32, defaults.WireDType())
	assert.Equal(t, 25<<20, defaults.BucketBytes())
	assert.Equal(t, 5*time.Minute, defaults.JoinTimeoutDuration())
}

func TestAccessorsOfNilPointers(t *testing.T) {
	var cfg Config
	assert.True(t, cfg.Shuffle())
	assert.Equal(t, 1.0, cfg.MaxGradNorm())
	assert.Equal(t, 2, cfg.KeepCheckpoints())
	assert.Equal(t, 0.1, cfg.MinLRRatio())
}
