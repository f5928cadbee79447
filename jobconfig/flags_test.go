package jobconfig

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"
)

// runWithFlags runs a cli.App with the config flags and returns the config that
// LoadWithFlags built from path and args.
func runWithFlags(t *testing.T, path string, args ...string) (*Config, error) {
	t.Helper()
	var cfg *Config
	var loadErr error
	app := &cli.App{
		Name:  "train",
		Flags: Flags(),
		Action: func(c *cli.Context) error {
			cfg, loadErr = LoadWithFlags(c, path)
			return nil
		},
	}
	require.NoError(t, app.Run(append([]string{"train"}, args...)))
	return cfg, loadErr
}

func TestFlagsCoverEveryLeaf(t *testing.T) {
	names := map[string]bool{}
	for _, f := range Flags() {
		for _, name := range f.Names() {
			assert.False(t, names[name], "duplicate flag --%s", name)
			names[name] = true
		}
	}
	for _, l := range configLeaves() {
		if l.path == "model.overrides" {
			continue
		}
		assert.True(t, names[flagName(l.path)], "no flag for %s", l.path)
		assert.NotEmpty(t, flagDescriptions[l.path], "no description for %s", l.path)
	}
	for _, name := range []string{"optimizer-lr", "lora-rank", "lora-target-modules", "data-seq-len",
		"batch-micro-batch-size", "schedule-steps", "cluster-nodes", "cluster-bucket-mb",
		"cluster-wire-dtype", "output", "seed", "mode", "model-base", "model-init", "job-id", "set"} {
		assert.True(t, names[name], "missing --%s", name)
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	path := writeConfig(t, "job.yaml", fullExample)
	workingDir, err := os.Getwd()
	require.NoError(t, err)

	cfg, err := runWithFlags(t, path,
		"--optimizer-lr", "5e-5",
		"--lora-rank", "32",
		"--lora-target-modules", "q_proj, k_proj",
		"--data-seq-len", "128",
		"--batch-micro-batch-size", "1",
		"--cluster-nodes", "4",
		"--cluster-wire-dtype", "fp32",
		"--seed", "99",
		"--data-shuffle=true",
		"--optimizer-max-grad-norm", "0.5",
		"--data-train", "other.jsonl",
		"--output", "flag-out",
	)
	require.NoError(t, err)
	assert.Equal(t, 5e-5, cfg.Optimizer.LR)
	assert.Equal(t, 32, cfg.LoRA.Rank)
	assert.Equal(t, []string{"q_proj", "k_proj"}, cfg.LoRA.TargetModules)
	assert.Equal(t, 128, cfg.Data.SeqLen)
	assert.Equal(t, 1, cfg.Batch.MicroBatchSize)
	assert.Equal(t, 4, cfg.Cluster.Nodes)
	assert.Equal(t, "fp32", cfg.Cluster.WireDType)
	assert.Equal(t, uint64(99), cfg.Seed)
	assert.True(t, cfg.Shuffle())
	assert.Equal(t, 0.5, cfg.MaxGradNorm())
	assert.Equal(t, filepath.Join(workingDir, "other.jsonl"), cfg.Data.Train, "flag paths are relative to the working directory")
	assert.Equal(t, filepath.Join(workingDir, "flag-out"), cfg.Output)

	// Keys without a flag keep the file's values.
	assert.Equal(t, 3, cfg.Batch.GradAccumSteps)
	assert.Equal(t, 8, cfg.Eval.BatchSize)
	assert.Equal(t, filepath.Join(filepath.Dir(path), "eval.jsonl"), cfg.Data.Eval)
}

func TestFlagsDefaultJobIDAndOutput(t *testing.T) {
	path := writeConfig(t, "run7.yaml", "mode: lora\nmodel: {base: tiny}\ndata: {train: t.jsonl}\n")
	cfg, err := runWithFlags(t, path, "--job-id", "renamed")
	require.NoError(t, err)
	assert.Equal(t, "renamed", cfg.JobID)
	assert.Equal(t, filepath.Join(filepath.Dir(path), "out", "renamed"), cfg.Output)
}

func TestFlagsWithoutFile(t *testing.T) {
	cfg, err := runWithFlags(t, "", "--mode", "full", "--model-base", "tiny", "--data-train", "/d/t.jsonl", "--job-id", "cli")
	require.NoError(t, err)
	assert.Equal(t, "full", cfg.Mode)
	assert.Equal(t, "tiny", cfg.Model.Base)
}

func TestFlagsValidateAfterOverride(t *testing.T) {
	path := writeConfig(t, "job.yaml", fullExample)
	_, err := runWithFlags(t, path, "--cluster-nodes", "0")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cluster.nodes: 0 is invalid")
}

func TestSetFlag(t *testing.T) {
	path := writeConfig(t, "job.yaml", "mode: full\nmodel: {base: tiny, init: random}\ndata: {train: t.jsonl}\n")
	cfg, err := runWithFlags(t, path,
		"--set", "optimizer.lr=3e-4",
		"--set", "model.overrides.hidden_size=128",
		"--set", "model.overrides.rms_norm_eps=1e-5",
		"--set", "lora.target_modules=[q_proj, v_proj]",
		"--set", "data.shuffle=false",
		"--set", "data.format=chat",
		"--set", "lora.target_modules=q_proj,k_proj",
		"--set", "checkpoint.keep=5",
		"--set", "cluster.join_timeout=30s",
		"--optimizer-lr", "1e-3",
	)
	require.NoError(t, err)
	assert.Equal(t, 3e-4, cfg.Optimizer.LR, "--set applies after the other flags")
	assert.Equal(t, map[string]any{"hidden_size": 128, "rms_norm_eps": 1e-5}, cfg.Model.Overrides)
	assert.Equal(t, []string{"q_proj", "k_proj"}, cfg.LoRA.TargetModules, "the last --set of a key wins")
	assert.Equal(t, "chat", cfg.Data.Format)
	assert.False(t, cfg.Shuffle())
	assert.Equal(t, 5, cfg.KeepCheckpoints())
	assert.Equal(t, "30s", cfg.Cluster.JoinTimeout)

	modelConfig, err := cfg.ModelConfig()
	require.NoError(t, err)
	assert.Equal(t, 128, modelConfig.HiddenSize)
}

func TestSetRejects(t *testing.T) {
	tests := []struct{ assignment, want string }{
		{"optimizer.lr", "expected key.path=value"},
		{"optimizer.lrr=1", `unknown config key "optimizer.lrr": did you mean "optimizer.lr"?`},
		{"optimizer.lr=fast", `invalid value "fast" for optimizer.lr: use a number`},
		{"lora.rank=", `invalid value "" for lora.rank: the value is empty`},
		{"data.shuffle=maybe", "use true or false"},
		{"model.overrides=1", "model.overrides.KEY=VALUE"},
		{"model.overrides.=1", "model.overrides.KEY=VALUE"},
		{"seed=-1", "use an integer of 0 or more"},
	}
	for _, tt := range tests {
		t.Run(tt.assignment, func(t *testing.T) {
			cfg := Default()
			err := cfg.Set(tt.assignment)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestSetThroughAppReportsFlag(t *testing.T) {
	path := writeConfig(t, "job.yaml", fullExample)
	_, err := runWithFlags(t, path, "--set", "nodes=2")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--set nodes=2: unknown config key")
}

func TestSetPathRelativeToWorkingDirectory(t *testing.T) {
	workingDir, err := os.Getwd()
	require.NoError(t, err)
	cfg := Default()
	require.NoError(t, cfg.Set("model.base=models/x"))
	require.NoError(t, cfg.Set("model.tokenizer=tok"))
	assert.Equal(t, filepath.Join(workingDir, "models", "x"), cfg.Model.Base)
	assert.Equal(t, filepath.Join(workingDir, "tok"), cfg.Model.Tokenizer)

	require.NoError(t, cfg.Set("model.base=small"))
	assert.Equal(t, "small", cfg.Model.Base, "presets stay names")
}

func TestSetFlowList(t *testing.T) {
	cfg := Default()
	require.NoError(t, cfg.Set("lora.target_modules=[q_proj, v_proj]"))
	assert.Equal(t, []string{"q_proj", "v_proj"}, cfg.LoRA.TargetModules)
}
