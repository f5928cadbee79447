package peft_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/peft"
)

func TestAdapterRoundTrip(t *testing.T) {
	for _, dtype := range []checkpoint.DType{checkpoint.F32, checkpoint.BF16, checkpoint.F16} {
		t.Run(string(dtype), func(t *testing.T) {
			dir := t.TempDir()
			want := newRandomAdapter(t, attentionConfig(), dtype, 7)
			require.NoError(t, peft.Write(dir, want))

			got, err := peft.Load(dir, loadGoldenConfig(t))
			require.NoError(t, err)
			assert.Equal(t, want.Config, got.Config)
			require.Len(t, got.Tensors, len(want.Tensors))
			for i := range want.Tensors {
				assert.Equal(t, want.Tensors[i], got.Tensors[i], want.Tensors[i].Name)
			}

			// Writing what was read gives the same bytes.
			again := t.TempDir()
			require.NoError(t, peft.Write(again, got))
			for _, name := range []string{peft.ConfigFile, peft.WeightsFile} {
				first, err := os.ReadFile(filepath.Join(dir, name))
				require.NoError(t, err)
				second, err := os.ReadFile(filepath.Join(again, name))
				require.NoError(t, err)
				assert.Equal(t, first, second, name)
			}
		})
	}
}

func TestAdapterFileLayout(t *testing.T) {
	dir := t.TempDir()
	a := newRandomAdapter(t, attentionConfig(), checkpoint.F32, 1)
	require.NoError(t, peft.Write(dir, a))

	f, err := checkpoint.Open(filepath.Join(dir, peft.WeightsFile))
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, map[string]string{"format": "pt"}, f.Metadata())
	require.Len(t, f.Tensors(), 16, "2 layers × 4 projections × (A, B)")
	for _, name := range []string{
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
		"base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight",
	} {
		_, err := f.Info(name)
		assert.NoError(t, err, name)
	}
	require.NoError(t, f.CheckShape("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 4, 48))
	require.NoError(t, f.CheckShape("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", 64, 4))
	require.NoError(t, f.CheckShape("base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight", 4, 64))
	require.NoError(t, f.CheckShape("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", 32, 4))

	var fields map[string]any
	data, err := os.ReadFile(filepath.Join(dir, peft.ConfigFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &fields))
	assert.Len(t, fields, 24, "the keys of PEFT 0.10 to 0.13")
	assert.Equal(t, "LORA", fields["peft_type"])
	assert.Equal(t, "CAUSAL_LM", fields["task_type"])
	assert.Equal(t, true, fields["inference_mode"])
}

func TestLoadAcceptsDefaultAdapterName(t *testing.T) {
	dir := t.TempDir()
	a := newRandomAdapter(t, attentionConfig(), checkpoint.F32, 3)
	require.NoError(t, peft.WriteConfig(dir, a.Config))
	var tensors []checkpoint.Tensor
	for _, tensor := range a.Tensors {
		name := tensor.Module + ".lora_B.default.weight"
		if tensor.IsA {
			name = tensor.Module + ".lora_A.default.weight"
		}
		tensors = append(tensors, checkpoint.Tensor{Name: "base_model.model." + name, DType: tensor.DType, Shape: tensor.Shape, Data: checkpoint.FromFloat32(tensor.Data)})
	}
	require.NoError(t, checkpoint.Write(filepath.Join(dir, peft.WeightsFile), tensors, nil))

	got, err := peft.Load(dir, loadGoldenConfig(t))
	require.NoError(t, err)
	assert.Equal(t, a.Tensors, got.Tensors, "names are stored without the adapter name")
}

func TestLoadSubsetOfLayers(t *testing.T) {
	cfg := attentionConfig()
	cfg.TargetModules = []string{"q_proj", "mlp.down_proj"}
	cfg.LayersToTransform = []int{1}
	a := newRandomAdapter(t, cfg, checkpoint.F32, 4)
	require.Len(t, a.Tensors, 4)
	assert.Equal(t, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", a.Tensors[0].Name)
	assert.Equal(t, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", a.Tensors[3].Name)
	assert.Equal(t, []int{48, 4}, a.Tensors[3].Shape)

	dir := t.TempDir()
	require.NoError(t, peft.Write(dir, a))
	got, err := peft.Load(dir, loadGoldenConfig(t))
	require.NoError(t, err)
	assert.Equal(t, a.Tensors, got.Tensors)
}

// badAdapter writes a valid adapter to a new directory, lets edit change its tensors and
// returns the directory.
func badAdapter(t *testing.T, edit func(tensors []checkpoint.Tensor) []checkpoint.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	a := newRandomAdapter(t, attentionConfig(), checkpoint.F32, 5)
	require.NoError(t, peft.WriteConfig(dir, a.Config))
	var tensors []checkpoint.Tensor
	for _, tensor := range a.Tensors {
		tensors = append(tensors, checkpoint.Tensor{Name: tensor.Name, DType: tensor.DType, Shape: tensor.Shape, Data: checkpoint.FromFloat32(tensor.Data)})
	}
	require.NoError(t, checkpoint.Write(filepath.Join(dir, peft.WeightsFile), edit(tensors), map[string]string{"format": "pt"}))
	return dir
}

func zeros(name string, dtype checkpoint.DType, shape ...int) checkpoint.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return checkpoint.Tensor{Name: name, DType: dtype, Shape: shape, Data: checkpoint.FromFloat32(make([]float32, n))}
}

func TestLoadRejectsBadTensors(t *testing.T) {
	const qA = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
	const vB = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
	replace := func(name string, with checkpoint.Tensor) func([]checkpoint.Tensor) []checkpoint.Tensor {
		return func(tensors []checkpoint.Tensor) []checkpoint.Tensor {
			for i := range tensors {
				if tensors[i].Name == name {
					tensors[i] = with
				}
			}
			return tensors
		}
	}
	add := func(extra checkpoint.Tensor) func([]checkpoint.Tensor) []checkpoint.Tensor {
		return func(tensors []checkpoint.Tensor) []checkpoint.Tensor { return append(tensors, extra) }
	}
	cases := []struct {
		name   string
		edit   func([]checkpoint.Tensor) []checkpoint.Tensor
		tensor string // empty when either of two tensors may be named
		parts  []string
	}{
		{"wrong in_features", replace(qA, zeros(qA, checkpoint.F32, 4, 40)), qA, []string{"shape [4 40]", "expected [4 48]", "(r, in_features)"}},
		{"wrong rank", replace(vB, zeros(vB, checkpoint.F32, 32, 8)), vB, []string{"shape [32 8]", "expected [32 4]", "r = 4"}},
		{"three dimensions", replace(qA, zeros(qA, checkpoint.F32, 4, 48, 1)), qA, []string{"shape [4 48 1]"}},
		{"missing matrix", func(tensors []checkpoint.Tensor) []checkpoint.Tensor {
			var remaining []checkpoint.Tensor
			for _, tensor := range tensors {
				if tensor.Name != vB {
					remaining = append(remaining, tensor)
				}
			}
			return remaining
		}, vB, []string{"missing", "lora_B", "[32 4]"}},
		{"dora magnitude", add(zeros("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", checkpoint.F32, 64)),
			"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", []string{"unknown tensor", "DoRA"}},
		{"untargeted module", add(zeros("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", checkpoint.F32, 4, 48)),
			"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", []string{"unknown tensor", "does not target model.layers.0.mlp.up_proj"}},
		{"layer beyond base", add(zeros("base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight", checkpoint.F32, 4, 48)),
			"base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight", []string{"unknown tensor", "layer 2"}},
		{"lm_head", add(zeros("base_model.model.lm_head.lora_A.weight", checkpoint.F32, 4, 48)),
			"base_model.model.lm_head.lora_A.weight", []string{"unknown tensor", "lm_head"}},
		{"other adapter name", add(zeros("base_model.model.model.layers.0.self_attn.q_proj.lora_A.other.weight", checkpoint.F32, 4, 48)),
			"base_model.model.model.layers.0.self_attn.q_proj.lora_A.other.weight", []string{"unknown tensor"}},
		{"duplicate with adapter name", add(zeros("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", checkpoint.F32, 4, 48)),
			"", []string{"duplicate of", qA, "lora_A.default.weight"}},
		{"integer dtype", replace(qA, checkpoint.Tensor{Name: qA, DType: checkpoint.I32, Shape: []int{4, 48}, Data: checkpoint.FromBytes(make([]byte, 4*4*48))}),
			qA, []string{"dtype I32"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := badAdapter(t, tc.edit)
			_, err := peft.Load(dir, loadGoldenConfig(t))
			parts := append([]string{filepath.Join(dir, peft.WeightsFile)}, tc.parts...)
			if tc.tensor != "" {
				parts = append(parts, `tensor "`+tc.tensor+`"`)
			}
			requirePEFTError(t, err, peft.ErrTensor, parts...)
		})
	}
}

func TestLoadRejectsUnsupportedOption(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, peft.Write(dir, newRandomAdapter(t, attentionConfig(), checkpoint.F32, 6)))
	path := filepath.Join(dir, peft.ConfigFile)
	var fields map[string]any
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &fields))
	fields["use_dora"] = true
	data, err = json.Marshal(fields)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data, 0o644))

	_, err = peft.Load(dir, loadGoldenConfig(t))
	requirePEFTError(t, err, peft.ErrUnsupported, path, `field "use_dora"`, "DoRA")
}

func TestLoadRejectsMissingFiles(t *testing.T) {
	base := loadGoldenConfig(t)

	noConfig := t.TempDir()
	require.NoError(t, peft.Write(noConfig, newRandomAdapter(t, attentionConfig(), checkpoint.F32, 8)))
	require.NoError(t, os.Remove(filepath.Join(noConfig, peft.ConfigFile)))
	_, err := peft.Load(noConfig, base)
	requirePEFTError(t, err, peft.ErrInvalidConfig, filepath.Join(noConfig, peft.ConfigFile), "not found")

	noWeights := t.TempDir()
	require.NoError(t, peft.Write(noWeights, newRandomAdapter(t, attentionConfig(), checkpoint.F32, 8)))
	require.NoError(t, os.Remove(filepath.Join(noWeights, peft.WeightsFile)))
	_, err = peft.Load(noWeights, base)
	require.ErrorIs(t, err, checkpoint.ErrNotFound)
	assert.ErrorContains(t, err, filepath.Join(noWeights, peft.WeightsFile))
}

func TestLoadRejectsPyTorchWeights(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, peft.Write(dir, newRandomAdapter(t, attentionConfig(), checkpoint.F32, 8)))
	require.NoError(t, os.Rename(filepath.Join(dir, peft.WeightsFile), filepath.Join(dir, "adapter_model.bin")))

	_, err := peft.Load(dir, loadGoldenConfig(t))
	requirePEFTError(t, err, peft.ErrUnsupported, filepath.Join(dir, "adapter_model.bin"),
		"the PyTorch .bin format is not supported", "convert the file to safetensors", "safetensors.torch.save_file")
}

func TestLoadRejectsTruncatedWeights(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, peft.Write(dir, newRandomAdapter(t, attentionConfig(), checkpoint.F32, 9)))
	path := filepath.Join(dir, peft.WeightsFile)
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, info.Size()-100))

	_, err = peft.Load(dir, loadGoldenConfig(t))
	require.ErrorIs(t, err, checkpoint.ErrTruncated)
	assert.ErrorContains(t, err, path)
}

func TestLoadRejectsTargetBeyondBase(t *testing.T) {
	cfg := attentionConfig()
	cfg.LayersToTransform = []int{3}
	dir := t.TempDir()
	require.NoError(t, peft.WriteConfig(dir, cfg))
	require.NoError(t, checkpoint.Write(filepath.Join(dir, peft.WeightsFile), nil, nil))
	_, err := peft.Load(dir, loadGoldenConfig(t))
	requirePEFTError(t, err, peft.ErrBase, filepath.Join(dir, peft.ConfigFile), `field "layers_to_transform"`, "layer 3")
}

func TestCheckTensorsWithoutBase(t *testing.T) {
	cfg := attentionConfig()
	infos := []checkpoint.TensorInfo{
		{Name: "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", DType: checkpoint.F32, Shape: []int{4, 1024}},
		{Name: "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight", DType: checkpoint.F32, Shape: []int{2048, 4}},
	}
	assert.NoError(t, cfg.CheckTensors("a.safetensors", infos, nil))

	infos[1].Shape = []int{2048, 8}
	requirePEFTError(t, cfg.CheckTensors("a.safetensors", infos, nil), peft.ErrTensor, "shape [2048 8]", "expected [any 4]")

	requirePEFTError(t, cfg.CheckTensors("a.safetensors", infos[:1], nil), peft.ErrTensor,
		`tensor "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight"`, "missing")
}

func TestWriteRejectsIncompleteAdapter(t *testing.T) {
	a := newRandomAdapter(t, attentionConfig(), checkpoint.F32, 10)
	a.Tensors = a.Tensors[1:]
	err := peft.Write(t.TempDir(), a)
	requirePEFTError(t, err, peft.ErrTensor, "missing", "lora_A")
}
