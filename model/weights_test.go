package model

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
)

// goldenTensors returns the tensors of testdata/golden/model.safetensors as
// sources for checkpoint.Write, in file order.
func goldenTensors(t *testing.T, dtype checkpoint.DType) []checkpoint.Tensor {
	t.Helper()
	f, err := checkpoint.Open(filepath.Join(goldenDir, checkpoint.SingleFileName))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	var tensors []checkpoint.Tensor
	for _, info := range f.Tensors() {
		tensors = append(tensors, checkpoint.Tensor{Name: info.Name, DType: dtype, Shape: info.Shape, Data: checkpoint.FromTensor(f, info.Name)})
	}
	return tensors
}

func newFullModel(t *testing.T, opts Options) *Model {
	t.Helper()
	if opts.MaxBatch == 0 {
		opts.MaxBatch, opts.MaxSeq = 2, 24
	}
	m, err := New(newBackend(t), goldenConfig(t), opts)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

// readAll returns a host copy of every tensor of m by name.
func readAll(t *testing.T, m *Model) map[string][]float32 {
	t.Helper()
	values := map[string][]float32{}
	for _, p := range m.Params() {
		v, err := m.ReadTensor(p.Name)
		require.NoError(t, err)
		values[p.Name] = v
	}
	return values
}

func TestSaveBaseRoundTrip(t *testing.T) {
	m := newFullModel(t, Options{})
	require.NoError(t, m.InitRandom(7))
	dir := t.TempDir()
	require.NoError(t, m.SaveBase(dir))

	cfg, err := LoadConfig(dir)
	require.NoError(t, err)
	assert.Equal(t, m.Config(), cfg, "config.json round trip")

	f, err := checkpoint.Open(filepath.Join(dir, checkpoint.SingleFileName))
	require.NoError(t, err)
	defer f.Close()
	assert.Len(t, f.Tensors(), len(cfg.Params()), "one tensor per row of the parameter table")
	_, err = f.Info(tiedHeadName)
	assert.ErrorIs(t, err, checkpoint.ErrNotFound, "a tied head is stored once, as the embedding")

	loaded := newFullModel(t, Options{})
	require.NoError(t, loaded.LoadBase(dir))
	assert.Equal(t, readAll(t, m), readAll(t, loaded))
}

func TestSaveBaseBF16RoundTrip(t *testing.T) {
	c := loadGoldenCase(t, "lora_packed")
	opts := Options{Mode: ModeLoRA, LoRA: c.lora, FrozenBF16: true, MaxBatch: 2, MaxSeq: 24}
	m := newFullModel(t, opts)
	require.NoError(t, m.LoadBase(goldenDir))
	dir := t.TempDir()
	require.NoError(t, m.SaveBase(dir))

	f, err := checkpoint.Open(filepath.Join(dir, checkpoint.SingleFileName))
	require.NoError(t, err)
	defer f.Close()
	for _, info := range f.Tensors() {
		want := checkpoint.BF16
		if len(info.Shape) == 1 {
			want = checkpoint.F32
		}
		assert.Equal(t, want, info.DType, info.Name)
	}

	loaded := newFullModel(t, opts)
	require.NoError(t, loaded.LoadBase(dir))
	assert.Equal(t, readAll(t, m), readAll(t, loaded))
}

// TestLoadBaseFormats loads the golden weights from BF16, F16 and sharded
// copies.
func TestLoadBaseFormats(t *testing.T) {
	reference := newFullModel(t, Options{})
	require.NoError(t, reference.LoadBase(goldenDir))
	want := readAll(t, reference)

	for _, dtype := range []checkpoint.DType{checkpoint.BF16, checkpoint.F16} {
		t.Run(string(dtype), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "weights.safetensors")
			require.NoError(t, checkpoint.Write(path, goldenTensors(t, dtype), nil))
			m := newFullModel(t, Options{})
			require.NoError(t, m.LoadBase(path))
			for name, values := range readAll(t, m) {
				assert.Less(t, relativeError(values, want[name]), 1e-2, name)
			}
		})
	}
	t.Run("sharded", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, checkpoint.WriteModel(dir, goldenTensors(t, checkpoint.F32), checkpoint.ModelOptions{MaxShardSize: 60_000}))
		m := newFullModel(t, Options{})
		require.Greater(t, len(mustOpenModel(t, dir).Files()), 1, "the copy must have several shards")
		require.NoError(t, m.LoadBase(dir))
		assert.Equal(t, want, readAll(t, m))
	})
}

func mustOpenModel(t *testing.T, dir string) *checkpoint.Model {
	t.Helper()
	ckpt, err := checkpoint.OpenModel(dir)
	require.NoError(t, err)
	t.Cleanup(func() { ckpt.Close() })
	return ckpt
}

func TestLoadBaseErrors(t *testing.T) {
	const qName = "model.layers.0.self_attn.q_proj.weight"
	cases := []struct {
		name  string
		edit  func([]checkpoint.Tensor) []checkpoint.Tensor
		wants []string
	}{
		{
			name: "missing tensor",
			edit: func(ts []checkpoint.Tensor) []checkpoint.Tensor {
				return slices.DeleteFunc(ts, func(x checkpoint.Tensor) bool { return x.Name == "model.layers.1.mlp.up_proj.weight" })
			},
			wants: []string{"missing tensor", `"model.layers.1.mlp.up_proj.weight"`},
		},
		{
			name: "unknown tensor",
			edit: func(ts []checkpoint.Tensor) []checkpoint.Tensor {
				return append(ts, checkpoint.Tensor{Name: "model.layers.2.mlp.up_proj.weight", DType: checkpoint.F32, Shape: []int{2}, Data: checkpoint.FromFloat32([]float32{1, 2})})
			},
			wants: []string{`"model.layers.2.mlp.up_proj.weight"`, "matches no parameter"},
		},
		{
			name: "wrong shape",
			edit: func(ts []checkpoint.Tensor) []checkpoint.Tensor {
				for i := range ts {
					if ts[i].Name == qName {
						ts[i].Shape = []int{48, 64}
					}
				}
				return ts
			},
			wants: []string{`"` + qName + `"`, "shape [48 64]", "[64 48]"},
		},
		{
			name: "wrong dtype",
			edit: func(ts []checkpoint.Tensor) []checkpoint.Tensor {
				for i := range ts {
					if ts[i].Name == "model.norm.weight" {
						ts[i] = checkpoint.Tensor{Name: ts[i].Name, DType: checkpoint.I32, Shape: ts[i].Shape, Data: checkpoint.FromBytes(make([]byte, 4*48))}
					}
				}
				return ts
			},
			wants: []string{`"model.norm.weight"`, "dtype I32"},
		},
		{
			name: "tied head of wrong shape",
			edit: func(ts []checkpoint.Tensor) []checkpoint.Tensor {
				return append(ts, checkpoint.Tensor{Name: tiedHeadName, DType: checkpoint.F32, Shape: []int{2}, Data: checkpoint.FromFloat32([]float32{1, 2})})
			},
			wants: []string{`"lm_head.weight"`, "shape [2]"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			require.NoError(t, checkpoint.Write(path, c.edit(goldenTensors(t, checkpoint.F32)), nil))
			m := newFullModel(t, Options{})
			err := m.LoadBase(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), path, "the error names the file")
			for _, want := range c.wants {
				assert.Contains(t, err.Error(), want)
			}
			for name, values := range readAll(t, m) {
				assert.Equal(t, make([]float32, len(values)), values, "a failed load leaves %s unchanged", name)
			}
		})
	}
}

func TestLoadBaseMissingFile(t *testing.T) {
	m := newFullModel(t, Options{})
	err := m.LoadBase(filepath.Join(t.TempDir(), "absent"))
	assert.ErrorIs(t, err, checkpoint.ErrNotFound)
}

// TestLoadBaseIgnoresTiedHead checks that with tie_word_embeddings an
// lm_head.weight in the file is ignored, even when it differs.
func TestLoadBaseIgnoresTiedHead(t *testing.T) {
	reference := newFullModel(t, Options{})
	require.NoError(t, reference.LoadBase(goldenDir))
	want := readAll(t, reference)

	cfg := goldenConfig(t)
	for _, name := range []string{"equal", "different"} {
		t.Run(name, func(t *testing.T) {
			head := slices.Clone(want["model.embed_tokens.weight"])
			if name == "different" {
				head[0] += 1
			}
			tensors := append(goldenTensors(t, checkpoint.F32), checkpoint.Tensor{
				Name: tiedHeadName, DType: checkpoint.F32, Shape: []int{cfg.VocabSize, cfg.HiddenSize}, Data: checkpoint.FromFloat32(head),
			})
			path := filepath.Join(t.TempDir(), "with_head.safetensors")
			require.NoError(t, checkpoint.Write(path, tensors, nil))
			m := newFullModel(t, Options{})
			require.NoError(t, m.LoadBase(path))
			assert.Equal(t, want, readAll(t, m))
		})
	}
}

// TestUntiedHead checks a config with tie_word_embeddings false: lm_head is a
// tensor of its own, required by LoadBase, trained, and written by SaveBase.
func TestUntiedHead(t *testing.T) {
	cfg := goldenConfig(t)
	cfg.TieWordEmbeddings = false
	m, err := New(newBackend(t), cfg, Options{MaxBatch: 2, MaxSeq: 24})
	require.NoError(t, err)
	defer m.Close()

	err = m.LoadBase(goldenDir)
	assert.ErrorContains(t, err, `missing tensor "lm_head.weight"`)

	require.NoError(t, m.InitRandom(3))
	c := loadGoldenCase(t, "full_packed")
	var order []int
	_, _, err = m.ForwardBackward(c.batch, 1/float32(c.targetCount), func(i int) { order = append(order, i) })
	require.NoError(t, err)
	trainable := m.Trainable()
	require.Equal(t, tiedHeadName, trainable[len(trainable)-1].Name)
	assert.Equal(t, len(trainable)-1, order[0], "the head's gradient is ready first")
	assert.Len(t, order, len(trainable))
	head, err := m.ReadGrad(tiedHeadName)
	require.NoError(t, err)
	assert.NotEqual(t, make([]float32, len(head)), head)

	dir := t.TempDir()
	require.NoError(t, m.SaveBase(dir))
	loaded, err := New(newBackend(t), cfg, Options{MaxBatch: 1, MaxSeq: 1})
	require.NoError(t, err)
	defer loaded.Close()
	require.NoError(t, loaded.LoadBase(dir))
	assert.Equal(t, readAll(t, m), readAll(t, loaded))
}

func TestSaveConfigRejectsInvalid(t *testing.T) {
	cfg := goldenConfig(t)
	cfg.HiddenSize = 0
	dir := t.TempDir()
	assert.ErrorContains(t, SaveConfig(dir, cfg, "float32"), "hidden_size is 0")
	_, err := os.Stat(filepath.Join(dir, ConfigFile))
	assert.ErrorIs(t, err, os.ErrNotExist)
}
