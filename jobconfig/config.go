// Package jobconfig reads the YAML configuration of a training job, fills in
// defaults, validates it and converts it into the options of the packages that
// run the job.
package jobconfig

// Config is the resolved configuration of one training job. Every node of a job
// must resolve the same Config, which the coordinator checks through Hash.
type Config struct {
	// JobID names the job in logs, metrics and collective frames. Default: the base
	// name of the config file without its extension.
	JobID string `yaml:"job_id" json:"job_id"`
	// Seed seeds weight initialization, the data order and the eval split.
	Seed uint64 `yaml:"seed" json:"seed"`

	Model      ModelConfig      `yaml:"model" json:"model"`
	Mode       string           `yaml:"mode" json:"mode"` // "full" or "lora"
	LoRA       LoRAConfig       `yaml:"lora" json:"lora"`
	Data       DataConfig       `yaml:"data" json:"data"`
	Batch      BatchConfig      `yaml:"batch" json:"batch"`
	Optimizer  OptimizerConfig  `yaml:"optimizer" json:"optimizer"`
	Schedule   ScheduleConfig   `yaml:"schedule" json:"schedule"`
	Eval       EvalConfig       `yaml:"eval" json:"eval"`
	Checkpoint CheckpointConfig `yaml:"checkpoint" json:"checkpoint"`
	Cluster    ClusterConfig    `yaml:"cluster" json:"cluster"`

	// Output is the folder where rank 0 writes metrics.jsonl, checkpoints and the
	// final model or adapter. Relative paths are relative to the config file.
	Output string `yaml:"output" json:"-"`
	// MaxNonFiniteSteps stops the job after this many steps in a row whose loss or
	// gradient norm was not finite. Default 3.
	MaxNonFiniteSteps int `yaml:"max_nonfinite_steps" json:"max_nonfinite_steps"`

	// path is the config file that Load or Parse read, which gives the default
	// JobID. It is empty for a Config built in code.
	path string
}

// ModelConfig selects the base model.
type ModelConfig struct {
	// Base is a Hugging Face model directory with config.json and safetensors
	// weights, or a preset name (tiny, small, qwen3-0.6b, ...) or a config.json path
	// when Init is "random". Relative paths are relative to the config file.
	Base string `yaml:"base" json:"base"`
	// Init is "pretrained" (load the weights of Base, the default) or "random"
	// (initialize from Seed, for training from scratch, full mode only).
	Init string `yaml:"init" json:"init"`
	// Overrides change fields of the resolved model config (for example hidden_size)
	// when Init is "random", with the names of config.json.
	Overrides map[string]any `yaml:"overrides" json:"overrides,omitempty"`
	// Tokenizer is a folder with tokenizer.json (and tokenizer_config.json). Default:
	// Base when it is a directory. Relative paths are relative to the config file.
	Tokenizer string `yaml:"tokenizer" json:"tokenizer"`
	// FrozenBF16 stores frozen weights in bfloat16 (LoRA mode only).
	FrozenBF16 bool `yaml:"frozen_bf16" json:"frozen_bf16"`
	// Checkpointing recomputes activations in backward to save memory.
	Checkpointing bool `yaml:"activation_checkpointing" json:"activation_checkpointing"`
}

// LoRAConfig sets the adapters in LoRA mode, with PEFT's meaning of each field.
type LoRAConfig struct {
	Rank          int      `yaml:"rank" json:"rank"`                     // default 8
	Alpha         float64  `yaml:"alpha" json:"alpha"`                   // default 16
	Dropout       float64  `yaml:"dropout" json:"dropout"`               // default 0
	TargetModules []string `yaml:"target_modules" json:"target_modules"` // default q,k,v,o
}

// DataConfig selects the dataset and how it becomes rows.
type DataConfig struct {
	// Train is the training file (.txt, .jsonl, ...). Relative to the config file.
	Train string `yaml:"train" json:"train"`
	// Eval is a separate eval file; EvalFraction splits one off Train instead. Set
	// at most one; neither means no evaluation.
	Eval         string  `yaml:"eval" json:"eval"`
	EvalFraction float64 `yaml:"eval_fraction" json:"eval_fraction"`
	// Format is auto (default), text, alpaca, chat or sharegpt.
	Format string `yaml:"format" json:"format"`
	// SeqLen is the row length in tokens. Default 512.
	SeqLen int `yaml:"seq_len" json:"seq_len"`
	// Packing is auto (default), on or off, as data.ParsePacking accepts.
	Packing string `yaml:"packing" json:"packing"`
	// TrainOnAll trains on prompt tokens too instead of masking them.
	TrainOnAll bool `yaml:"train_on_all" json:"train_on_all"`
	// SkipInvalid skips invalid records with a warning instead of failing.
	SkipInvalid bool `yaml:"skip_invalid" json:"skip_invalid"`
	// Shuffle permutes rows every epoch. Default true.
	Shuffle *bool `yaml:"shuffle" json:"shuffle"`
}

// BatchConfig sets the batch sizes. The global batch is
// MicroBatchSize × GradAccumSteps × world size rows.
type BatchConfig struct {
	// MicroBatchSize is the number of rows per forward/backward on one rank. Default 4.
	MicroBatchSize int `yaml:"micro_batch_size" json:"micro_batch_size"`
	// GradAccumSteps is the number of micro-batches per optimizer step. Default 1.
	GradAccumSteps int `yaml:"grad_accum_steps" json:"grad_accum_steps"`
}

// OptimizerConfig sets AdamW and clipping.
type OptimizerConfig struct {
	LR          float64 `yaml:"lr" json:"lr"`                     // peak learning rate, default 1e-4
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay"` // default 0
	Beta1       float64 `yaml:"beta1" json:"beta1"`               // default 0.9
	Beta2       float64 `yaml:"beta2" json:"beta2"`               // default 0.999
	Eps         float64 `yaml:"eps" json:"eps"`                   // default 1e-8
	// MaxGradNorm clips the global gradient norm; 0 turns clipping off. Default 1.
	MaxGradNorm *float64 `yaml:"max_grad_norm" json:"max_grad_norm"`
}

// ScheduleConfig sets the number of steps and the learning-rate schedule.
type ScheduleConfig struct {
	// Steps is the number of optimizer steps. Either Steps or Epochs; default: one epoch.
	Steps  int     `yaml:"steps" json:"steps"`
	Epochs float64 `yaml:"epochs" json:"epochs"`
	// WarmupSteps of linear warmup, or WarmupRatio of Steps. Default 0.
	WarmupSteps int     `yaml:"warmup_steps" json:"warmup_steps"`
	WarmupRatio float64 `yaml:"warmup_ratio" json:"warmup_ratio"`
	// MinLRRatio is the floor of the cosine decay as a fraction of LR. Default 0.1.
	MinLRRatio *float64 `yaml:"min_lr_ratio" json:"min_lr_ratio"`
}

// EvalConfig sets periodic evaluation on the held-out rows.
type EvalConfig struct {
	// EverySteps evaluates after every this many steps and after the last; 0 only
	// after the last. Default 0.
	EverySteps int `yaml:"every_steps" json:"every_steps"`
	// AtStart also evaluates before the first step of a new run, which gives the
	// loss curve its starting point. Default false.
	AtStart bool `yaml:"at_start" json:"at_start"`
	// MaxBatches bounds the eval micro-batches per rank; 0 evaluates every row.
	MaxBatches int `yaml:"max_batches" json:"max_batches"`
	// BatchSize is the rows per eval micro-batch. Default: Batch.MicroBatchSize.
	BatchSize int `yaml:"batch_size" json:"batch_size"`
}

// CheckpointConfig sets when rank 0 writes checkpoints.
type CheckpointConfig struct {
	// EverySteps checkpoints after every this many steps and after the last; 0 only
	// after the last. Default 0.
	EverySteps int `yaml:"every_steps" json:"every_steps"`
	// Keep is the number of most recent checkpoints kept; 0 keeps all. Default 2.
	Keep *int `yaml:"keep" json:"keep"`
}

// ClusterConfig sets the nodes and the network.
type ClusterConfig struct {
	// Nodes is the world size. Default 1.
	Nodes int `yaml:"nodes" json:"nodes"`
	// BucketMB is the largest gradient bucket in MiB of fp32 gradients. Default 25.
	BucketMB float64 `yaml:"bucket_mb" json:"bucket_mb"`
	// WireDType is the element type of gradients on the wire: fp32 (default) or bf16.
	WireDType string `yaml:"wire_dtype" json:"wire_dtype"`
	// JoinTimeout bounds rendezvous, as a Go duration. Default "5m".
	JoinTimeout string `yaml:"join_timeout" json:"join_timeout"`
	// MaxRestarts is how many times the ring may re-form after a lost node, as
	// torchrun's --max-restarts. A survivor's state then continues the job on a
	// replacement node. Default 0: the first lost node fails the job.
	// Coordinator-only: not hashed.
	MaxRestarts int `yaml:"max_restarts" json:"max_restarts"`
	// Coordinator is the host:port of the coordinator's gRPC service for nodes
	// started by hand. Default "127.0.0.1:29400". Node-local: not hashed.
	Coordinator string `yaml:"coordinator" json:"-"`
}
