package peft

import (
	"bufio"
	"context"
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
	// Overwrite allows a non-empty output directory. Merge then moves the files it
	// wrote into it, replacing files of the same names, and removes the model weight
	// files that it did not write. Other files stay. A failure while the files move
	// can leave a mix of old and new files.
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

// Merge writes to outDir the base model with the LoRA adapter in adapterDir merged into
// its weights: W' = W + scaling · B·A. Each element is computed in float64 as
// W + scaling·Σ_k B[i,k]·A[k,j], summed in k order, and rounded once to W's dtype (F32,
// BF16, F16 or F64), to nearest even. Other tensors are copied byte for byte, and every
// output tensor keeps its base name, dtype and shape.
//
// base is a model directory, or the model.safetensors or model.safetensors.index.json
// file in one, which selects the weights when the directory has both. config.json and
// the other files are read from the directory.
//
// Merge checks the whole adapter against config.json, and the base weights against
// config.json, before it writes anything. It rejects base tensors that match no
// parameter of config.json's model, except a tied lm_head.weight. It then streams one
// row of one weight at a time, so memory holds the adapter and a row, not the model.
// The weights are written as transformers' save_pretrained shards them
// (checkpoint.WriteModel), and config.json, the tokenizer files and every other file of
// the base directory that is not a weight file are copied.
//
// Everything is written to a temporary sibling of outDir named .OUT.merging-N first.
// A new or empty outDir is replaced by it with one rename, so outDir is complete or
// absent. With Overwrite, a non-empty outDir receives its files instead, one rename
// each. On an error, or when ctx is canceled, Merge removes the temporary directory and
// leaves outDir as it was. It checks ctx for every row and every 32 KiB copied, so it
// stops soon after a cancel, but it does not interrupt an fsync or the final renames.
// Before it starts, Merge removes the temporary directories of earlier merges into
// outDir that were killed, on platforms with flock(2) (see removeStaleStages). outDir
// must differ from the base and adapter directories.
func Merge(ctx context.Context, base, adapterDir, outDir string, opts MergeOptions) (*MergeResult, error) {
	baseDir := base
	if info, err := os.Stat(base); err == nil && !info.IsDir() {
		baseDir = filepath.Dir(base)
	}
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
	weights, err := checkpoint.OpenModel(base)
	if err != nil {
		return nil, err
	}
	defer weights.Close()
	if err := checkBaseWeights(weights, cfg, adapter); err != nil {
		return nil, err
	}
	existing, err := checkOutputDir(outDir, opts.Overwrite)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, stoppedError(ctx, outDir, nil)
	}

	result := &MergeResult{Scaling: adapter.Config.Scaling()}
	tensors := planMerge(ctx, weights, adapter, result)
	removeStaleStages(outDir)
	stage, err := createStage(outDir)
	if err != nil {
		return nil, err
	}
	defer stage.release()
	err = writeMerged(ctx, stage.path, baseDir, weights, tensors, opts, result)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		removeErr := stage.remove()
		if ctx.Err() != nil {
			return nil, stoppedError(ctx, outDir, removeErr)
		}
		if removeErr != nil {
			return nil, fmt.Errorf("%w (and the temporary directory %s could not be removed: %v)", err, stage.path, removeErr)
		}
		return nil, err
	}

	if existing {
		err = moveIntoOutput(stage.path, outDir)
	} else {
		err = publishOutput(stage.path, outDir)
	}
	if err != nil {
		stage.remove()
		return nil, err
	}
	return result, nil
}

// stopError reports a merge stopped by its context. errors.Is matches both the
// context's error and the cancel cause.
type stopError struct {
	msg           string
	cause, ctxErr error
}

func (e *stopError) Error() string   { return e.msg }
func (e *stopError) Unwrap() []error { return []error{e.cause, e.ctxErr} }

// stoppedError describes a merge that ctx stopped before any output was published.
// removeErr is the error of removing the temporary directory, or nil.
func stoppedError(ctx context.Context, outDir string, removeErr error) error {
	cause := context.Cause(ctx)
	msg := fmt.Sprintf("merge stopped before it finished (%v): nothing was written to %s", cause, outDir)
	if removeErr != nil {
		msg += fmt.Sprintf(", but its temporary directory could not be removed: %v", removeErr)
	}
	return &stopError{msg: msg, cause: cause, ctxErr: ctx.Err()}
}

// maxListedTensors is how many tensor names an error lists before it counts the rest.
const maxListedTensors = 10

// checkBaseWeights checks that the weights have exactly the tensors and shapes of
// config.json, a tied lm_head.weight aside, and that every adapted weight has a dtype
// that Merge can compute in.
func checkBaseWeights(base *checkpoint.Model, cfg model.Config, adapter *Adapter) error {
	params := cfg.Params()
	known := make(map[string]bool, len(params))
	for _, p := range params {
		known[p.Name] = true
	}
	var unknown []string
	for _, info := range base.Tensors() {
		if !known[info.Name] && !(info.Name == tiedHeadName && cfg.TieWordEmbeddings) {
			unknown = append(unknown, info.Name)
		}
	}
	if len(unknown) > 0 {
		verb, pronoun := "match", "them"
		if len(unknown) == 1 {
			verb, pronoun = "matches", "it"
		}
		return &Error{Path: base.Path(), Kind: ErrBase,
			Msg: fmt.Sprintf("%s %s no parameter of the Qwen3 model that config.json describes (%d layers, tie_word_embeddings %t): %s. Remove %s from the weights, or use the config.json of the model that the weights come from",
				countNoun(len(unknown), "tensor", "tensors"), verb, cfg.NumLayers, cfg.TieWordEmbeddings, listNames(unknown, maxListedTensors), pronoun)}
	}
	if cfg.TieWordEmbeddings {
		// Package model rejects a tied lm_head.weight of another shape, so the merged
		// model would not load in ringtune.
		params = append(params, model.ParamSpec{Name: tiedHeadName, Shape: []int{cfg.VocabSize, cfg.HiddenSize}})
	}

	for _, p := range params {
		info, err := base.Info(p.Name)
		if err != nil {
			if p.Name == tiedHeadName {
				continue // optional: the embedding is the head
			}
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

// tiedHeadName is the output head's tensor name. With tie_word_embeddings the
// embedding is the head, and a checkpoint may still store lm_head.weight.
const tiedHeadName = "lm_head.weight"

// listNames joins up to max names with commas and counts the rest.
func listNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}

// countNoun formats a count with the singular or plural noun.
func countNoun(n int, singular, plural string) string {
	if n == 1 {
		return "1 " + singular
	}
	return fmt.Sprintf("%d %s", n, plural)
}

// planMerge lists the output tensors in the base's order: adapted weights as merge
// sources, the rest as copies. Every source stops with ctx's error once ctx is
// canceled.
func planMerge(ctx context.Context, base *checkpoint.Model, adapter *Adapter, result *MergeResult) []checkpoint.Tensor {
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
		t.Data = cancelableSource{ctx: ctx, src: t.Data}
		tensors[i] = t
	}
	return tensors
}

// cancelableSource passes a Source's writes on until its context is canceled.
type cancelableSource struct {
	ctx context.Context
	src checkpoint.Source
}

func (s cancelableSource) WriteData(w io.Writer, dtype checkpoint.DType, n int64) error {
	return s.src.WriteData(contextWriter{ctx: s.ctx, w: w}, dtype, n)
}

// contextWriter fails every write once ctx is canceled. mergeSource writes one row per
// call and io.Copy 32 KiB, so a canceled merge stops within a row or 32 KiB.
type contextWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c contextWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// contextReader fails every read once ctx is canceled.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
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

// writeMerged writes the weights and copies the other files of baseDir into dir.
func writeMerged(ctx context.Context, dir, baseDir string, base *checkpoint.Model, tensors []checkpoint.Tensor, opts MergeOptions, result *MergeResult) error {
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
	return copyBaseFiles(ctx, baseDir, dir, result)
}

// copyBaseFiles copies the regular files of baseDir that are not weights: config.json,
// generation_config.json, tokenizer.json, tokenizer_config.json, vocab.json,
// merges.txt, README.md and the like. Symbolic links, as in a Hugging Face cache
// snapshot, are followed. Hidden files and the safetensors weights, which the merge
// rewrites, are left out of result.SkippedFiles.
func copyBaseFiles(ctx context.Context, baseDir, outDir string, result *MergeResult) error {
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
		if err := copyFileAtomic(ctx, src, filepath.Join(outDir, name)); err != nil {
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
