package jobconfig

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const fullExample = `job_id: demo
seed: 7
mode: lora
model:
  base: tiny
  init: pretrained
  tokenizer: tok
  frozen_bf16: true
  activation_checkpointing: true
lora:
  rank: 4
  alpha: 8
  dropout: 0.1
  target_modules: [q_proj, v_proj]
data:
  train: train.jsonl
  eval: eval.jsonl
  format: Chat
  seq_len: 256
  packing: "off"
  train_on_all: true
  skip_invalid: true
  shuffle: false
batch:
  micro_batch_size: 2
  grad_accum_steps: 3
optimizer:
  lr: 3e-4
  weight_decay: 0.01
  beta1: 0.8
  beta2: 0.95
  eps: 1e-6
  max_grad_norm: 0
schedule:
  steps: 100
  warmup_steps: 10
  min_lr_ratio: 0
eval:
  every_steps: 20
  max_batches: 5
  batch_size: 8
checkpoint:
  every_steps: 50
  keep: 0
cluster:
  nodes: 2
  bucket_mb: 12.5
  wire_dtype: bfloat16
  join_timeout: 90s
  coordinator: 10.0.0.1:29400
output: runs/demo
max_nonfinite_steps: 5
`

// writeConfig writes content to name in a new temporary directory and returns its path.
func writeConfig(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

func TestParseFullExample(t *testing.T) {
	path := writeConfig(t, "job.yaml", fullExample)
	dir := filepath.Dir(path)

	cfg, err := Load(path)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())

	assert.Equal(t, "demo", cfg.JobID)
	assert.Equal(t, uint64(7), cfg.Seed)
	assert.Equal(t, "lora", cfg.Mode)
	assert.Equal(t, "tiny", cfg.Model.Base)
	assert.Equal(t, filepath.Join(dir, "tok"), cfg.Model.Tokenizer)
	assert.True(t, cfg.Model.FrozenBF16)
	assert.True(t, cfg.Model.Checkpointing)
	assert.Equal(t, LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.1, TargetModules: []string{"q_proj", "v_proj"}}, cfg.LoRA)
	assert.Equal(t, filepath.Join(dir, "train.jsonl"), cfg.Data.Train)
	assert.Equal(t, filepath.Join(dir, "eval.jsonl"), cfg.Data.Eval)
	assert.Equal(t, "chat", cfg.Data.Format)
	assert.Equal(t, 256, cfg.Data.SeqLen)
	assert.Equal(t, "off", cfg.Data.Packing)
	assert.True(t, cfg.Data.TrainOnAll)
	assert.True(t, cfg.Data.SkipInvalid)
	assert.False(t, cfg.Shuffle())
	assert.Equal(t, BatchConfig{MicroBatchSize: 2, GradAccumSteps: 3}, cfg.Batch)
	assert.Equal(t, 3e-4, cfg.Optimizer.LR)
	assert.Equal(t, 0.01, cfg.Optimizer.WeightDecay)
	assert.Equal(t, 0.8, cfg.Optimizer.Beta1)
	assert.Equal(t, 0.95, cfg.Optimizer.Beta2)
	assert.Equal(t, 1e-6, cfg.Optimizer.Eps)
	assert.Equal(t, 0.0, cfg.MaxGradNorm())
	assert.Equal(t, 100, cfg.Schedule.Steps)
	assert.Equal(t, 10, cfg.Schedule.WarmupSteps)
	assert.Equal(t, 0.0, cfg.MinLRRatio())
	assert.Equal(t, EvalConfig{EverySteps: 20, MaxBatches: 5, BatchSize: 8}, cfg.Eval)
	assert.Equal(t, 50, cfg.Checkpoint.EverySteps)
	assert.Equal(t, 0, cfg.KeepCheckpoints())
	assert.Equal(t, 2, cfg.Cluster.Nodes)
	assert.Equal(t, 12.5, cfg.Cluster.BucketMB)
	assert.Equal(t, "bf16", cfg.Cluster.WireDType)
	assert.Equal(t, "90s", cfg.Cluster.JoinTimeout)
	assert.Equal(t, "10.0.0.1:29400", cfg.Cluster.Coordinator)
	assert.Equal(t, filepath.Join(dir, "runs", "demo"), cfg.Output)
	assert.Equal(t, 5, cfg.MaxNonFiniteSteps)
}

func TestParseUnknownKeyNamesLine(t *testing.T) {
	content := "mode: lora\nmodel:\n  base: tiny\noptimzer:\n  lr: 1\n"
	_, err := Parse([]byte(content), "job.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `job.yaml:4: unknown key "optimzer" at the top level`)
	assert.Contains(t, err.Error(), `did you mean "optimizer"?`)
}

func TestParseUnknownNestedKey(t *testing.T) {
	content := "mode: lora\noptimizer:\n  lr: 1\n  betta1: 0.9\n"
	_, err := Parse([]byte(content), "job.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `job.yaml:4: unknown key "betta1" in optimizer: did you mean "beta1"?`)
	assert.Contains(t, err.Error(), "beta2")
}

func TestParseTypeErrorNamesLineAndKey(t *testing.T) {
	content := "mode: lora\nbatch:\n  micro_batch_size: four\n"
	_, err := Parse([]byte(content), "job.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "job.yaml:3: invalid value of batch.micro_batch_size: expected an integer")
	assert.Contains(t, err.Error(), `"four"`)
}

func TestParseTypeErrorLongValue(t *testing.T) {
	content := "mode: lora\noptimizer:\n  lr: a-long-invalid-rate\n"
	_, err := Parse([]byte(content), "job.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "job.yaml:3: invalid value of optimizer.lr: expected a number")
}

func TestParseSyntaxError(t *testing.T) {
	_, err := Parse([]byte("mode: lora\nmodel:\n  base: [tiny\n"), "job.yaml")
	require.Error(t, err)
	assert.Regexp(t, `^job\.yaml:\d+: invalid YAML: `, err.Error())
}

func TestParseEmptyFile(t *testing.T) {
	for _, content := range []string{"", "# only a comment\n", "~\n", "---\n"} {
		_, err := Parse([]byte(content), "job.yaml")
		require.Error(t, err, "content %q", content)
		assert.Contains(t, err.Error(), "job.yaml: the job config is empty", "content %q", content)
	}
}

func TestParseTopLevelList(t *testing.T) {
	_, err := Parse([]byte("- mode\n"), "job.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "job.yaml:1: the job config must be a YAML mapping")
}

func TestParseSecondDocument(t *testing.T) {
	_, err := Parse([]byte("mode: lora\n---\nmode: full\n"), "job.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "second YAML document")
}

func TestParseDuplicateKey(t *testing.T) {
	_, err := Parse([]byte("mode: lora\nmode: full\n"), "job.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "job.yaml:2:")
	assert.Contains(t, err.Error(), "already defined")
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "absent.yaml")
}

func TestParseDefaults(t *testing.T) {
	path := writeConfig(t, "my-job.yml", "mode: lora\nmodel:\n  base: tiny\ndata:\n  train: t.jsonl\n")
	dir := filepath.Dir(path)

	cfg, err := Load(path)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())

	assert.Equal(t, "my-job", cfg.JobID)
	assert.Equal(t, "pretrained", cfg.Model.Init)
	assert.Empty(t, cfg.Model.Tokenizer, "a preset is no tokenizer directory")
	assert.Equal(t, 8, cfg.LoRA.Rank)
	assert.Equal(t, 16.0, cfg.LoRA.Alpha)
	assert.Equal(t, 0.0, cfg.LoRA.Dropout)
	assert.Equal(t, []string{"q_proj", "k_proj", "v_proj", "o_proj"}, cfg.LoRA.TargetModules)
	assert.Equal(t, "auto", cfg.Data.Format)
	assert.Equal(t, "auto", cfg.Data.Packing)
	assert.Equal(t, 512, cfg.Data.SeqLen)
	assert.True(t, cfg.Shuffle())
	assert.Equal(t, 4, cfg.Batch.MicroBatchSize)
	assert.Equal(t, 1, cfg.Batch.GradAccumSteps)
	assert.Equal(t, 1e-4, cfg.Optimizer.LR)
	assert.Equal(t, 0.9, cfg.Optimizer.Beta1)
	assert.Equal(t, 0.999, cfg.Optimizer.Beta2)
	assert.Equal(t, 1e-8, cfg.Optimizer.Eps)
	assert.Equal(t, 0.0, cfg.Optimizer.WeightDecay)
	assert.Equal(t, 1.0, cfg.MaxGradNorm())
	assert.Equal(t, 0.1, cfg.MinLRRatio())
	assert.Equal(t, 4, cfg.Eval.BatchSize, "eval.batch_size defaults to batch.micro_batch_size")
	assert.Equal(t, 2, cfg.KeepCheckpoints())
	assert.Equal(t, 1, cfg.Cluster.Nodes)
	assert.Equal(t, 25.0, cfg.Cluster.BucketMB)
	assert.Equal(t, "fp32", cfg.Cluster.WireDType)
	assert.Equal(t, "5m", cfg.Cluster.JoinTimeout)
	assert.Equal(t, "127.0.0.1:29400", cfg.Cluster.Coordinator)
	assert.Equal(t, 3, cfg.MaxNonFiniteSteps)
	assert.Equal(t, filepath.Join(dir, "out", "my-job"), cfg.Output)
}

func TestParseZeroValuesKept(t *testing.T) {
	content := "mode: lora\nmodel: {base: tiny}\ndata: {train: t.jsonl, shuffle: false}\n" +
		"optimizer: {beta1: 0, eps: 0, max_grad_norm: 0}\nschedule: {min_lr_ratio: 0}\ncheckpoint: {keep: 0}\n"
	cfg, err := Parse([]byte(content), "job.yaml")
	require.NoError(t, err)
	assert.Equal(t, 0.0, cfg.Optimizer.Beta1)
	assert.Equal(t, 0.0, cfg.Optimizer.Eps)
	assert.Equal(t, 0.0, cfg.MaxGradNorm())
	assert.Equal(t, 0.0, cfg.MinLRRatio())
	assert.Equal(t, 0, cfg.KeepCheckpoints())
	assert.False(t, cfg.Shuffle())
}

func TestParseNullKeepsDefaults(t *testing.T) {
	content := "mode: lora\nmodel: {base: tiny, init: ~}\ndata: {train: t.jsonl}\noptimizer: {max_grad_norm: ~}\n"
	cfg, err := Parse([]byte(content), "job.yaml")
	require.NoError(t, err)
	assert.Equal(t, "pretrained", cfg.Model.Init)
	assert.Equal(t, 1.0, cfg.MaxGradNorm())
	require.NotNil(t, cfg.Optimizer.MaxGradNorm, "Resolve fills a null pointer")
}

func TestResolvePaths(t *testing.T) {
	dir := t.TempDir()
	modelDir := filepath.Join(dir, "models", "qwen")
	require.NoError(t, os.MkdirAll(modelDir, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "small"), 0o755))
	absoluteTrain := filepath.Join(t.TempDir(), "train.jsonl")

	tests := []struct {
		name, base, wantBase, wantTokenizer string
	}{
		{"relative directory", "models/qwen", modelDir, modelDir},
		{"dot relative directory", "./models/qwen", modelDir, modelDir},
		{"preset", "qwen3-0.6b", "qwen3-0.6b", ""},
		{"preset in upper case", "Tiny", "Tiny", ""},
		{"preset shadowing a directory", "small", "small", ""},
		{"preset name with separator", "./small", filepath.Join(dir, "small"), filepath.Join(dir, "small")},
		{"bare missing name", "my-model", filepath.Join(dir, "my-model"), ""},
		{"absolute", modelDir, modelDir, modelDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := "mode: lora\nmodel:\n  base: " + tt.base + "\ndata:\n  train: " + absoluteTrain + "\n  eval: ../e.jsonl\n"
			cfg, err := Parse([]byte(content), filepath.Join(dir, "job.yaml"))
			require.NoError(t, err)
			assert.Equal(t, tt.wantBase, cfg.Model.Base)
			assert.Equal(t, tt.wantTokenizer, cfg.Model.Tokenizer)
			assert.Equal(t, absoluteTrain, cfg.Data.Train)
			assert.Equal(t, filepath.Join(filepath.Dir(dir), "e.jsonl"), cfg.Data.Eval)
		})
	}
}

func TestResolveIsIdempotent(t *testing.T) {
	path := writeConfig(t, "job.yaml", fullExample)
	cfg, err := Load(path)
	require.NoError(t, err)
	before := cfg.YAML()
	require.NoError(t, cfg.Resolve(t.TempDir()))
	assert.Equal(t, before, cfg.YAML())
}

func TestYAMLRoundTrip(t *testing.T) {
	path := writeConfig(t, "job.yaml", fullExample)
	cfg, err := Load(path)
	require.NoError(t, err)

	again, err := Parse([]byte(cfg.YAML()), filepath.Join(t.TempDir(), "other.yaml"))
	require.NoError(t, err)
	assert.Equal(t, cfg.Hash(), again.Hash())
	assert.Equal(t, cfg.Output, again.Output)
}
