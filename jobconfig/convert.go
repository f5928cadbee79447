package jobconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/model"
)

// The conversions below expect a Config that Resolve and Validate accepted. Where
// a setting could still be invalid, the accessor returns the documented default
// instead of failing.

// ModelConfig returns the model shape: model.base resolved by model.ResolveConfig,
// with model.overrides applied through the config.json keys and the result checked
// by model.Config.Validate. It reads config.json when Base is a path.
func (c *Config) ModelConfig() (model.Config, error) {
	cfg, err := model.ResolveConfig(c.Model.Base)
	if err != nil {
		return model.Config{}, fmt.Errorf("model.base: %w", err)
	}
	if len(c.Model.Overrides) == 0 {
		return cfg, nil
	}

	encoded, err := json.Marshal(cfg)
	if err != nil {
		return model.Config{}, fmt.Errorf("model.overrides: encode the base config: %w", err)
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(encoded, &fields); err != nil {
		return model.Config{}, fmt.Errorf("model.overrides: decode the base config: %w", err)
	}
	known := modelConfigFields()
	for key, value := range c.Model.Overrides {
		kind, ok := known[key]
		if !ok {
			return model.Config{}, fmt.Errorf("model.overrides.%s: unknown config.json key", key)
		}
		if err := checkOverrideValue(kind, value); err != nil {
			return model.Config{}, fmt.Errorf("model.overrides.%s: %v is invalid: %w", key, value, err)
		}
		raw, err := json.Marshal(value)
		if err != nil {
			return model.Config{}, fmt.Errorf("model.overrides.%s: %w", key, err)
		}
		fields[key] = raw
	}
	merged, err := json.Marshal(fields)
	if err != nil {
		return model.Config{}, fmt.Errorf("model.overrides: %w", err)
	}
	var out model.Config
	decoder := json.NewDecoder(bytes.NewReader(merged))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&out); err != nil {
		return model.Config{}, fmt.Errorf("model.overrides: %w", err)
	}
	if err := out.Validate(); err != nil {
		return model.Config{}, fmt.Errorf("model.overrides: the overridden model config is invalid: %w", err)
	}
	return out, nil
}

// ModelOptions returns the options of model.New. MaxBatch is the largest of
// maxBatch, batch.micro_batch_size and eval.batch_size, so callers pass 0 unless
// they run larger batches of their own. The caller sets DropoutSeed.
func (c *Config) ModelOptions(maxBatch int) (model.Options, error) {
	mode, err := model.ParseMode(c.Mode)
	if err != nil {
		return model.Options{}, fmt.Errorf("mode: %w", err)
	}
	return model.Options{
		Mode:          mode,
		LoRA:          c.modelLoRA(),
		FrozenBF16:    c.Model.FrozenBF16,
		Checkpointing: c.Model.Checkpointing,
		MaxBatch:      max(maxBatch, c.Batch.MicroBatchSize, c.Eval.BatchSize),
		MaxSeq:        c.Data.SeqLen,
	}, nil
}

func (c *Config) modelLoRA() model.LoRAConfig {
	return model.LoRAConfig{
		Rank:          c.LoRA.Rank,
		Alpha:         c.LoRA.Alpha,
		Dropout:       c.LoRA.Dropout,
		TargetModules: slices.Clone(c.LoRA.TargetModules),
	}
}

// AdamW returns the optimizer hyperparameters other than the learning rate.
func (c *Config) AdamW() model.AdamWConfig {
	return model.AdamWConfig{
		Beta1:       c.Optimizer.Beta1,
		Beta2:       c.Optimizer.Beta2,
		Eps:         c.Optimizer.Eps,
		WeightDecay: c.Optimizer.WeightDecay,
	}
}

// LRSchedule returns the learning-rate schedule of a run of totalSteps updates. It
// is not named Schedule because Config has a field of that name.
// schedule.warmup_ratio gives ceil(ratio × totalSteps) warmup steps, as
// transformers' TrainingArguments.get_warmup_steps computes them. Warmup never
// exceeds totalSteps.
func (c *Config) LRSchedule(totalSteps int) model.Schedule {
	warmup := c.Schedule.WarmupSteps
	if c.Schedule.WarmupRatio > 0 {
		warmup = int(math.Ceil(c.Schedule.WarmupRatio * float64(totalSteps)))
	}
	if totalSteps > 0 {
		warmup = min(warmup, totalSteps)
	}
	return model.Schedule{
		PeakLR:      c.Optimizer.LR,
		WarmupSteps: warmup,
		TotalSteps:  totalSteps,
		MinLRRatio:  c.MinLRRatio(),
	}
}

// TotalSteps returns the number of optimizer steps: schedule.steps when set, else
// ceil(epochs × ceil(microBatchesPerEpochPerRank / grad_accum_steps)) with epochs 1
// when unset, and at least 1. A step never spans two epochs, so an epoch has
// ceil(micro-batches / grad_accum_steps) steps.
func (c *Config) TotalSteps(microBatchesPerEpochPerRank int) int {
	if c.Schedule.Steps > 0 {
		return c.Schedule.Steps
	}
	epochs := c.Schedule.Epochs
	if epochs <= 0 {
		epochs = 1
	}
	// The tolerance keeps products such as 0.3 × 10 = 3.0000000000000004 from
	// rounding up to an extra micro-batch.
	accum := max(c.Batch.GradAccumSteps, 1)
	stepsPerEpoch := (microBatchesPerEpochPerRank + accum - 1) / accum
	steps := math.Ceil(epochs*float64(stepsPerEpoch) - 1e-9)
	if steps > math.MaxInt32 {
		return math.MaxInt32
	}
	return max(int(steps), 1)
}

// DataOptions returns the options of data.Load. The caller sets Workers and Logger.
func (c *Config) DataOptions() (data.Options, error) {
	format, err := data.ParseFormat(c.Data.Format)
	if err != nil {
		return data.Options{}, fmt.Errorf("data.format: %w", err)
	}
	packing, err := data.ParsePacking(c.Data.Packing)
	if err != nil {
		return data.Options{}, fmt.Errorf("data.packing: %w", err)
	}
	return data.Options{
		Format:       format,
		MaxSeqLen:    c.Data.SeqLen,
		Packing:      packing,
		SkipInvalid:  c.Data.SkipInvalid,
		TrainOnAll:   c.Data.TrainOnAll,
		EvalFraction: c.Data.EvalFraction,
		EvalPath:     c.Data.Eval,
		Seed:         c.Seed,
	}, nil
}

// WireDType returns the gradient element type on the wire, collective.Float32
// when cluster.wire_dtype is invalid.
func (c *Config) WireDType() collective.WireDType {
	dtype, err := collective.ParseWireDType(c.Cluster.WireDType)
	if err != nil {
		return collective.Float32
	}
	return dtype
}

// BucketBytes returns cluster.bucket_mb in bytes, rounded down.
func (c *Config) BucketBytes() int {
	return int(c.Cluster.BucketMB * (1 << 20))
}

// JoinTimeoutDuration returns cluster.join_timeout, 5m when it is invalid.
func (c *Config) JoinTimeoutDuration() time.Duration {
	d, err := time.ParseDuration(c.Cluster.JoinTimeout)
	if err != nil || d <= 0 {
		return 5 * time.Minute
	}
	return d
}

// Shuffle returns data.shuffle, true when unset.
func (c *Config) Shuffle() bool {
	if c.Data.Shuffle == nil {
		return true
	}
	return *c.Data.Shuffle
}

// MaxGradNorm returns optimizer.max_grad_norm, 1 when unset. 0 turns clipping off.
func (c *Config) MaxGradNorm() float64 {
	if c.Optimizer.MaxGradNorm == nil {
		return defaultMaxGradNorm
	}
	return *c.Optimizer.MaxGradNorm
}

// KeepCheckpoints returns checkpoint.keep, 2 when unset. 0 keeps all checkpoints.
func (c *Config) KeepCheckpoints() int {
	if c.Checkpoint.Keep == nil {
		return defaultKeepCheckpoints
	}
	return *c.Checkpoint.Keep
}

// MinLRRatio returns schedule.min_lr_ratio, 0.1 when unset.
func (c *Config) MinLRRatio() float64 {
	if c.Schedule.MinLRRatio == nil {
		return defaultMinLRRatio
	}
	return *c.Schedule.MinLRRatio
}
