package peft

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
)

// ErrOutputExists: Merge's output directory is not empty and MergeOptions.Overwrite is
// false.
var ErrOutputExists = errors.New("output directory is not empty")

// MergeOptions configures Merge.
type MergeOptions struct {
	// MaxShardSize is the largest total tensor size of one output shard, in bytes. Zero
	// means checkpoint.DefaultMaxShardSize (5 GB), the default of transformers'
	// save_pretrained.
	MaxShardSize int64
	// Overwrite allows a non-empty output directory. Merge then writes into it in place:
	// it replaces the files it writes and removes stale model shards, but leaves other
	// files there. A failure can leave a mix of old and new files.
	Overwrite bool
}

// MergeResult describes what Merge wrote.
type MergeResult struct {
	Scaling      float64  // factor applied to B·A
	Merged       int      // base weights that the adapter changed
	Copied       int      // base tensors copied unchanged
	WeightFiles  []string // safetensors files and index written, relative to the output directory
	CopiedFiles  []string // other files copied from the base directory
	SkippedFiles []string // entries of the base directory not copied: weights in formats other than safetensors, adapter files and subdirectories
}

// Merge writes to outDir the base model in baseDir with the LoRA adapter in adapterDir
// merged into its weights: W' = W + scaling · B·A. Each element is computed in float64
// as W + scaling·Σ_k B[i,k]·A[k,j], summed in k order, and rounded once to W's dtype
// (F32, BF16, F16 or F64), to nearest even. Other tensors are copied byte for byte, and
// every output tensor keeps its base name, dtype and shape.
//
// Merge checks the whole adapter against config.json and the base weights before it
// writes anything. It then streams one row of one weight at a time, so memory holds the
// adapter and a row, not the model. The weights are written as transformers'
// save_pretrained shards them (checkpoint.WriteModel), and config.json, the tokenizer
// files and every other file of baseDir that is not a weight file are copied.
//
// A new or empty outDir is written as a temporary sibling directory and renamed into
// place at the end, so it is complete or absent. outDir must differ from baseDir and
// adapterDir.
func Merge(baseDir, adapterDir, outDir string, opts MergeOptions) (*MergeResult, error) {
	if err := checkOutputPath(baseDir, adapterDir, outDir); err != nil {
		return nil, err
	}
	cfg, err := model.LoadConfig(baseDir)
	if err != nil {
		return nil, err
	}
	adapter, err := Load(adapterDir, cfg)
	if err != nil {
		return nil, err
	}
	base, err := checkpoint.OpenModel(baseDir)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	if err := checkBaseWeights(base, cfg, adapter); err != nil {
		return nil, err
	}

	result := &MergeResult{Scaling: adapter.Config.Scaling()}
	tensors := planMerge(base, adapter, result)

	stage, inPlace, err := prepareOutput(outDir, opts.Overwrite)
	if err != nil {
		return nil, err
	}
	if err := writeMerged(stage, baseDir, base, tensors, opts, result); err != nil {
		if !inPlace {
			os.RemoveAll(stage)
		}
		return nil, err
	}
	if !inPlace {
		if err := publishOutput(stage, outDir); err != nil {
			os.RemoveAll(stage)
			return nil, err
		}
	}
	return result, nil
}

// checkOutputPath rejects an output directory that is the base or adapter directory.
func checkOutputPath(baseDir, adapterDir, outDir string) error {
	out, err := filepath.Abs(outDir)
	if err != nil {
		return err
	}
	outInfo, outErr := os.Stat(out)
	for _, in := range []struct{ role, dir string }{{"base model", baseDir}, {"adapter", adapterDir}} {
		abs, err := filepath.Abs(in.dir)
		if err != nil {
			return err
		}
		same := abs == out
		if info, err := os.Stat(abs); err == nil && outErr == nil {
			same = same || os.SameFile(info, outInfo)
		}
		if same {
			return fmt.Errorf("output directory %s is the %s directory: write the merged model to a new directory", outDir, in.role)
		}
	}
	return nil
}

// checkBaseWeights checks that the weights have the tensors and shapes of config.json
// and that every adapted weight has a dtype that Merge can compute in.
func checkBaseWeights(base *checkpoint.Model, cfg model.Config, adapter *Adapter) error {
	for _, p := range cfg.Params() {
		info, err := base.Info(p.Name)
		if err != nil {
			return &Error{Path: base.Path(), Tensor: p.Name, Kind: ErrBase, Msg: "missing, but config.json describes a model that has it"}
		}
		if !slices.Equal(info.Shape, p.Shape) {
			return &Error{Path: info.Path, Tensor: p.Name, Kind: ErrBase,
				Msg: fmt.Sprintf("shape %v, but config.json gives %v: the weights and config.json are of different models", info.Shape, p.Shape)}
		}
		if p.Module != "" && adapter.Find(strings.TrimSuffix(p.Name, ".weight"), true) != nil && !isFloatDType(info.DType) {
			return &Error{Path: info.Path, Tensor: p.Name, Kind: ErrBase,
				Msg: fmt.Sprintf("dtype %s cannot be merged into: adapted weights must be F32, BF16, F16 or F64", info.DType)}
		}
	}
	return nil
}

// planMerge lists the output tensors in the base's order: adapted weights as merge
// sources, the rest as copies.
func planMerge(base *checkpoint.Model, adapter *Adapter, result *MergeResult) []checkpoint.Tensor {
	infos := base.Tensors()
	tensors := make([]checkpoint.Tensor, len(infos))
	for i, info := range infos {
		t := checkpoint.Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape}
		module := strings.TrimSuffix(info.Name, ".weight")
		if a := adapter.Find(module, true); a != nil && strings.HasSuffix(info.Name, ".weight") {
			b := adapter.Find(module, false)
			t.Data = &mergeSource{base: base, info: info, a: a.Data, b: b.Data, rank: adapter.Config.Rank, scaling: result.Scaling}
			result.Merged++
		} else {
			t.Data = checkpoint.FromTensor(base, info.Name)
			result.Copied++
		}
		tensors[i] = t
	}
	return tensors
}

// mergeSource computes one merged weight row by row while checkpoint.Write streams it.
type mergeSource struct {
	base    checkpoint.Reader
	info    checkpoint.TensorInfo
	a, b    []float32 // lora_A (rank, in) and lora_B (out, rank), row-major
	rank    int
	scaling float64
}

func (s *mergeSource) WriteData(w io.Writer, dtype checkpoint.DType, n int64) error {
	out, in := s.info.Shape[0], s.info.Shape[1]
	if dtype != s.info.DType || n != int64(out)*int64(in) {
		return fmt.Errorf("merge of %s: the writer requested %d %s elements, but the base weight has %d %s", s.info.Name, n, dtype, out*in, s.info.DType)
	}
	section, err := s.base.Section(s.info.Name)
	if err != nil {
		return err
	}
	reader := bufio.NewReaderSize(section, 1<<20)
	elemSize := dtype.Bits() / 8
	row := make([]byte, in*elemSize)
	delta := make([]float64, in)
	for i := range out {
		if _, err := io.ReadFull(reader, row); err != nil {
			return fmt.Errorf("%s: cannot read row %d of tensor %s: %w", s.info.Path, i, s.info.Name, err)
		}
		clear(delta)
		for k := range s.rank {
			bik := float64(s.b[i*s.rank+k])
			for j, akj := range s.a[k*in : (k+1)*in] {
				// The product of two float32 values is exact in float64, so a fused
				// multiply-add gives the same sum as a separate multiply and add.
				delta[j] += bik * float64(akj)
			}
		}
		for j := range in {
			// The conversion keeps the compiler from fusing the multiply into the add,
			// which would round differently on arm64 than on amd64.
			merged := decodeFloat(row, j, dtype) + float64(s.scaling*delta[j])
			encodeFloat(row, j, dtype, merged)
		}
		if _, err := w.Write(row); err != nil {
			return err
		}
	}
	return nil
}

// prepareOutput returns the directory to write into. A missing or empty outDir gets a
// temporary sibling that publishOutput renames, and a non-empty one with overwrite is
// written in place.
func prepareOutput(outDir string, overwrite bool) (stage string, inPlace bool, err error) {
	entries, err := os.ReadDir(outDir)
	switch {
	case err == nil && len(entries) > 0:
		if !overwrite {
			return "", false, fmt.Errorf("%s: %w (%d entries): choose a new or empty directory", outDir, ErrOutputExists, len(entries))
		}
		return outDir, true, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		if info, statErr := os.Stat(outDir); statErr == nil && !info.IsDir() {
			return "", false, fmt.Errorf("output path %s is a file, not a directory", outDir)
		}
		return "", false, err
	}
	parent := filepath.Dir(filepath.Clean(outDir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", false, err
	}
	stage, err = os.MkdirTemp(parent, "."+filepath.Base(filepath.Clean(outDir))+".merging-*")
	if err != nil {
		return "", false, err
	}
	return stage, false, nil
}

// publishOutput renames the finished stage directory to outDir, which is missing or
// empty.
func publishOutput(stage, outDir string) error {
	if err := os.Chmod(stage, 0o755); err != nil { // MkdirTemp creates it with mode 0700
		return err
	}
	if err := os.Remove(outDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot replace the empty output directory: %w", err)
	}
	if err := os.Rename(stage, outDir); err != nil {
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(outDir)))
}

// writeMerged writes the weights and copies the other files of baseDir into dir.
func writeMerged(dir, baseDir string, base *checkpoint.Model, tensors []checkpoint.Tensor, opts MergeOptions, result *MergeResult) error {
	err := checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: opts.MaxShardSize, Metadata: base.Metadata()})
	if err != nil {
		return err
	}
	written, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range written {
		if isWeightFile(e.Name()) {
			result.WeightFiles = append(result.WeightFiles, e.Name())
		}
	}
	return copyBaseFiles(baseDir, dir, result)
}

// copyBaseFiles copies the regular files of baseDir that are not weights: config.json,
// generation_config.json, tokenizer.json, tokenizer_config.json, vocab.json,
// merges.txt, README.md and the like. Symbolic links, as in a Hugging Face cache
// snapshot, are followed. Hidden files and the safetensors weights, which the merge
// rewrites, are left out of result.SkippedFiles.
func copyBaseFiles(baseDir, outDir string, result *MergeResult) error {
	entries, err := os.ReadDir(baseDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		src := filepath.Join(baseDir, name)
		info, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("cannot copy %s: %w", src, err)
		}
		if isSafetensorsWeights(name) {
			continue // rewritten by the merge
		}
		if !info.Mode().IsRegular() || isWeightFile(name) || name == ConfigFile || strings.HasPrefix(name, "adapter_model.") {
			result.SkippedFiles = append(result.SkippedFiles, name)
			continue
		}
		if err := copyFileAtomic(src, filepath.Join(outDir, name)); err != nil {
			return fmt.Errorf("cannot copy %s: %w", src, err)
		}
		result.CopiedFiles = append(result.CopiedFiles, name)
	}
	return nil
}

// weightExtensions are the file extensions of model weights in the formats that
// Hugging Face and PyTorch tools write.
var weightExtensions = []string{
	".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx",
	".npz", ".npy", ".tflite", ".ot", ".pkl", ".pickle",
}

// isSafetensorsWeights reports whether name is a safetensors file or the index of
// sharded safetensors weights.
func isSafetensorsWeights(name string) bool {
	return strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".safetensors.index.json")
}

// isWeightFile reports whether name is a weight file or the index of sharded weights,
// such as model.safetensors.index.json or pytorch_model.bin.index.json.
func isWeightFile(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, ".index.json"))
	return slices.Contains(weightExtensions, filepath.Ext(name))
}
