package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/kernels"
)

// tiedHeadName is the head's Hugging Face name. With tie_word_embeddings the
// head is model.embed_tokens.weight and the parameter table has no such row.
const tiedHeadName = "lm_head.weight"

// LoadBase reads the parameter table's tensors by Hugging Face name from path:
// a model directory, a model.safetensors.index.json or one safetensors file,
// with F32, F16 or BF16 data. Adapters are left unchanged.
//
// It fails, before changing any tensor, when the checkpoint lacks a tensor,
// has one of another shape, or has a tensor that matches no parameter, and the
// error names the file and the tensor. With tie_word_embeddings true an
// lm_head.weight in the checkpoint is ignored and the embedding is the head.
// transformers does the same: from 4.54, from_pretrained ties lm_head to
// model.embed_tokens.weight after loading even when the file stores both
// (huggingface/transformers pull request 42612 describes it), and vLLM's
// loaders skip the tensor. A warning is logged when the two differ.
func (m *Model) LoadBase(path string) error {
	ckpt, err := checkpoint.OpenModel(path)
	if err != nil {
		return err
	}
	defer ckpt.Close()

	tiedHead, err := checkCheckpoint(ckpt, m.cfg)
	if err != nil {
		return err
	}

	base := m.baseEntries()
	for _, e := range base {
		if err := m.loadEntry(ckpt, e); err != nil {
			return err
		}
	}
	if tiedHead {
		m.warnIfHeadDiffers(ckpt)
	}
	return nil
}

// loadEntry copies one tensor from the checkpoint into e's storage.
// CheckWeights checks the names, shapes and dtypes of the weights at path against cfg
// without reading the tensors. path is a Hugging Face model directory, an index or a
// safetensors file. A command calls it to reject a mismatched checkpoint before it
// allocates the model.
func CheckWeights(cfg Config, path string) error {
	ckpt, err := checkpoint.OpenModel(path)
	if err != nil {
		return err
	}
	defer ckpt.Close()
	_, err = checkCheckpoint(ckpt, cfg)
	return err
}

// checkCheckpoint validates every tensor of ckpt against the parameter table of cfg and
// reports whether the checkpoint also holds a tied lm_head.weight.
func checkCheckpoint(ckpt *checkpoint.Model, cfg Config) (tiedHead bool, err error) {
	params := cfg.Params()
	known := make(map[string]bool, len(params))
	for _, p := range params {
		known[p.Name] = true
	}
	for _, info := range ckpt.Tensors() {
		switch {
		case known[info.Name]:
		case info.Name == tiedHeadName && cfg.TieWordEmbeddings:
			tiedHead = true
		default:
			return false, fmt.Errorf("%s: tensor %q matches no parameter of this Qwen3 model (%d layers, tie_word_embeddings %t): check that the checkpoint is a Qwen3ForCausalLM with Hugging Face names that matches the config",
				info.Path, info.Name, cfg.NumLayers, cfg.TieWordEmbeddings)
		}
	}
	if tiedHead {
		params = append(params, ParamSpec{Name: tiedHeadName, Shape: []int{cfg.VocabSize, cfg.HiddenSize}})
	}
	for _, p := range params {
		info, err := ckpt.Info(p.Name)
		if errors.Is(err, checkpoint.ErrNotFound) {
			return false, fmt.Errorf("%s: missing tensor %q of shape %v: check that the checkpoint matches the config (%w)", ckpt.Path(), p.Name, p.Shape, checkpoint.ErrNotFound)
		}
		if err != nil {
			return false, err
		}
		if !slices.Equal(info.Shape, p.Shape) {
			return false, fmt.Errorf("%s: tensor %q has shape %v, but the config gives %v", info.Path, p.Name, info.Shape, p.Shape)
		}
		if info.DType != checkpoint.F32 && info.DType != checkpoint.F16 && info.DType != checkpoint.BF16 {
			return false, fmt.Errorf("%s: tensor %q has dtype %s: want F32, F16 or BF16", info.Path, p.Name, info.DType)
		}
	}
	return tiedHead, nil
}

func (m *Model) loadEntry(ckpt *checkpoint.Model, e *tensorEntry) error {
	if e.bf16 {
		bits := make([]uint16, e.numElements())
		if err := ckpt.ReadBF16(e.name, bits); err != nil {
			return err
		}
		return m.backend.CopyFromHostBF16(e.value, bits)
	}
	values := make([]float32, e.numElements())
	if err := ckpt.ReadFloat32(e.name, values); err != nil {
		return err
	}
	return m.backend.CopyFromHostF32(e.value, values)
}

// warnIfHeadDiffers logs a warning when the ignored lm_head.weight differs from
// the embedding that replaces it.
func (m *Model) warnIfHeadDiffers(ckpt *checkpoint.Model) {
	n := m.embed.numElements()
	head, embed := make([]float32, n), make([]float32, n)
	// The check is advisory: LoadBase has loaded the embedding already, so a failed
	// read here only loses the warning.
	if err := errors.Join(ckpt.ReadFloat32(tiedHeadName, head), ckpt.ReadFloat32(m.embed.name, embed)); err != nil {
		slog.Warn("model: could not compare the checkpoint's lm_head.weight with the embedding", "err", err)
		return
	}
	if !slices.Equal(head, embed) {
		slog.Warn("model: checkpoint has an lm_head.weight that differs from model.embed_tokens.weight, but tie_word_embeddings is true, so the embedding is used as the head as transformers does; set tie_word_embeddings false in config.json to train a separate head",
			"path", ckpt.Path())
	}
}

// SaveBase writes the model's config.json and its parameter table to dir, in
// the layout of transformers' save_pretrained: model.safetensors, or shards
// and an index above 5 GB. Tensors keep their storage dtype, F32 or BF16, and
// a tied embedding is stored once, without lm_head.weight. Adapters are not
// written.
//
// NOTE: Config does not keep token ids (bos_token_id, eos_token_id) or the
// tokenizer files, so copy those from the source model directory.
func (m *Model) SaveBase(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating model directory: %w", err)
	}
	torchDType := "float32"
	if m.opts.FrozenBF16 {
		torchDType = "bfloat16"
	}
	if err := SaveConfig(dir, m.cfg, torchDType); err != nil {
		return err
	}
	var tensors []checkpoint.Tensor
	for _, e := range m.baseEntries() {
		dtype := checkpoint.F32
		if e.bf16 {
			dtype = checkpoint.BF16
		}
		tensors = append(tensors, checkpoint.Tensor{Name: e.name, DType: dtype, Shape: e.shape, Data: backendSource{m.backend, e.value}})
	}
	return checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{})
}

// backendSource streams a tensor from the backend to a checkpoint file, one
// tensor at a time in host memory.
type backendSource struct {
	backend kernels.Backend
	tensor  kernels.Tensor
}

func (s backendSource) WriteData(w io.Writer, dtype checkpoint.DType, n int64) error {
	if s.tensor.DType() == kernels.BF16 {
		bits := make([]uint16, s.tensor.Len())
		if err := s.backend.CopyToHostBF16(bits, s.tensor); err != nil {
			return err
		}
		return checkpoint.FromBF16(bits).WriteData(w, dtype, n)
	}
	values := make([]float32, s.tensor.Len())
	if err := s.backend.CopyToHostF32(values, s.tensor); err != nil {
		return err
	}
	return checkpoint.FromFloat32(values).WriteData(w, dtype, n)
}

// SaveConfig writes cfg to dir/config.json with the keys that transformers
// 4.51 writes for Qwen3ForCausalLM. torchDType is the torch_dtype entry, such
// as "float32" or "bfloat16".
func SaveConfig(dir string, cfg Config, torchDType string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	doc := map[string]any{
		"architectures":           []string{"Qwen3ForCausalLM"},
		"model_type":              "qwen3",
		"attention_bias":          false,
		"attention_dropout":       0.0,
		"head_dim":                cfg.HeadDim,
		"hidden_act":              "silu",
		"hidden_size":             cfg.HiddenSize,
		"initializer_range":       cfg.InitializerRange,
		"intermediate_size":       cfg.IntermediateSize,
		"max_position_embeddings": cfg.MaxPositionEmbeddings,
		"max_window_layers":       cfg.NumLayers,
		"num_attention_heads":     cfg.NumHeads,
		"num_hidden_layers":       cfg.NumLayers,
		"num_key_value_heads":     cfg.NumKVHeads,
		"rms_norm_eps":            cfg.RMSNormEps,
		"rope_scaling":            nil,
		"rope_theta":              cfg.RopeTheta,
		"sliding_window":          nil,
		"tie_word_embeddings":     cfg.TieWordEmbeddings,
		"torch_dtype":             torchDType,
		"use_cache":               true,
		"use_sliding_window":      false,
		"vocab_size":              cfg.VocabSize,
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, ConfigFile)
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
