package peft

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringtune/ringtune/model"
)

// File names of a PEFT adapter directory (CONFIG_NAME and SAFETENSORS_WEIGHTS_NAME in
// PEFT's src/peft/utils/constants.py).
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// allLinear is PEFT's target_modules shorthand for every linear layer except the output
// head (INCLUDE_LINEAR_LAYERS_SHORTHAND). For Qwen3 these are the seven projections.
const allLinear = "all-linear"

// Config is the LoRA configuration of an adapter: the fields of PEFT's LoraConfig that
// change which weights exist or what they compute.
type Config struct {
	Rank    int     // r
	Alpha   float64 // lora_alpha
	Dropout float64 // lora_dropout; training only, merging ignores it

	// TargetModules lists PEFT module name suffixes such as "q_proj",
	// "self_attn.q_proj" or "model.layers.3.mlp.up_proj". Reading expands "all-linear"
	// to the seven projections.
	TargetModules []string
	// ExcludeModules lists module name suffixes to leave out, or nil.
	ExcludeModules []string
	// LayersToTransform lists the decoder layers to adapt, or nil for all of them.
	LayersToTransform []int

	// UseRSLoRA selects rank-stabilized scaling, lora_alpha / sqrt(r).
	UseRSLoRA bool

	BaseModelNameOrPath string // base_model_name_or_path, "" for null
	Revision            string // revision of the base model, "" for null

	// PEFTVersion is peft_version as read, which PEFT 0.18 and later record. Marshal
	// does not write it.
	PEFTVersion string
}

// FromLoRA returns the adapter configuration of ringtune's LoRA training for a base model
// named baseModel.
func FromLoRA(lora model.LoRAConfig, baseModel string) Config {
	return Config{
		Rank:                lora.Rank,
		Alpha:               lora.Alpha,
		Dropout:             lora.Dropout,
		TargetModules:       slices.Clone(lora.TargetModules),
		BaseModelNameOrPath: baseModel,
	}
}

// LoRA returns the configuration as ringtune's training takes it. It fails for adapters
// that it cannot express: rs-LoRA scaling, a subset of layers, or module names other than
// the plain projection names.
func (c Config) LoRA() (model.LoRAConfig, error) {
	switch {
	case c.UseRSLoRA:
		return model.LoRAConfig{}, errors.New("use_rslora is true, but ringtune's LoRA training scales by lora_alpha / r")
	case c.LayersToTransform != nil || c.ExcludeModules != nil:
		return model.LoRAConfig{}, errors.New("the adapter covers a subset of layers, but ringtune's LoRA training adapts every layer")
	}
	lora := model.LoRAConfig{Rank: c.Rank, Alpha: c.Alpha, Dropout: c.Dropout, TargetModules: slices.Clone(c.TargetModules)}
	if err := lora.Validate(); err != nil {
		return model.LoRAConfig{}, err
	}
	return lora, nil
}

// Scaling returns the factor on B·A: lora_alpha / r, or lora_alpha / sqrt(r) with
// use_rslora, as LoraLayer.update_layer in PEFT's src/peft/tuners/lora/layer.py sets it.
func (c Config) Scaling() float64 {
	if c.UseRSLoRA {
		return c.Alpha / math.Sqrt(float64(c.Rank))
	}
	return c.Alpha / float64(c.Rank)
}

// Validate checks the values and that every target_modules entry can name a Qwen3
// projection. Errors are *Error values that name the field.
func (c Config) Validate() error {
	switch {
	case c.Rank <= 0:
		return fieldError("", "r", ErrInvalidConfig, "r is %d: it must be a positive integer", c.Rank)
	case !(c.Alpha > 0) || math.IsInf(c.Alpha, 0):
		return fieldError("", "lora_alpha", ErrInvalidConfig, "lora_alpha is %v: it must be a positive finite number", c.Alpha)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return fieldError("", "lora_dropout", ErrInvalidConfig, "lora_dropout is %v: it must be in [0, 1)", c.Dropout)
	case len(c.TargetModules) == 0:
		return fieldError("", "target_modules", ErrInvalidConfig,
			"target_modules is empty: list the projections to adapt, any of %s", strings.Join(model.ProjectionModules(), ", "))
	}
	seen := map[string]bool{}
	for _, entry := range c.TargetModules {
		if _, ok := parseSelector(entry); !ok {
			return fieldError("", "target_modules", ErrUnsupported,
				"entry %q names no linear projection of a Qwen3 decoder layer: use module names such as %s, self_attn.q_proj or model.layers.0.mlp.up_proj",
				entry, strings.Join(model.ProjectionModules(), ", "))
		}
		if seen[entry] {
			return fieldError("", "target_modules", ErrInvalidConfig, "entry %q is listed twice", entry)
		}
		seen[entry] = true
	}
	for _, entry := range c.ExcludeModules {
		if entry == "" {
			return fieldError("", "exclude_modules", ErrInvalidConfig, "an entry is empty")
		}
	}
	if c.LayersToTransform != nil && len(c.LayersToTransform) == 0 {
		return fieldError("", "layers_to_transform", ErrInvalidConfig, "the list is empty: use nil to adapt every layer")
	}
	layers := map[int]bool{}
	for _, layer := range c.LayersToTransform {
		if layer < 0 || layers[layer] {
			return fieldError("", "layers_to_transform", ErrInvalidConfig, "entry %d is negative or listed twice", layer)
		}
		layers[layer] = true
	}
	return nil
}

// Marshal returns adapter_config.json as PeftModel.save_pretrained of PEFT 0.10.0 to
// 0.13.2 writes it for a LoRA on a causal language model: json.dumps(indent=2,
// sort_keys=True) of the 24 LoraConfig fields, inference_mode true. exclude_modules is
// added when set, and then the file needs PEFT 0.14 or later.
func (c Config) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	fields := pyObject{
		"alpha_pattern":           pyObject{},
		"auto_mapping":            nil,
		"base_model_name_or_path": nullIfEmpty(c.BaseModelNameOrPath),
		"bias":                    "none",
		"fan_in_fan_out":          false,
		"inference_mode":          true,
		"init_lora_weights":       true,
		"layer_replication":       nil,
		"layers_pattern":          nil,
		"layers_to_transform":     nil,
		"loftq_config":            pyObject{},
		"lora_alpha":              pythonNumber(c.Alpha),
		"lora_dropout":            pyFloat(c.Dropout),
		"megatron_config":         nil,
		"megatron_core":           "megatron.core",
		"modules_to_save":         nil,
		"peft_type":               "LORA",
		"r":                       c.Rank,
		"rank_pattern":            pyObject{},
		"revision":                nullIfEmpty(c.Revision),
		"target_modules":          slices.Clone(c.TargetModules),
		"task_type":               "CAUSAL_LM",
		"use_dora":                false,
		"use_rslora":              c.UseRSLoRA,
	}
	if c.LayersToTransform != nil {
		fields["layers_to_transform"] = slices.Clone(c.LayersToTransform)
	}
	if c.ExcludeModules != nil {
		fields["exclude_modules"] = slices.Clone(c.ExcludeModules)
	}
	return []byte(encodePython(fields)), nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// pythonNumber writes an integral value as a Python int, the type of LoraConfig's
// lora_alpha, and other values as a float.
func pythonNumber(f float64) any {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int(f)
	}
	return pyFloat(f)
}

// WriteConfig writes dir/adapter_config.json through a temporary file that is renamed
// into place, so readers see the old file or the complete new one.
func WriteConfig(dir string, c Config) error {
	data, err := c.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, ConfigFile), data)
}

// ReadConfig reads and validates dir/adapter_config.json.
func ReadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Config{}, &Error{Path: path, Kind: ErrInvalidConfig,
				Msg: "file not found: an adapter directory needs adapter_config.json and adapter_model.safetensors, as PEFT's save_pretrained writes them"}
		}
		return Config{}, &Error{Path: path, Kind: ErrInvalidConfig, Msg: "cannot read the file", Err: err}
	}
	return ParseConfig(data, path)
}

// ParseConfig reads adapter_config.json and rejects, naming the field, the options that
// this package does not implement. name labels errors.
func ParseConfig(data []byte, name string) (Config, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return Config{}, &Error{Path: name, Kind: ErrInvalidConfig, Msg: "invalid JSON", Err: err}
	}
	if raw == nil {
		return Config{}, &Error{Path: name, Kind: ErrInvalidConfig, Msg: "the file contains null, not a JSON object"}
	}
	for _, required := range []string{"peft_type", "r", "lora_alpha", "target_modules"} {
		if _, ok := raw[required]; !ok {
			return Config{}, fieldError(name, required, ErrInvalidConfig, "missing: PEFT writes it for every LoRA adapter")
		}
	}

	var c Config
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys) // reports the first problem in a stable order
	for _, key := range keys {
		if err := parseField(&c, key, raw[key]); err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Path, e.Field = name, key
				return Config{}, e
			}
			return Config{}, fieldError(name, key, ErrInvalidConfig, "%v", err)
		}
	}
	if err := c.Validate(); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Path = name
		}
		return Config{}, err
	}
	return c, nil
}
