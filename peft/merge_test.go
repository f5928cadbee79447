package peft_test

import (
	"encoding/binary"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

// mergeFixture is a base model and an adapter written to temporary directories.
type mergeFixture struct {
	baseDir, adapterDir string
	base                map[string][]float32
	adapter             *peft.Adapter
}

func newMergeFixture(t *testing.T, baseDType checkpoint.DType, maxShard int64, cfg peft.Config, adapterDType checkpoint.DType) mergeFixture {
	t.Helper()
	f := mergeFixture{baseDir: t.TempDir(), adapterDir: t.TempDir()}
	f.base = writeBase(t, f.baseDir, baseDType, maxShard, 11)
	f.adapter = newRandomAdapter(t, cfg, adapterDType, 12)
	require.NoError(t, peft.Write(f.adapterDir, f.adapter))
	return f
}

// reference returns the float64 merge of every adapted weight and the base values of
// the other tensors.
func (f mergeFixture) reference(t *testing.T) map[string][]float64 {
	t.Helper()
	cfg := loadGoldenConfig(t)
	out := map[string][]float64{}
	for _, p := range cfg.Params() {
		module := p.Name[:len(p.Name)-len(".weight")]
		a, b := f.adapter.Find(module, true), f.adapter.Find(module, false)
		if a == nil {
			values := make([]float64, len(f.base[p.Name]))
			for i, v := range f.base[p.Name] {
				values[i] = float64(v)
			}
			out[p.Name] = values
			continue
		}
		out[p.Name] = referenceMerge(f.base[p.Name], a.Data, b.Data, p.Shape[0], p.Shape[1], f.adapter.Config.Rank, f.adapter.Config.Scaling())
	}
	return out
}

func TestMergeMatchesFloat64Reference(t *testing.T) {
	cfg := attentionConfig()
	cfg.TargetModules = model.ProjectionModules()
	f := newMergeFixture(t, checkpoint.F32, 0, cfg, checkpoint.F32)
	out := filepath.Join(t.TempDir(), "merged")

	result, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2.0, result.Scaling)
	assert.Equal(t, 14, result.Merged, "2 layers × 7 projections")
	assert.Equal(t, 24-14, result.Copied)
	assert.Equal(t, []string{"model.safetensors"}, result.WeightFiles)

	got, dtypes := readModel(t, out)
	want := f.reference(t)
	require.Len(t, got, len(want))
	for name, ref := range want {
		assert.Equal(t, checkpoint.F32, dtypes[name], name)
		values := got[name]
		require.Len(t, values, len(ref), name)
		mismatches := 0
		for i := range ref {
			if values[i] != float32(ref[i]) {
				mismatches++
			}
		}
		assert.Zero(t, mismatches, "%s: elements that differ from the float64 reference rounded to float32", name)
	}
	assert.NotEqual(t, f.base["model.layers.0.self_attn.q_proj.weight"], got["model.layers.0.self_attn.q_proj.weight"], "the adapter changes the weight")
	assert.Equal(t, f.base["model.embed_tokens.weight"], got["model.embed_tokens.weight"])
}

// nearest rounds x to the nearest value of dtype, ties to even, with big.Float and
// math.RoundToEven, and returns the bit pattern. BF16 has 8 significand bits and F16
// 11, and F16 values below 2^-14 are multiples of 2^-24. Values beyond the normal range
// of BF16 do not occur in these tests.
func nearest(x float64, dtype checkpoint.DType) uint16 {
	if dtype == checkpoint.F16 && math.Abs(x) < 0x1p-14 {
		return checkpoint.Float32ToF16(float32(math.RoundToEven(x*0x1p24) * 0x1p-24))
	}
	prec := uint(8)
	if dtype == checkpoint.F16 {
		prec = 11
	}
	f, _ := new(big.Float).SetPrec(prec).SetMode(big.ToNearestEven).SetFloat64(x).Float32()
	if dtype == checkpoint.F16 {
		return checkpoint.Float32ToF16(f) // exact: f is a binary16 value
	}
	return uint16(math.Float32bits(f) >> 16)
}

func TestMergeHalfPrecisionRoundsOnce(t *testing.T) {
	for _, dtype := range []checkpoint.DType{checkpoint.BF16, checkpoint.F16} {
		t.Run(string(dtype), func(t *testing.T) {
			cfg := attentionConfig()
			cfg.TargetModules = []string{"q_proj", "down_proj"}
			f := newMergeFixture(t, dtype, 0, cfg, dtype)
			out := filepath.Join(t.TempDir(), "merged")
			_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{})
			require.NoError(t, err)

			m, err := checkpoint.OpenModel(out)
			require.NoError(t, err)
			defer m.Close()
			for name, ref := range f.reference(t) {
				info, err := m.Info(name)
				require.NoError(t, err)
				assert.Equal(t, dtype, info.DType, name)
				raw := make([]byte, info.Size())
				require.NoError(t, m.ReadRaw(name, raw))
				mismatches := 0
				for i := range ref {
					if binary.LittleEndian.Uint16(raw[2*i:]) != nearest(ref[i], dtype) {
						mismatches++
					}
				}
				assert.Zero(t, mismatches, "%s: elements that differ from the float64 reference rounded to %s", name, dtype)
			}
		})
	}
}

// W = 1 and B·A = 2^-8 + 2^-30 give 1 + 2^-8 + 2^-30, just above the bfloat16 tie
// between 1 and 1 + 2^-7. Rounding to float32 first drops 2^-30, and the tie then
// rounds to even, 1.0. Rounding once gives 1 + 2^-7.
func TestMergeBF16AvoidsDoubleRounding(t *testing.T) {
	base := loadGoldenConfig(t)
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	var tensors []checkpoint.Tensor
	for _, p := range base.Params() {
		data := make([]float32, p.NumElements())
		for i := range data {
			data[i] = 1
		}
		tensors = append(tensors, checkpoint.Tensor{Name: p.Name, DType: checkpoint.BF16, Shape: p.Shape, Data: checkpoint.FromFloat32(data)})
	}
	require.NoError(t, checkpoint.WriteModel(baseDir, tensors, checkpoint.ModelOptions{}))
	configJSON, err := os.ReadFile(goldenConfig)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(baseDir, "config.json"), configJSON, 0o644))

	cfg := peft.Config{Rank: 2, Alpha: 2, TargetModules: []string{"q_proj"}} // scaling 1
	a, err := peft.NewAdapter(cfg, base)
	require.NoError(t, err)
	const in = 48
	A := a.Find("model.layers.0.self_attn.q_proj", true)
	B := a.Find("model.layers.0.self_attn.q_proj", false)
	A.Data[0*in+0], B.Data[0*2+0] = 0x1p-4, 0x1p-4 // 2^-8
	A.Data[1*in+0], B.Data[0*2+1] = 0x1p-15, 0x1p-15
	require.NoError(t, peft.Write(adapterDir, a))

	out := filepath.Join(t.TempDir(), "merged")
	_, err = peft.Merge(t.Context(), baseDir, adapterDir, out, peft.MergeOptions{})
	require.NoError(t, err)
	m, err := checkpoint.OpenModel(out)
	require.NoError(t, err)
	defer m.Close()
	bits := make([]uint16, 64*in)
	require.NoError(t, m.ReadBF16("model.layers.0.self_attn.q_proj.weight", bits))
	assert.Equal(t, uint16(0x3F81), bits[0], "1 + 2^-7")
	assert.Equal(t, uint16(0x3F80), checkpoint.Float32ToBF16(float32(1+0x1p-8+0x1p-30)), "rounding through float32 gives 1.0")
	assert.Equal(t, uint16(0x3F80), bits[1], "untouched elements stay 1.0")
}

func TestMergeShardedBase(t *testing.T) {
	cfg := attentionConfig()
	cfg.TargetModules = []string{"v_proj", "gate_proj"}
	cfg.UseRSLoRA = true
	const maxShard = 16 << 10
	f := newMergeFixture(t, checkpoint.F32, maxShard, cfg, checkpoint.F32)
	_, err := os.Stat(filepath.Join(f.baseDir, checkpoint.IndexFileName))
	require.NoError(t, err, "the base is sharded")

	out := filepath.Join(t.TempDir(), "merged")
	result, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{MaxShardSize: maxShard})
	require.NoError(t, err)
	assert.Equal(t, 4.0, result.Scaling, "rs-LoRA: 8 / sqrt(4)")
	assert.Contains(t, result.WeightFiles, checkpoint.IndexFileName)
	assert.Greater(t, len(result.WeightFiles), 2)

	m, err := checkpoint.OpenModel(out)
	require.NoError(t, err)
	assert.Greater(t, len(m.Files()), 1, "the output is sharded")
	require.NoError(t, m.Close())

	got, _ := readModel(t, out)
	for name, ref := range f.reference(t) {
		mismatches := 0
		for i := range ref {
			if got[name][i] != float32(ref[i]) {
				mismatches++
			}
		}
		assert.Zero(t, mismatches, name)
	}
}

func TestMergeCopiesNonWeightFiles(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	for name, content := range map[string]string{
		"pytorch_model.bin":            "pickle",
		"pytorch_model.bin.index.json": "{}",
		"training_args.bin":            "pickle",
		".gitattributes":               "*.bin filter=lfs",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(f.baseDir, name), []byte(content), 0o644))
	}
	require.NoError(t, os.Mkdir(filepath.Join(f.baseDir, "original"), 0o755))
	// A Hugging Face cache snapshot links its files to blobs.
	blob := filepath.Join(t.TempDir(), "blob")
	require.NoError(t, os.WriteFile(blob, []byte("linked"), 0o644))
	require.NoError(t, os.Symlink(blob, filepath.Join(f.baseDir, "README.md")))

	out := filepath.Join(t.TempDir(), "merged")
	result, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{})
	require.NoError(t, err)

	wantCopied := []string{"README.md", "config.json"}
	for name := range tokenizerFiles {
		wantCopied = append(wantCopied, name)
	}
	assert.ElementsMatch(t, wantCopied, result.CopiedFiles)
	assert.ElementsMatch(t, []string{"original", "pytorch_model.bin", "pytorch_model.bin.index.json", "training_args.bin"}, result.SkippedFiles)
	for _, name := range wantCopied {
		want, err := os.ReadFile(filepath.Join(f.baseDir, name))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err, name)
		assert.Equal(t, want, got, name)
		info, err := os.Lstat(filepath.Join(out, name))
		require.NoError(t, err)
		assert.True(t, info.Mode().IsRegular(), "%s is copied as a regular file", name)
	}

	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, append(wantCopied, "model.safetensors"), names)
	info, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), info.Mode().Perm())

	cfg, err := model.LoadConfig(out)
	require.NoError(t, err)
	assert.Equal(t, loadGoldenConfig(t), cfg)
}

func TestMergeOutputDirectoryRules(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)

	_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, f.baseDir, peft.MergeOptions{Overwrite: true})
	assert.ErrorContains(t, err, "is the base model directory")
	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, f.baseDir+"/.", peft.MergeOptions{Overwrite: true})
	assert.ErrorContains(t, err, "is the base model directory")
	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, f.adapterDir, peft.MergeOptions{Overwrite: true})
	assert.ErrorContains(t, err, "is the adapter directory")

	busy := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(busy, "old.txt"), []byte("old"), 0o644))
	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, busy, peft.MergeOptions{})
	require.ErrorIs(t, err, peft.ErrOutputExists)
	assert.ErrorContains(t, err, busy)
	assert.ErrorContains(t, err, "(1 entry)")

	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, busy, peft.MergeOptions{Overwrite: true})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(busy, "model.safetensors"))
	assert.NoError(t, err)

	empty := t.TempDir()
	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, empty, peft.MergeOptions{})
	require.NoError(t, err, "an empty directory is not overwritten")
	_, err = os.Stat(filepath.Join(empty, "config.json"))
	assert.NoError(t, err)
}

func TestMergeFailureLeavesNoOutput(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	parent := t.TempDir()
	out := filepath.Join(parent, "merged")

	// A dangling link among the files to copy fails the merge after the weights are
	// written.
	require.NoError(t, os.Symlink(filepath.Join(parent, "absent"), filepath.Join(f.baseDir, "tokenizer.model")))
	_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{})
	require.ErrorContains(t, err, "tokenizer.model")

	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	assert.Empty(t, entries, "neither the output nor a temporary directory is left")
}

func TestMergeRejectsMismatchedBase(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	cfg := loadGoldenConfig(t)
	var tensors []checkpoint.Tensor
	for _, p := range cfg.Params() {
		shape := slices.Clone(p.Shape)
		if p.Name == "model.layers.1.self_attn.k_proj.weight" {
			shape[0] = 16
		}
		n := 1
		for _, d := range shape {
			n *= d
		}
		tensors = append(tensors, checkpoint.Tensor{Name: p.Name, DType: checkpoint.F32, Shape: shape, Data: checkpoint.FromFloat32(make([]float32, n))})
	}
	require.NoError(t, checkpoint.WriteModel(f.baseDir, tensors, checkpoint.ModelOptions{}))

	_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, filepath.Join(t.TempDir(), "out"), peft.MergeOptions{})
	requirePEFTError(t, err, peft.ErrBase, `tensor "model.layers.1.self_attn.k_proj.weight"`, "shape [16 48]", "[32 48]")
}

func TestMergeRejectsAdapterForOtherModel(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	// An adapter trained on a wider model: q_proj's in_features is 64, not 48.
	wide := loadGoldenConfig(t)
	wide.HiddenSize = 64
	a, err := peft.NewAdapter(attentionConfig(), wide)
	require.NoError(t, err)
	require.NoError(t, peft.Write(f.adapterDir, a))

	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, filepath.Join(t.TempDir(), "out"), peft.MergeOptions{})
	requirePEFTError(t, err, peft.ErrTensor, "adapter_model.safetensors", "lora_A.weight", "shape [4 64]", "expected [4 48]")
}

// writeWeights writes zero F32 tensors with the parameters of the golden config, plus
// extra tensors by name and shape, as the weights of dir.
func writeWeights(t *testing.T, dir string, extra map[string][]int) {
	t.Helper()
	var tensors []checkpoint.Tensor
	add := func(name string, shape []int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		tensors = append(tensors, checkpoint.Tensor{Name: name, DType: checkpoint.F32, Shape: shape, Data: checkpoint.FromFloat32(make([]float32, n))})
	}
	for _, p := range loadGoldenConfig(t).Params() {
		add(p.Name, p.Shape)
	}
	for name, shape := range extra {
		add(name, shape)
	}
	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{}))
}

func TestMergeRejectsUnknownBaseTensors(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	writeWeights(t, f.baseDir, map[string][]int{"model.layers.9.mlp.bogus.weight": {4, 4}, "model.rotary_emb.inv_freq": {8}})
	parent := t.TempDir()

	_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, filepath.Join(parent, "out"), peft.MergeOptions{})
	requirePEFTError(t, err, peft.ErrBase, filepath.Join(f.baseDir, checkpoint.SingleFileName),
		"2 tensors match no parameter of the Qwen3 model that config.json describes (2 layers, tie_word_embeddings true)",
		"model.layers.9.mlp.bogus.weight", "model.rotary_emb.inv_freq")
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing is written")
}

func TestMergeCopiesTiedHead(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	cfg := loadGoldenConfig(t)
	writeWeights(t, f.baseDir, map[string][]int{"lm_head.weight": {cfg.VocabSize, cfg.HiddenSize}})
	out := filepath.Join(t.TempDir(), "out")
	result, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{})
	require.NoError(t, err, "tie_word_embeddings is true, so lm_head.weight is the embedding's copy")
	assert.Equal(t, 25-8, result.Copied)

	writeWeights(t, f.baseDir, map[string][]int{"lm_head.weight": {cfg.VocabSize, 16}})
	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, filepath.Join(t.TempDir(), "out"), peft.MergeOptions{})
	requirePEFTError(t, err, peft.ErrBase, `tensor "lm_head.weight"`, "shape [250 16], but config.json gives [250 48]")
}

func TestMergeBaseWeightsFile(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 16<<10, attentionConfig(), checkpoint.F32)
	// A leftover single file next to the shards makes the directory ambiguous.
	require.NoError(t, os.WriteFile(filepath.Join(f.baseDir, checkpoint.SingleFileName), []byte("stale"), 0o644))
	_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, filepath.Join(t.TempDir(), "out"), peft.MergeOptions{})
	require.ErrorIs(t, err, checkpoint.ErrInvalidIndex)

	out := filepath.Join(t.TempDir(), "out")
	result, err := peft.Merge(t.Context(), filepath.Join(f.baseDir, checkpoint.IndexFileName), f.adapterDir, out, peft.MergeOptions{})
	require.NoError(t, err, "the index selects the shards")
	assert.Contains(t, result.CopiedFiles, "config.json", "the other files come from the index's directory")
	got, _ := readModel(t, out)
	for name, ref := range f.reference(t) {
		mismatches := 0
		for i := range ref {
			if got[name][i] != float32(ref[i]) {
				mismatches++
			}
		}
		assert.Zero(t, mismatches, name)
	}
}
