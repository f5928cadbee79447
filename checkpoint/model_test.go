package checkpoint_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
)

// qwenLikeTensors returns a few tensors named like a Qwen3 checkpoint, with their values.
func qwenLikeTensors() ([]checkpoint.Tensor, map[string][]float32) {
	shapes := []struct {
		name  string
		dtype checkpoint.DType
		shape []int
	}{
		{"model.embed_tokens.weight", checkpoint.BF16, []int{64, 16}},
		{"model.layers.0.self_attn.q_proj.weight", checkpoint.BF16, []int{16, 16}},
		{"model.layers.0.input_layernorm.weight", checkpoint.F32, []int{16}},
		{"model.layers.0.mlp.down_proj.weight", checkpoint.F16, []int{16, 48}},
		{"model.norm.weight", checkpoint.BF16, []int{16}},
		{"lm_head.weight", checkpoint.BF16, []int{64, 16}},
	}
	var tensors []checkpoint.Tensor
	want := make(map[string][]float32)
	for i, s := range shapes {
		n := 1
		for _, d := range s.shape {
			n *= d
		}
		values := randomFloat32s(n, uint64(100+i))
		tensors = append(tensors, checkpoint.Tensor{Name: s.name, DType: s.dtype, Shape: s.shape, Data: checkpoint.FromFloat32(values)})
		stored := make([]float32, n)
		for j, v := range values {
			switch s.dtype {
			case checkpoint.BF16:
				stored[j] = checkpoint.BF16ToFloat32(checkpoint.Float32ToBF16(v))
			case checkpoint.F16:
				stored[j] = checkpoint.F16ToFloat32(checkpoint.Float32ToF16(v))
			default:
				stored[j] = v
			}
		}
		want[s.name] = stored
	}
	return tensors, want
}

func TestWriteModelSingleFile(t *testing.T) {
	dir := t.TempDir()
	tensors, want := qwenLikeTensors()
	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{}))

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	assert.Equal(t, checkpoint.SingleFileName, entries[0].Name())

	m, err := checkpoint.OpenModel(dir)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, filepath.Join(dir, checkpoint.SingleFileName), m.Path())
	assert.Equal(t, map[string]string{"format": "pt"}, m.Metadata(), "transformers needs format pt")
	assert.Nil(t, m.IndexMetadata())
	assert.Equal(t, want, readAllFloat32(t, m))
}

func TestWriteModelShards(t *testing.T) {
	dir := t.TempDir()
	tensors, want := qwenLikeTensors()
	// Sizes in bytes, in order: 2048, 512, 64, 1536, 32, 2048.
	opts := checkpoint.ModelOptions{MaxShardSize: 2100, Metadata: map[string]string{"producer": "ringtune"}}
	require.NoError(t, checkpoint.WriteModel(dir, tensors, opts))

	indexBytes, err := os.ReadFile(filepath.Join(dir, checkpoint.IndexFileName))
	require.NoError(t, err)
	// The layout of Python's json.dumps(index, indent=2, sort_keys=True) + "\n".
	wantIndex := `{
  "metadata": {
    "total_parameters": 3104,
    "total_size": 6240
  },
  "weight_map": {
    "lm_head.weight": "model-00004-of-00004.safetensors",
    "model.embed_tokens.weight": "model-00001-of-00004.safetensors",
    "model.layers.0.input_layernorm.weight": "model-00002-of-00004.safetensors",
    "model.layers.0.mlp.down_proj.weight": "model-00003-of-00004.safetensors",
    "model.layers.0.self_attn.q_proj.weight": "model-00002-of-00004.safetensors",
    "model.norm.weight": "model-00003-of-00004.safetensors"
  }
}
`
	assert.Equal(t, wantIndex, string(indexBytes))

	m, err := checkpoint.OpenModel(dir)
	require.NoError(t, err)
	defer m.Close()
	var files []string
	for i := 1; i <= 4; i++ {
		files = append(files, filepath.Join(dir, fmt.Sprintf("model-%05d-of-00004.safetensors", i)))
	}
	assert.Equal(t, files, m.Files())
	assert.Equal(t, map[string]string{"format": "pt", "producer": "ringtune"}, m.Metadata())
	assert.Equal(t, json.Number("6240"), m.IndexMetadata()["total_size"])
	assert.Equal(t, want, readAllFloat32(t, m))

	info, err := m.Info("model.norm.weight")
	require.NoError(t, err)
	assert.Equal(t, files[2], info.Path)
	assert.Equal(t, []string{
		"model.embed_tokens.weight",
		"model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight",
		"model.norm.weight", "model.layers.0.mlp.down_proj.weight",
		"lm_head.weight",
	}, names(m.Tensors()), "shards in name order, tensors in data order within each")

	// The index file path opens the same model.
	byIndex, err := checkpoint.OpenModel(filepath.Join(dir, checkpoint.IndexFileName))
	require.NoError(t, err)
	defer byIndex.Close()
	assert.Len(t, byIndex.Tensors(), 6)
}

// The expected split is test_multiple_shards in huggingface_hub
// (tests/test_serialization.py): sizes 6, 10, 30, 2, 2 with a limit of 10 give
// shards [layer_1], [layer_3], [layer_2], [layer_4, layer_5].
func TestWriteModelSplitLikeHub(t *testing.T) {
	dir := t.TempDir()
	var tensors []checkpoint.Tensor
	for i, size := range []int{6, 10, 30, 2, 2} {
		tensors = append(tensors, checkpoint.Tensor{
			Name: fmt.Sprintf("layer_%d", i+1), DType: checkpoint.U8, Shape: []int{size},
			Data: checkpoint.FromBytes(make([]byte, size)),
		})
	}
	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: 10}))

	var index struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	data, err := os.ReadFile(filepath.Join(dir, checkpoint.IndexFileName))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &index))
	assert.Equal(t, map[string]string{
		"layer_1": "model-00001-of-00004.safetensors",
		"layer_3": "model-00002-of-00004.safetensors",
		"layer_2": "model-00003-of-00004.safetensors",
		"layer_4": "model-00004-of-00004.safetensors",
		"layer_5": "model-00004-of-00004.safetensors",
	}, index.WeightMap)
	assert.Equal(t, int64(50), index.Metadata["total_size"])
}

func TestWriteModelRemovesStaleFiles(t *testing.T) {
	dir := t.TempDir()
	tensors, want := qwenLikeTensors()
	for _, keep := range []string{"config.json", "model-extra.safetensors", "tokenizer.json"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, keep), []byte("{}"), 0o644))
	}
	listWeights := func() []string {
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}

	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: 600}))
	assert.Contains(t, listWeights(), "model-00005-of-00005.safetensors")

	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: 2100}))
	assert.Equal(t, []string{
		"config.json", "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
		"model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors", "model-extra.safetensors",
		"model.safetensors.index.json", "tokenizer.json",
	}, listWeights())

	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{}))
	assert.Equal(t, []string{"config.json", "model-extra.safetensors", "model.safetensors", "tokenizer.json"}, listWeights())

	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: 2100}))
	assert.NotContains(t, listWeights(), "model.safetensors", "a stale single file would shadow the shards in transformers")

	m, err := checkpoint.OpenModel(dir)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, want, readAllFloat32(t, m))
}

func TestWriteModelKeepsGivenFormat(t *testing.T) {
	dir := t.TempDir()
	tensors, _ := qwenLikeTensors()
	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{Metadata: map[string]string{"format": "mlx"}}))
	m, err := checkpoint.OpenModel(dir)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, map[string]string{"format": "mlx"}, m.Metadata())
}

func TestWriteModelRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	tensors, _ := qwenLikeTensors()
	err := checkpoint.WriteModel(dir, append(tensors, tensors[0]), checkpoint.ModelOptions{MaxShardSize: 600})
	requireError(t, err, checkpoint.ErrInvalidTensor, dir, `"model.embed_tokens.weight"`, "duplicate")
	entries, _ := os.ReadDir(dir)
	assert.Empty(t, entries, "nothing is written when validation fails")

	err = checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: -1})
	requireError(t, err, checkpoint.ErrInvalidTensor, "MaxShardSize is -1")
}

func TestCopyModelConvertsDTypes(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	tensors, want := qwenLikeTensors()
	require.NoError(t, checkpoint.WriteModel(src, tensors, checkpoint.ModelOptions{MaxShardSize: 2100}))
	in, err := checkpoint.OpenModel(src)
	require.NoError(t, err)
	defer in.Close()

	var copies []checkpoint.Tensor
	for _, info := range in.Tensors() {
		copies = append(copies, checkpoint.Tensor{Name: info.Name, DType: checkpoint.F32, Shape: info.Shape, Data: checkpoint.FromTensor(in, info.Name)})
	}
	require.NoError(t, checkpoint.WriteModel(dst, copies, checkpoint.ModelOptions{}))
	out, err := checkpoint.OpenModel(dst)
	require.NoError(t, err)
	defer out.Close()
	for _, info := range out.Tensors() {
		assert.Equal(t, checkpoint.F32, info.DType, info.Name)
	}
	assert.Equal(t, want, readAllFloat32(t, out), "widening to F32 is exact")
}

// writeIndex writes an index with the given weight map next to the shards in dir.
func writeIndex(t *testing.T, dir string, weightMap map[string]string) {
	t.Helper()
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, checkpoint.IndexFileName), data, 0o644))
}

func writeShard(t *testing.T, dir, name string, tensorNames ...string) {
	t.Helper()
	var tensors []checkpoint.Tensor
	for _, n := range tensorNames {
		tensors = append(tensors, checkpoint.Tensor{Name: n, DType: checkpoint.F32, Shape: []int{1}, Data: checkpoint.FromFloat32([]float32{1})})
	}
	require.NoError(t, checkpoint.Write(filepath.Join(dir, name), tensors, nil))
}

func TestOpenModelRejectsBadLayouts(t *testing.T) {
	const s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		kind  error
		parts []string
	}{
		{"empty directory", func(t *testing.T, dir string) {}, checkpoint.ErrNotFound, []string{"no model.safetensors or model.safetensors.index.json found"}},
		{"pickle weights", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), nil, 0o644))
		}, checkpoint.ErrNotFound, []string{"contains PyTorch pickle weights", "convert them to safetensors"}},
		{"both layouts", func(t *testing.T, dir string) {
			writeShard(t, dir, checkpoint.SingleFileName, "a")
			writeShard(t, dir, s1, "a")
			writeIndex(t, dir, map[string]string{"a": s1})
		}, checkpoint.ErrInvalidIndex, []string{"contains both model.safetensors and model.safetensors.index.json", "remove the stale one"}},
		{"invalid index JSON", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, checkpoint.IndexFileName), []byte(`{"weight_map": `), 0o644))
		}, checkpoint.ErrInvalidIndex, []string{checkpoint.IndexFileName, "not valid JSON"}},
		{"empty weight map", func(t *testing.T, dir string) {
			writeIndex(t, dir, map[string]string{})
		}, checkpoint.ErrInvalidIndex, []string{"no weight_map entries"}},
		{"parent directory", func(t *testing.T, dir string) {
			writeIndex(t, dir, map[string]string{"a": "../model.safetensors"})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "a"`, `"../model.safetensors"`, "path separator"}},
		{"subdirectory", func(t *testing.T, dir string) {
			writeIndex(t, dir, map[string]string{"a": `sub\model.safetensors`})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "a"`, "path separator"}},
		{"dot dot", func(t *testing.T, dir string) {
			writeIndex(t, dir, map[string]string{"a": ".."})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "a"`, `contains ".."`}},
		{"empty shard name", func(t *testing.T, dir string) {
			writeIndex(t, dir, map[string]string{"a": ""})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "a"`, "empty"}},
		{"missing shard", func(t *testing.T, dir string) {
			writeShard(t, dir, s1, "a")
			writeIndex(t, dir, map[string]string{"a": s1, "b": s2})
		}, checkpoint.ErrNotFound, []string{s2, "cannot open"}},
		{"tensor in another shard", func(t *testing.T, dir string) {
			writeShard(t, dir, s1, "a")
			writeShard(t, dir, s2, "b")
			writeIndex(t, dir, map[string]string{"a": s2, "b": s1})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "a"`, "places the tensor in " + s2 + ", but shard " + s1 + " contains it"}},
		{"tensor in a shard the index skips", func(t *testing.T, dir string) {
			writeShard(t, dir, s1, "a")
			writeShard(t, dir, s2, "b")
			writeIndex(t, dir, map[string]string{"a": s2, "b": s2})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "a"`, "places the tensor in " + s2 + ", but that shard does not contain it"}},
		{"tensor missing from index", func(t *testing.T, dir string) {
			writeShard(t, dir, s1, "a", "extra")
			writeIndex(t, dir, map[string]string{"a": s1})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "extra"`, "missing from weight_map"}},
		{"tensor missing from shard", func(t *testing.T, dir string) {
			writeShard(t, dir, s1, "a")
			writeIndex(t, dir, map[string]string{"a": s1, "gone": s1})
		}, checkpoint.ErrInvalidIndex, []string{`tensor "gone"`, "that shard does not contain it"}},
		{"corrupt shard", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, s1), []byte{1, 2}, 0o644))
			writeIndex(t, dir, map[string]string{"a": s1})
		}, checkpoint.ErrTruncated, []string{s1, "file is 2 bytes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(t, dir)
			m, err := checkpoint.OpenModel(dir)
			if m != nil {
				m.Close()
			}
			requireError(t, err, c.kind, append([]string{dir}, c.parts...)...)
		})
	}
}

func TestOpenModelMissingTensor(t *testing.T) {
	dir := t.TempDir()
	writeShard(t, dir, "model-00001-of-00002.safetensors", "model.layers.0.mlp.up_proj.weight")
	writeShard(t, dir, "model-00002-of-00002.safetensors", "lm_head.weight")
	writeIndex(t, dir, map[string]string{
		"model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
		"lm_head.weight":                    "model-00002-of-00002.safetensors",
	})
	m, err := checkpoint.OpenModel(dir)
	require.NoError(t, err)
	defer m.Close()

	indexPath := filepath.Join(dir, checkpoint.IndexFileName)
	err = m.ReadFloat32("layers.0.mlp.up_proj.weight", make([]float32, 1))
	requireError(t, err, checkpoint.ErrNotFound, indexPath, `"layers.0.mlp.up_proj.weight"`, `close match is "model.layers.0.mlp.up_proj.weight"`)

	err = m.CheckShape("lm_head.weight", 1, 1)
	requireError(t, err, checkpoint.ErrShapeMismatch, "model-00002-of-00002.safetensors", `"lm_head.weight"`, "shape is [1], expected [1 1]")

	names := names(m.Tensors())
	assert.True(t, slices.Equal([]string{"model.layers.0.mlp.up_proj.weight", "lm_head.weight"}, names), "got %v", names)
}
