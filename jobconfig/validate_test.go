package jobconfig

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// validConfig returns a resolved LoRA config that passes Validate.
func validConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := Parse([]byte("mode: lora\nmodel: {base: tiny}\ndata: {train: t.jsonl}\n"), "/jobs/job.yaml")
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	return cfg
}

func intPointer(v int) *int           { return &v }
func floatPointer(v float64) *float64 { return &v }

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // text that the error must contain, naming the key
	}{
		{"empty job id", func(c *Config) { c.JobID = "" }, "job_id is missing"},
		{"job id with separator", func(c *Config) { c.JobID = "a/b" }, `job_id: "a/b" is invalid`},
		{"missing output", func(c *Config) { c.Output = "" }, "output is missing"},
		{"max nonfinite steps", func(c *Config) { c.MaxNonFiniteSteps = 0 }, "max_nonfinite_steps: 0 is invalid: use 1 or more"},
		{"missing mode", func(c *Config) { c.Mode = "" }, "mode is missing"},
		{"unknown mode", func(c *Config) { c.Mode = "qlora" }, `mode: "qlora" is invalid: use full or lora`},
		{"missing base", func(c *Config) { c.Model.Base = "" }, "model.base is missing"},
		{"unknown init", func(c *Config) { c.Model.Init = "zeros" }, `model.init: "zeros" is invalid: use pretrained or random`},
		{"random init in lora mode", func(c *Config) { c.Model.Init = "random" }, `model.init: "random" is invalid: random initialization needs mode full`},
		{"frozen bf16 in full mode", func(c *Config) { c.Mode = "full"; c.Model.FrozenBF16 = true }, "model.frozen_bf16: true is invalid"},
		{"overrides with pretrained init", func(c *Config) { c.Model.Overrides = map[string]any{"hidden_size": 128} }, "model.overrides: overrides need model.init random"},
		{"unknown override key", func(c *Config) {
			c.Mode, c.Model.Init, c.Model.Overrides = "full", "random", map[string]any{"hidden_sise": 128}
		}, `model.overrides.hidden_sise: unknown config.json key "hidden_sise"`},
		{"string override value", func(c *Config) {
			c.Mode, c.Model.Init, c.Model.Overrides = "full", "random", map[string]any{"hidden_size": "big"}
		}, `model.overrides.hidden_size: "big" is invalid: use an integer`},
		{"fractional integer override", func(c *Config) {
			c.Mode, c.Model.Init, c.Model.Overrides = "full", "random", map[string]any{"num_hidden_layers": 2.5}
		}, "model.overrides.num_hidden_layers: 2.5 is invalid: use an integer"},
		{"lora rank", func(c *Config) { c.LoRA.Rank = 0 }, "lora.rank: 0 is invalid: use 1 or more"},
		{"lora alpha", func(c *Config) { c.LoRA.Alpha = -1 }, "lora.alpha: -1 is invalid"},
		{"lora dropout", func(c *Config) { c.LoRA.Dropout = 1 }, "lora.dropout: 1 is invalid: use a number in [0, 1)"},
		{"lora empty targets", func(c *Config) { c.LoRA.TargetModules = nil }, "lora.target_modules is empty"},
		{"lora unknown target", func(c *Config) { c.LoRA.TargetModules = []string{"qproj"} }, `lora.target_modules: LoRA target module "qproj" is not a projection`},
		{"lora duplicate target", func(c *Config) { c.LoRA.TargetModules = []string{"q_proj", "q_proj"} }, "lora.target_modules: LoRA target module \"q_proj\" is listed twice"},
		{"missing train", func(c *Config) { c.Data.Train = "" }, "data.train is missing"},
		{"eval file and fraction", func(c *Config) { c.Data.Eval = "/e.jsonl"; c.Data.EvalFraction = 0.1 }, "data.eval and data.eval_fraction are both set"},
		{"eval fraction one", func(c *Config) { c.Data.EvalFraction = 1 }, "data.eval_fraction: 1 is invalid: use a number in [0, 1)"},
		{"eval fraction NaN", func(c *Config) { c.Data.EvalFraction = math.NaN() }, "data.eval_fraction: NaN is invalid"},
		{"format", func(c *Config) { c.Data.Format = "csv" }, `data.format: "csv" is invalid: use auto, text, alpaca, chat or sharegpt`},
		{"packing", func(c *Config) { c.Data.Packing = "maybe" }, `data.packing: "maybe" is invalid: use auto, on or off`},
		{"seq len", func(c *Config) { c.Data.SeqLen = 1 }, "data.seq_len: 1 is invalid: use 2 or more tokens"},
		{"micro batch size", func(c *Config) { c.Batch.MicroBatchSize = 0 }, "batch.micro_batch_size: 0 is invalid"},
		{"grad accum steps", func(c *Config) { c.Batch.GradAccumSteps = 0 }, "batch.grad_accum_steps: 0 is invalid"},
		{"eval batch size", func(c *Config) { c.Eval.BatchSize = -1 }, "eval.batch_size: -1 is invalid"},
		{"eval max batches", func(c *Config) { c.Eval.MaxBatches = -1 }, "eval.max_batches: -1 is invalid"},
		{"eval every steps", func(c *Config) { c.Eval.EverySteps = -1 }, "eval.every_steps: -1 is invalid"},
		{"checkpoint every steps", func(c *Config) { c.Checkpoint.EverySteps = -1 }, "checkpoint.every_steps: -1 is invalid"},
		{"checkpoint keep", func(c *Config) { c.Checkpoint.Keep = intPointer(-1) }, "checkpoint.keep: -1 is invalid"},
		{"lr zero", func(c *Config) { c.Optimizer.LR = 0 }, "optimizer.lr: 0 is invalid: use a finite number above 0"},
		{"lr infinite", func(c *Config) { c.Optimizer.LR = math.Inf(1) }, "optimizer.lr: +Inf is invalid"},
		{"beta1", func(c *Config) { c.Optimizer.Beta1 = 1 }, "optimizer.beta1: 1 is invalid: use a number in [0, 1)"},
		{"beta2", func(c *Config) { c.Optimizer.Beta2 = -0.1 }, "optimizer.beta2: -0.1 is invalid"},
		{"eps", func(c *Config) { c.Optimizer.Eps = -1 }, "optimizer.eps: -1 is invalid"},
		{"weight decay", func(c *Config) { c.Optimizer.WeightDecay = math.NaN() }, "optimizer.weight_decay: NaN is invalid"},
		{"max grad norm", func(c *Config) { c.Optimizer.MaxGradNorm = floatPointer(-1) }, "optimizer.max_grad_norm: -1 is invalid"},
		{"steps negative", func(c *Config) { c.Schedule.Steps = -1 }, "schedule.steps: -1 is invalid"},
		{"epochs negative", func(c *Config) { c.Schedule.Epochs = -1 }, "schedule.epochs: -1 is invalid"},
		{"steps and epochs", func(c *Config) { c.Schedule.Steps = 10; c.Schedule.Epochs = 1 }, "schedule.steps (10) and schedule.epochs (1) are both set"},
		{"warmup steps negative", func(c *Config) { c.Schedule.WarmupSteps = -1 }, "schedule.warmup_steps: -1 is invalid"},
		{"warmup ratio one", func(c *Config) { c.Schedule.WarmupRatio = 1 }, "schedule.warmup_ratio: 1 is invalid: use a number in [0, 1)"},
		{"warmup steps and ratio", func(c *Config) { c.Schedule.WarmupSteps = 5; c.Schedule.WarmupRatio = 0.1 }, "schedule.warmup_steps (5) and schedule.warmup_ratio (0.1) are both set"},
		{"warmup over steps", func(c *Config) { c.Schedule.Steps = 5; c.Schedule.WarmupSteps = 6 }, "schedule.warmup_steps: 6 is invalid: use at most schedule.steps (5)"},
		{"min lr ratio", func(c *Config) { c.Schedule.MinLRRatio = floatPointer(1.5) }, "schedule.min_lr_ratio: 1.5 is invalid: use a number in [0, 1]"},
		{"nodes zero", func(c *Config) { c.Cluster.Nodes = 0 }, "cluster.nodes: 0 is invalid: use 1 to 4096"},
		{"nodes too many", func(c *Config) { c.Cluster.Nodes = 4097 }, "cluster.nodes: 4097 is invalid"},
		{"bucket mb", func(c *Config) { c.Cluster.BucketMB = 0 }, "cluster.bucket_mb: 0 is invalid"},
		{"wire dtype", func(c *Config) { c.Cluster.WireDType = "fp16" }, `cluster.wire_dtype: "fp16" is invalid: use fp32 or bf16`},
		{"join timeout unparsable", func(c *Config) { c.Cluster.JoinTimeout = "5 minutes" }, `cluster.join_timeout: "5 minutes" is invalid`},
		{"join timeout zero", func(c *Config) { c.Cluster.JoinTimeout = "0s" }, `cluster.join_timeout: "0s" is invalid`},
		{"coordinator", func(c *Config) { c.Cluster.Coordinator = "localhost" }, `cluster.coordinator: "localhost" is invalid: use host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			tt.modify(cfg)
			err := cfg.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
	}{
		{"full mode ignores lora", func(c *Config) { c.Mode = "full"; c.LoRA.Rank = 0 }},
		{"random init with overrides", func(c *Config) {
			c.Mode, c.Model.Init = "full", "random"
			c.Model.Overrides = map[string]any{"hidden_size": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "num_hidden_layers": 2.0}
		}},
		{"eval fraction zero with eval file", func(c *Config) { c.Data.Eval = "/e.jsonl" }},
		{"max grad norm zero", func(c *Config) { c.Optimizer.MaxGradNorm = floatPointer(0) }},
		{"nil pointers", func(c *Config) {
			c.Optimizer.MaxGradNorm, c.Schedule.MinLRRatio, c.Checkpoint.Keep, c.Data.Shuffle = nil, nil, nil, nil
		}},
		{"max nodes", func(c *Config) { c.Cluster.Nodes = 4096 }},
		{"bf16 alias", func(c *Config) { c.Cluster.WireDType = "bfloat16" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			tt.modify(cfg)
			assert.NoError(t, cfg.Validate())
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := validConfig(t)
	cfg.Optimizer.LR = 0
	cfg.Cluster.Nodes = 0
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "optimizer.lr")
	assert.Contains(t, err.Error(), "cluster.nodes")
}
