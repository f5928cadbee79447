package model

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ConfigFile is the name of a Hugging Face model configuration inside a model directory.
const ConfigFile = "config.json"

// Config is the shape of a Qwen3 model, read from a Hugging Face config.json.
type Config struct {
	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumLayers             int     `json:"num_hidden_layers"`
	NumHeads              int     `json:"num_attention_heads"`
	NumKVHeads            int     `json:"num_key_value_heads"`
	HeadDim               int     `json:"head_dim"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	RopeTheta             float64 `json:"rope_theta"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	TieWordEmbeddings     bool    `json:"tie_word_embeddings"`
	// InitializerRange is the standard deviation of the normal distribution that
	// Model.InitRandom draws linear and embedding weights from. It describes
	// initialization only, so loaded weights ignore it.
	InitializerRange float64 `json:"initializer_range"`
}

// presets are the named shapes that Preset returns. qwen3-0.6b is the released Qwen3-0.6B;
// tiny and small keep its vocabulary and shrink the rest, for tests and benchmarks.
var presets = map[string]Config{
	"qwen3-0.6b": {
		VocabSize: 151936, HiddenSize: 1024, IntermediateSize: 3072, NumLayers: 28,
		NumHeads: 16, NumKVHeads: 8, HeadDim: 128, RMSNormEps: 1e-6, RopeTheta: 1e6,
		MaxPositionEmbeddings: 40960, TieWordEmbeddings: true, InitializerRange: 0.02,
	},
	"small": {
		VocabSize: 151936, HiddenSize: 512, IntermediateSize: 1536, NumLayers: 8,
		NumHeads: 8, NumKVHeads: 4, HeadDim: 64, RMSNormEps: 1e-6, RopeTheta: 1e6,
		MaxPositionEmbeddings: 40960, TieWordEmbeddings: true, InitializerRange: 0.02,
	},
	"tiny": {
		VocabSize: 151936, HiddenSize: 256, IntermediateSize: 768, NumLayers: 4,
		NumHeads: 4, NumKVHeads: 2, HeadDim: 64, RMSNormEps: 1e-6, RopeTheta: 1e6,
		MaxPositionEmbeddings: 40960, TieWordEmbeddings: true, InitializerRange: 0.02,
	},
}

// PresetNames returns the names Preset accepts, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for name := range presets {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Preset returns the named shape: qwen3-0.6b, small or tiny.
func Preset(name string) (Config, error) {
	cfg, ok := presets[strings.ToLower(name)]
	if !ok {
		return Config{}, fmt.Errorf("unknown model preset %q: use one of %s, or a config.json path", name, strings.Join(PresetNames(), ", "))
	}
	return cfg, nil
}

// ResolveConfig returns a preset by name, or reads config.json from a path that is a
// model directory or the file itself.
func ResolveConfig(nameOrPath string) (Config, error) {
	if _, ok := presets[strings.ToLower(nameOrPath)]; ok {
		return Preset(nameOrPath)
	}
	return LoadConfig(nameOrPath)
}

// LoadConfig reads a Hugging Face config.json, given as the file or its directory.
func LoadConfig(path string) (Config, error) {
	if info, err := os.Stat(path); err == nil && info.IsDir() {
		path = filepath.Join(path, ConfigFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Config{}, fmt.Errorf("%s not found: pass a Hugging Face model directory, its config.json, or a preset (%s)", path, strings.Join(PresetNames(), ", "))
		}
		return Config{}, err
	}
	return ParseConfig(data, path)
}

// hfConfig is config.json as transformers 4.x and 5.x write it for Qwen3, with the
// fields ringtune checks but does not keep.
type hfConfig struct {
	Config
	ModelType       string          `json:"model_type"`
	HiddenAct       string          `json:"hidden_act"`
	AttentionBias   bool            `json:"attention_bias"`
	UseSlidingWin   bool            `json:"use_sliding_window"`
	RopeScaling     json.RawMessage `json:"rope_scaling"`
	RopeParameters  json.RawMessage `json:"rope_parameters"`
	LayerTypes      []string        `json:"layer_types"`
	HeadDimExplicit *int            `json:"head_dim"` // shadows Config.HeadDim to tell absent from 0

	NumKVHeadsExplicit *int `json:"num_key_value_heads"` // shadows Config.NumKVHeads
}

// jsonKind names a Go kind as the JSON type a config field expects.
func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "struct", "map", "ptr":
		return "an object"
	case "slice":
		return "a list"
	}
	return "a " + goKind
}

// ParseConfig reads a Qwen3 config.json and rejects settings whose math ringtune does not
// implement, since running them would silently compute another model. name only labels
// errors.
func ParseConfig(data []byte, name string) (Config, error) {
	var raw hfConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			field := typeErr.Field[strings.LastIndex(typeErr.Field, ".")+1:]
			return Config{}, fmt.Errorf("%s: field %q: expected %s, found %s", name, field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
		}
		return Config{}, fmt.Errorf("%s: invalid JSON: %w", name, err)
	}
	if dec.More() {
		return Config{}, fmt.Errorf("%s: invalid JSON: data after the top-level object at byte %d", name, dec.InputOffset())
	}
	fail := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}

	switch {
	case raw.ModelType != "" && raw.ModelType != "qwen3":
		return fail("model_type %q is not supported: ringtune implements Qwen3 (model_type \"qwen3\")", raw.ModelType)
	case raw.HiddenAct != "" && raw.HiddenAct != "silu":
		return fail("hidden_act %q is not supported: Qwen3 uses silu", raw.HiddenAct)
	case raw.AttentionBias:
		return fail("attention_bias true is not supported: Qwen3's projections have no bias")
	case raw.UseSlidingWin:
		return fail("use_sliding_window true is not supported: ringtune implements full attention only")
	}
	for i, kind := range raw.LayerTypes {
		if kind != "full_attention" {
			return fail("layer_types[%d] %q is not supported: ringtune implements full attention only", i, kind)
		}
	}
	if err := checkRope(raw.RopeScaling, "rope_scaling"); err != nil {
		return fail("%v", err)
	}
	if len(raw.RopeParameters) > 0 && string(raw.RopeParameters) != "null" {
		// transformers 5 moves rope_theta into rope_parameters.
		var params struct {
			RopeType  string   `json:"rope_type"`
			RopeTheta *float64 `json:"rope_theta"`
		}
		if err := json.Unmarshal(raw.RopeParameters, &params); err != nil {
			return fail("rope_parameters: %v", err)
		}
		if params.RopeType != "" && params.RopeType != "default" {
			return fail("rope_parameters.rope_type %q is not supported: ringtune implements the default rotary embedding only", params.RopeType)
		}
		if params.RopeTheta != nil {
			raw.RopeTheta = *params.RopeTheta
		}
	}

	cfg := raw.Config
	if raw.NumKVHeadsExplicit != nil {
		cfg.NumKVHeads = *raw.NumKVHeadsExplicit
	} else {
		cfg.NumKVHeads = cfg.NumHeads // transformers' default when absent: no grouping
	}
	switch {
	case raw.HeadDimExplicit != nil:
		cfg.HeadDim = *raw.HeadDimExplicit
	case cfg.NumHeads > 0:
		cfg.HeadDim = cfg.HiddenSize / cfg.NumHeads // transformers' default when absent
	}
	if cfg.RopeTheta == 0 {
		cfg.RopeTheta = 10000 // transformers' Qwen3Config default
	}
	if cfg.RMSNormEps == 0 {
		cfg.RMSNormEps = 1e-6 // transformers' Qwen3Config default
	}
	if cfg.InitializerRange == 0 {
		cfg.InitializerRange = 0.02 // transformers' Qwen3Config default
	}
	if err := cfg.Validate(); err != nil {
		return fail("%v", err)
	}
	return cfg, nil
}

// checkRope accepts a null rope_scaling or one of the default type.
func checkRope(raw json.RawMessage, field string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var scaling struct {
		Type     string `json:"type"`
		RopeType string `json:"rope_type"`
	}
	if err := json.Unmarshal(raw, &scaling); err != nil {
		return fmt.Errorf("%s: expected null or an object with \"rope_type\", found %s", field, truncateJSON(raw))
	}
	kind := cmp.Or(scaling.RopeType, scaling.Type)
	if kind != "default" {
		return fmt.Errorf("%s %s is not supported: ringtune implements unscaled rotary embeddings only (remove rope_scaling or set it to null)", field, truncateJSON(raw))
	}
	return nil
}

// Validate checks that the shape is complete and consistent.
func (c Config) Validate() error {
	positive := []struct {
		name  string
		value int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize}, {"num_hidden_layers", c.NumLayers},
		{"num_attention_heads", c.NumHeads}, {"num_key_value_heads", c.NumKVHeads},
		{"head_dim", c.HeadDim}, {"max_position_embeddings", c.MaxPositionEmbeddings},
	}
	for _, p := range positive {
		if p.value <= 0 {
			return fmt.Errorf("%s is %d: it must be a positive integer", p.name, p.value)
		}
	}
	// Sanity bounds on the format, far above any released Qwen3 (at most 64 layers,
	// hidden size 5120, vocabulary 151936), so that a corrupt config.json fails here
	// rather than in an allocation of terabytes.
	limits := []struct {
		name         string
		value, limit int
	}{
		{"vocab_size", c.VocabSize, 1 << 24}, {"hidden_size", c.HiddenSize, 1 << 20},
		{"intermediate_size", c.IntermediateSize, 1 << 22}, {"num_hidden_layers", c.NumLayers, 1 << 12},
		{"num_attention_heads", c.NumHeads, 1 << 12}, {"head_dim", c.HeadDim, 1 << 14},
		{"max_position_embeddings", c.MaxPositionEmbeddings, 1 << 26},
	}
	for _, l := range limits {
		if l.value > l.limit {
			return fmt.Errorf("%s is %d, above the largest supported value %d: check config.json", l.name, l.value, l.limit)
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads)
	}
	if c.RMSNormEps <= 0 || math.IsNaN(c.RMSNormEps) || math.IsInf(c.RMSNormEps, 0) {
		return fmt.Errorf("rms_norm_eps %v must be a positive finite number", c.RMSNormEps)
	}
	if c.RopeTheta <= 1 || math.IsNaN(c.RopeTheta) || math.IsInf(c.RopeTheta, 0) {
		return fmt.Errorf("rope_theta %v must be a finite number above 1", c.RopeTheta)
	}
	if c.InitializerRange < 0 || math.IsNaN(c.InitializerRange) || math.IsInf(c.InitializerRange, 0) {
		return fmt.Errorf("initializer_range %v must be a finite number, 0 or above", c.InitializerRange)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("head_dim %d must be even for rotary embeddings", c.HeadDim)
	}
	return nil
}

func truncateJSON(raw json.RawMessage) string {
	const maxLen = 60
	compact := strings.Join(strings.Fields(string(raw)), " ")
	if len(compact) > maxLen {
		return compact[:maxLen] + "..."
	}
	return compact
}
