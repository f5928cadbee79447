package peft

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ringtune/ringtune/model"
)

// parseField stores or checks one adapter_config.json field. The keys are the dataclass
// fields of PEFT's PeftConfig and LoraConfig up to 0.20.1.dev0. An *Error result gets
// the path and field from the caller, and any other error is reported as an invalid
// value.
func parseField(c *Config, key string, raw json.RawMessage) error {
	switch key {
	case "peft_type":
		s, err := decodeString(raw)
		if err != nil {
			return err
		}
		if s != "LORA" {
			return unsupported("peft_type is %q: only LoRA adapters (peft_type \"LORA\") are supported", s)
		}
	case "task_type":
		s, err := decodeOptionalString(raw)
		if err != nil {
			return err
		}
		if s != "" && s != "CAUSAL_LM" {
			return unsupported("task_type is %q: only adapters of a causal language model (CAUSAL_LM) are supported", s)
		}
	case "base_model_name_or_path":
		return decodeInto(raw, &c.BaseModelNameOrPath, decodeOptionalString)
	case "revision":
		return decodeInto(raw, &c.Revision, decodeOptionalString)
	case "peft_version":
		return decodeInto(raw, &c.PEFTVersion, decodeOptionalString)
	case "inference_mode", "ensure_weight_tying":
		_, err := decodeBool(raw)
		return err
	case "fan_in_fan_out":
		// PEFT's dispatch_default (src/peft/tuners/lora/layer.py) warns and resets
		// fan_in_fan_out to False for a torch.nn.Linear base layer, which every Qwen3
		// projection is, so the stored matrices have the usual layout either way.
		_, err := decodeBool(raw)
		return err
	case "use_rslora":
		return decodeInto(raw, &c.UseRSLoRA, decodeBool)
	case "r":
		return decodeInto(raw, &c.Rank, decodeInt)
	case "lora_alpha":
		return decodeInto(raw, &c.Alpha, decodeNumber)
	case "lora_dropout":
		return decodeInto(raw, &c.Dropout, decodeNumber)
	case "target_modules":
		return parseTargetModules(c, raw)
	case "exclude_modules":
		return parseExcludeModules(c, raw)
	case "layers_to_transform":
		return parseLayersToTransform(c, raw)
	case "layers_pattern":
		return checkLayersPattern(raw)
	case "bias":
		s, err := decodeString(raw)
		if err != nil {
			return err
		}
		if s != "none" {
			return unsupported("bias is %q: only \"none\" is supported, because the other values train and save bias vectors that the merge does not apply", s)
		}
	case "init_lora_weights":
		return checkInitLoRAWeights(raw)
	case "use_dora":
		return requireEmpty(raw, "DoRA adds a magnitude vector per module that the merge does not apply")
	case "use_qalora":
		return requireEmpty(raw, "QA-LoRA pools the input of quantized layers, which ringtune does not implement")
	case "lora_bias":
		return requireEmpty(raw, "lora_bias adds a bias to lora_B that the merge does not apply")
	case "modules_to_save":
		return requireEmpty(raw, "modules_to_save stores whole trained modules, which ringtune does not merge")
	case "rank_pattern":
		return requireEmpty(raw, "per-module ranks are not supported, every module must use r")
	case "alpha_pattern":
		return requireEmpty(raw, "per-module alphas are not supported, every module must use lora_alpha")
	case "layer_replication":
		return requireEmpty(raw, "replicated layers change the base model's architecture")
	case "megatron_config":
		return requireEmpty(raw, "Megatron parallel layers are not supported")
	case "trainable_token_indices":
		return requireEmpty(raw, "trainable token embeddings are not supported")
	case "target_parameters":
		return requireEmpty(raw, "LoRA on nn.Parameter targets is not supported")
	case "alora_invocation_tokens":
		return requireEmpty(raw, "Activated LoRA applies the adapter to some tokens only and cannot be merged")
	case "velora_config", "monteclora_config", "arrow_config", "kasa_config", "use_bdlora":
		return requireEmpty(raw, "LoRA variants are not supported, only plain LoRA")
	case "megatron_core", "loftq_config", "eva_config", "corda_config", "lora_ga_config",
		"qalora_group_size", "auto_mapping", "runtime_config":
		// Settings of initialization methods, of features rejected above, or of the
		// runtime: none changes a trained plain LoRA adapter.
	default:
		if !isEmptyJSON(raw) {
			return unsupported("%s is not a LoraConfig field of PEFT up to 0.20, so its effect on the adapter is unknown: remove it if it does not change the LoRA weights or math", string(raw))
		}
	}
	return nil
}

func unsupported(format string, args ...any) error {
	return &Error{Kind: ErrUnsupported, Msg: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &Error{Kind: ErrInvalidConfig, Msg: fmt.Sprintf(format, args...)}
}

func decodeInto[T any](raw json.RawMessage, dst *T, decode func(json.RawMessage) (T, error)) error {
	v, err := decode(raw)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

func isNull(raw json.RawMessage) bool {
	return strings.TrimSpace(string(raw)) == "null"
}

// isEmptyJSON reports whether raw is null, false, "", [] or {}: the values that PEFT
// uses as "off" defaults.
func isEmptyJSON(raw json.RawMessage) bool {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return false
	}
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

func requireEmpty(raw json.RawMessage, reason string) error {
	if isEmptyJSON(raw) {
		return nil
	}
	return unsupported("%s is not supported: %s", string(raw), reason)
}

func decodeString(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid("%s is not a string", string(raw))
	}
	return s, nil
}

func decodeOptionalString(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	return decodeString(raw)
}

func decodeBool(raw json.RawMessage) (bool, error) {
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, invalid("%s is not true or false", string(raw))
	}
	return b, nil
}

func decodeNumber(raw json.RawMessage) (float64, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, invalid("%s is not a number", string(raw))
	}
	return f, nil
}

func decodeInt(raw json.RawMessage) (int, error) {
	f, err := decodeNumber(raw)
	if err != nil {
		return 0, err
	}
	if f != math.Trunc(f) || math.Abs(f) > 1<<31 {
		return 0, invalid("%s is not an integer", string(raw))
	}
	return int(f), nil
}

// parseTargetModules accepts a list of module names or PEFT's "all-linear" shorthand. A
// string is otherwise a regular expression for Python's re.fullmatch, which is not
// supported: Go's regexp syntax differs, and the result would have to match PEFT's
// exactly.
func parseTargetModules(c *Config, raw json.RawMessage) error {
	if isNull(raw) {
		return invalid("target_modules is null: list the projections to adapt, any of %s", strings.Join(model.ProjectionModules(), ", "))
	}
	var pattern string
	if json.Unmarshal(raw, &pattern) == nil {
		if strings.EqualFold(pattern, allLinear) {
			c.TargetModules = model.ProjectionModules()
			return nil
		}
		return unsupported("%q is a regular expression, which is not supported: list the module names instead, such as [\"q_proj\", \"v_proj\"]", pattern)
	}
	var names []string
	if err := json.Unmarshal(raw, &names); err != nil {
		return invalid("%s is not a list of module names", string(raw))
	}
	c.TargetModules = names
	return nil
}

func parseExcludeModules(c *Config, raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var pattern string
	if json.Unmarshal(raw, &pattern) == nil {
		return unsupported("%q is a regular expression, which is not supported: list the module names instead", pattern)
	}
	var names []string
	if err := json.Unmarshal(raw, &names); err != nil {
		return invalid("%s is not a list of module names", string(raw))
	}
	if len(names) > 0 {
		c.ExcludeModules = names
	}
	return nil
}

// parseLayersToTransform accepts null, one layer index or a list. PEFT treats an empty
// list like null.
func parseLayersToTransform(c *Config, raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var layer int
	if json.Unmarshal(raw, &layer) == nil {
		c.LayersToTransform = []int{layer}
		return nil
	}
	var layers []int
	if err := json.Unmarshal(raw, &layers); err != nil {
		return invalid("%s is not a layer index or a list of layer indices", string(raw))
	}
	if len(layers) > 0 {
		c.LayersToTransform = layers
	}
	return nil
}

// checkLayersPattern accepts the patterns under which PEFT finds Qwen3's layer index:
// none, or "layers" (the nn.ModuleList model.layers).
func checkLayersPattern(raw json.RawMessage) error {
	if isEmptyJSON(raw) {
		return nil
	}
	var patterns []string
	var single string
	if json.Unmarshal(raw, &single) == nil {
		patterns = []string{single}
	} else if err := json.Unmarshal(raw, &patterns); err != nil {
		return invalid("%s is not a string or a list of strings", string(raw))
	}
	if slices.ContainsFunc(patterns, func(p string) bool { return p != "layers" }) {
		return unsupported("%s is not supported: Qwen3's decoder layers are model.layers, so use \"layers\" or null", string(raw))
	}
	return nil
}

// checkInitLoRAWeights accepts the initializations that leave the base weights alone.
// PiSSA, OLoRA, CorDA and LoRA-GA subtract the initial adapter from the base weights,
// LoftQ quantizes them, and MiCA is a LoRA variant. Such an adapter is valid on the
// original base only after save_pretrained converted it, which sets init_lora_weights
// to true.
func checkInitLoRAWeights(raw json.RawMessage) error {
	if _, err := decodeBool(raw); err == nil {
		return nil
	}
	s, err := decodeString(raw)
	if err != nil {
		return invalid("%s is neither true, false nor an initialization name", string(raw))
	}
	switch strings.ToLower(s) {
	case "gaussian", "eva", "orthogonal":
		return nil
	}
	return unsupported("%q is not supported: this initialization changes the base weights or is a LoRA variant, so the adapter does not apply to the original base model; save it with path_initial_model_for_weight_conversion to convert it to plain LoRA", s)
}
