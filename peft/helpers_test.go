package peft_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

// goldenConfig is a small Qwen3 config.json: vocab 250, hidden 48, 2 layers, 4 heads of
// 16, 2 key/value heads, intermediate 80, tied embeddings.
const goldenConfig = "../model/testdata/golden/config.json"

// tokenizerFiles are the small non-weight files that a merge must copy.
var tokenizerFiles = map[string]string{
	"tokenizer.json":         `{"version": "1.0", "model": {"type": "BPE"}}`,
	"tokenizer_config.json":  `{"eos_token": "<|im_end|>"}`,
	"generation_config.json": `{"do_sample": true, "temperature": 0.6}`,
	"vocab.json":             `{"a": 0}`,
	"merges.txt":             "#version: 0.2\na b\n",
}

func loadGoldenConfig(t *testing.T) model.Config {
	t.Helper()
	cfg, err := model.LoadConfig(goldenConfig)
	require.NoError(t, err)
	return cfg
}

// roundTo returns v rounded to dtype and widened back, the value that a file of that
// dtype stores.
func roundTo(v float32, dtype checkpoint.DType) float32 {
	switch dtype {
	case checkpoint.BF16:
		return checkpoint.BF16ToFloat32(checkpoint.Float32ToBF16(v))
	case checkpoint.F16:
		return checkpoint.F16ToFloat32(checkpoint.Float32ToF16(v))
	}
	return v
}

// writeBase writes a Qwen3 model with random weights of dtype to dir: config.json, the
// weights (sharded when maxShard is small) and tokenizer files. It returns the stored
// values by tensor name.
func writeBase(t *testing.T, dir string, dtype checkpoint.DType, maxShard int64, seed uint64) map[string][]float32 {
	t.Helper()
	cfg := loadGoldenConfig(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	values := map[string][]float32{}
	var tensors []checkpoint.Tensor
	for _, p := range cfg.Params() {
		data := make([]float32, p.NumElements())
		for i := range data {
			data[i] = roundTo(float32(rng.NormFloat64()*0.2), dtype)
		}
		values[p.Name] = data
		tensors = append(tensors, checkpoint.Tensor{Name: p.Name, DType: dtype, Shape: p.Shape, Data: checkpoint.FromFloat32(data)})
	}
	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: maxShard}))

	configJSON, err := os.ReadFile(goldenConfig)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, model.ConfigFile), configJSON, 0o644))
	for name, content := range tokenizerFiles {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	return values
}

// newRandomAdapter returns an adapter for the golden config with random matrices of
// dtype. lora_B is nonzero, unlike PEFT's initialization, so the merge changes the
// weights.
func newRandomAdapter(t *testing.T, cfg peft.Config, dtype checkpoint.DType, seed uint64) *peft.Adapter {
	t.Helper()
	a, err := peft.NewAdapter(cfg, loadGoldenConfig(t))
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := range a.Tensors {
		a.Tensors[i].DType = dtype
		for j := range a.Tensors[i].Data {
			a.Tensors[i].Data[j] = roundTo(float32(rng.NormFloat64()*0.1), dtype)
		}
	}
	return a
}

func attentionConfig() peft.Config {
	return peft.Config{
		Rank: 4, Alpha: 8, Dropout: 0.05,
		TargetModules:       []string{"q_proj", "k_proj", "v_proj", "o_proj"},
		BaseModelNameOrPath: "Qwen/Qwen3-0.6B",
	}
}

// readModel reads every tensor of a model directory as float32, with its dtype.
func readModel(t *testing.T, dir string) (map[string][]float32, map[string]checkpoint.DType) {
	t.Helper()
	m, err := checkpoint.OpenModel(dir)
	require.NoError(t, err)
	defer m.Close()
	values := map[string][]float32{}
	dtypes := map[string]checkpoint.DType{}
	for _, info := range m.Tensors() {
		data := make([]float32, info.NumElements())
		require.NoError(t, m.ReadFloat32(info.Name, data), info.Name)
		values[info.Name] = data
		dtypes[info.Name] = info.DType
	}
	return values, dtypes
}

// referenceMerge computes W + scaling·B·A in float64 with plain loops, summing over the
// rank in index order.
func referenceMerge(w, a, b []float32, out, in, rank int, scaling float64) []float64 {
	merged := make([]float64, out*in)
	for i := 0; i < out; i++ {
		for j := 0; j < in; j++ {
			sum := 0.0
			for k := 0; k < rank; k++ {
				sum += float64(b[i*rank+k]) * float64(a[k*in+j])
			}
			merged[i*in+j] = float64(w[i*in+j]) + float64(scaling*sum)
		}
	}
	return merged
}

// requirePEFTError checks that err is a *peft.Error of kind whose message contains every
// one of parts.
func requirePEFTError(t *testing.T, err error, kind error, parts ...string) {
	t.Helper()
	require.Error(t, err)
	var e *peft.Error
	require.True(t, errors.As(err, &e), "error %q is not a *peft.Error", err)
	assert.ErrorIs(t, err, kind)
	for _, part := range parts {
		assert.Contains(t, err.Error(), part)
	}
}
