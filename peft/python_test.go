package peft_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

const checkScript = "testdata/check_peft_format.py"

// python returns Debian's python3, or skips the test when it is missing.
func python(t *testing.T) string {
	t.Helper()
	for _, path := range []string{"/usr/bin/python3", "python3"} {
		if resolved, err := exec.LookPath(path); err == nil {
			return resolved
		}
	}
	t.Skip("python3 not found: the PEFT format check needs it")
	return ""
}

// requireTorch skips the test unless python imports torch (Debian's python3-torch).
func requireTorch(t *testing.T, py string) {
	t.Helper()
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		t.Skip("python3 cannot import torch (Debian package python3-torch): the merge check needs it")
	}
}

func runCheckScript(t *testing.T, py string, args ...string) (string, error) {
	t.Helper()
	// Reading the script here makes go test's result cache notice when it changes.
	_, err := os.ReadFile(checkScript)
	require.NoError(t, err)
	out, err := exec.Command(py, append([]string{checkScript}, args...)...).CombinedOutput()
	return string(out), err
}

func TestPythonCheckAcceptsWrittenAdapter(t *testing.T) {
	py := python(t)
	cfg := attentionConfig()
	cfg.TargetModules = []string{"q_proj", "self_attn.v_proj", "model.layers.1.mlp.down_proj"}
	cfg.LayersToTransform = []int{1}
	dir := t.TempDir()
	require.NoError(t, peft.Write(dir, newRandomAdapter(t, cfg, checkpoint.F32, 21)))

	out, err := runCheckScript(t, py, dir, "--base-config", goldenConfig)
	require.NoError(t, err, out)
	assert.Contains(t, out, "6 tensors match the 6 LoRA parameters")
	assert.True(t, strings.HasSuffix(out, "OK\n"), out)
}

func TestPythonCheckRejectsBadAdapters(t *testing.T) {
	py := python(t)

	// PEFT's loader inserts the adapter name after "lora_A.", so a key that already has
	// it becomes ...lora_A.default.default.weight and matches no parameter.
	withName := badAdapter(t, func(tensors []checkpoint.Tensor) []checkpoint.Tensor {
		for i := range tensors {
			tensors[i].Name = strings.Replace(tensors[i].Name, ".weight", ".default.weight", 1)
		}
		return tensors
	})
	out, err := runCheckScript(t, py, withName, "--base-config", goldenConfig)
	require.Error(t, err)
	assert.Contains(t, out, "default.default.weight")

	wrongShape := badAdapter(t, func(tensors []checkpoint.Tensor) []checkpoint.Tensor {
		tensors[0] = zeros(tensors[0].Name, checkpoint.F32, tensors[0].Shape[0], tensors[0].Shape[1]+1)
		return tensors
	})
	out, err = runCheckScript(t, py, wrongShape, "--base-config", goldenConfig)
	require.Error(t, err)
	assert.Contains(t, out, "size mismatch")

	extraKey := t.TempDir()
	require.NoError(t, peft.Write(extraKey, newRandomAdapter(t, attentionConfig(), checkpoint.F32, 22)))
	path := filepath.Join(extraKey, peft.ConfigFile)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(data), "\"use_rslora\": false\n}", "\"use_rslora\": false,\n  \"zzz_option\": 1\n}", 1)), 0o644))
	out, err = runCheckScript(t, py, extraKey, "--base-config", goldenConfig)
	require.Error(t, err)
	assert.Contains(t, out, "['zzz_option']")
}

func TestPythonCheckMerge(t *testing.T) {
	py := python(t)
	requireTorch(t, py)
	cfg := attentionConfig()
	cfg.TargetModules = model.ProjectionModules()
	for _, dtype := range []checkpoint.DType{checkpoint.F32, checkpoint.BF16} {
		t.Run(string(dtype), func(t *testing.T) {
			f := newMergeFixture(t, dtype, 16<<10, cfg, checkpoint.F32)
			out := filepath.Join(t.TempDir(), "merged")
			_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{MaxShardSize: 16 << 10})
			require.NoError(t, err)

			output, err := runCheckScript(t, py, f.adapterDir, "--base-config", goldenConfig, "--base-dir", f.baseDir, "--merged-dir", out)
			require.NoError(t, err, output)
			assert.Contains(t, output, "14 adapted weights within")
			assert.True(t, strings.HasSuffix(output, "OK\n"), output)
			t.Log(strings.TrimSpace(output))
		})
	}
}
