package peft

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ringtune/ringtune/model"
)

// Module is one linear projection of the base model that an adapter adapts.
type Module struct {
	Name       string // PEFT module name, e.g. model.layers.0.self_attn.q_proj
	Weight     string // base weight, Name + ".weight"
	Layer      int
	Projection string // q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj
	Out, In    int    // shape of the base weight
}

// projectionGroups maps each projection to the submodule of a Qwen3 decoder layer that
// contains it.
var projectionGroups = map[string]string{
	"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
	"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp",
}

// moduleName returns the PEFT module name of a projection in a layer.
func moduleName(layer int, projection string) string {
	return fmt.Sprintf("model.layers.%d.%s.%s", layer, projectionGroups[projection], projection)
}

// parseModuleName parses "model.layers.{layer}.{group}.{projection}".
func parseModuleName(name string) (layer int, projection string, ok bool) {
	parts := strings.Split(name, ".")
	if len(parts) != 5 || parts[0] != "model" || parts[1] != "layers" {
		return 0, "", false
	}
	layer, ok = parseLayerIndex(parts[2])
	projection = parts[4]
	if !ok || projectionGroups[projection] == "" || projectionGroups[projection] != parts[3] {
		return 0, "", false
	}
	return layer, projection, true
}

// parseLayerIndex accepts only the decimal form that Python's str(int) produces, because
// PEFT compares module names as strings.
func parseLayerIndex(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

// selector is a target_modules or exclude_modules entry resolved against the Qwen3
// module names.
type selector struct {
	projection string
	layer      int // -1 when the entry names no layer
}

// parseSelector resolves a PEFT entry: it selects a module whose name equals the entry
// or ends with "." + entry. It returns false for an entry that selects no linear
// projection of any Qwen3 model.
func parseSelector(entry string) (selector, bool) {
	parts := strings.Split(entry, ".")
	n := len(parts)
	projection := parts[n-1]
	group := projectionGroups[projection]
	if group == "" || n > 5 {
		return selector{}, false
	}
	sel := selector{projection: projection, layer: -1}
	if n >= 2 && parts[n-2] != group {
		return selector{}, false
	}
	if n >= 3 {
		layer, ok := parseLayerIndex(parts[n-3])
		if !ok {
			return selector{}, false
		}
		sel.layer = layer
	}
	if n >= 4 && parts[n-4] != "layers" {
		return selector{}, false
	}
	if n == 5 && parts[0] != "model" {
		return selector{}, false
	}
	return sel, true
}

func (s selector) matches(layer int, projection string) bool {
	return s.projection == projection && (s.layer < 0 || s.layer == layer)
}

// Targets reports whether the adapter adapts the projection in the given layer, by
// PEFT's rules. An exclude_modules entry wins. Then a target_modules entry equal to the
// full module name selects it, and otherwise an entry must match as a suffix and
// layers_to_transform, when set, must list the layer.
func (c Config) Targets(layer int, projection string) bool {
	for _, entry := range c.ExcludeModules {
		if sel, ok := parseSelector(entry); ok && sel.matches(layer, projection) {
			return false
		}
	}
	if slices.Contains(c.TargetModules, moduleName(layer, projection)) {
		return true
	}
	found := false
	for _, entry := range c.TargetModules {
		if sel, ok := parseSelector(entry); ok && sel.matches(layer, projection) {
			found = true
			break
		}
	}
	if !found {
		return false
	}
	return c.LayersToTransform == nil || slices.Contains(c.LayersToTransform, layer)
}

// Modules returns the projections of base that the adapter adapts, in the order of
// base.Params(). It fails when a target_modules or layers_to_transform entry selects no
// layer of base, or when the adapter adapts nothing.
func (c Config) Modules(base model.Config) ([]Module, error) {
	for _, entry := range c.TargetModules {
		if sel, _ := parseSelector(entry); sel.layer >= base.NumLayers {
			return nil, fieldError("", "target_modules", ErrBase,
				"entry %q names layer %d, but the base model has %d layers (0 to %d)", entry, sel.layer, base.NumLayers, base.NumLayers-1)
		}
	}
	for _, layer := range c.LayersToTransform {
		if layer >= base.NumLayers {
			return nil, fieldError("", "layers_to_transform", ErrBase,
				"layer %d is not in the base model, which has %d layers (0 to %d)", layer, base.NumLayers, base.NumLayers-1)
		}
	}

	var modules []Module
	for _, p := range base.Params() {
		if p.Module == "" || !c.Targets(p.Layer, p.Module) {
			continue
		}
		modules = append(modules, Module{
			Name:       strings.TrimSuffix(p.Name, ".weight"),
			Weight:     p.Name,
			Layer:      p.Layer,
			Projection: p.Module,
			Out:        p.Shape[0],
			In:         p.Shape[1],
		})
	}
	if len(modules) == 0 {
		return nil, fieldError("", "target_modules", ErrBase,
			"%q selects no projection of the base model after exclude_modules and layers_to_transform", c.TargetModules)
	}
	return modules, nil
}

// Expected returns the tensors that adapter_model.safetensors must contain for base:
// lora_A (r, in_features) and lora_B (out_features, r) for every adapted module, in the
// order of base.Params() with A before B, named as PEFT saves them.
func (c Config) Expected(base model.Config) ([]model.AdapterSpec, error) {
	modules, err := c.Modules(base)
	if err != nil {
		return nil, err
	}
	specs := make([]model.AdapterSpec, 0, 2*len(modules))
	for _, m := range modules {
		specs = append(specs,
			model.AdapterSpec{Name: TensorName(m.Name, true), Base: m.Weight, Shape: []int{c.Rank, m.In}, IsA: true},
			model.AdapterSpec{Name: TensorName(m.Name, false), Base: m.Weight, Shape: []int{m.Out, c.Rank}},
		)
	}
	return specs, nil
}

// TensorName returns the key under which PEFT saves a module's lora_A (isA) or lora_B
// matrix.
func TensorName(module string, isA bool) string {
	if isA {
		return "base_model.model." + module + ".lora_A.weight"
	}
	return "base_model.model." + module + ".lora_B.weight"
}

// parseTensorName splits a PEFT key into its module name and matrix. It accepts keys
// with ".default" before ".weight" and returns the key without it.
func parseTensorName(key string) (module string, isA bool, canonical string, ok bool) {
	rest, found := strings.CutPrefix(key, "base_model.model.")
	if !found {
		return "", false, "", false
	}
	for _, suffix := range []string{".lora_A.weight", ".lora_A.default.weight", ".lora_B.weight", ".lora_B.default.weight"} {
		if m, found := strings.CutSuffix(rest, suffix); found {
			isA = strings.HasPrefix(suffix, ".lora_A")
			return m, isA, TensorName(m, isA), true
		}
	}
	return "", false, "", false
}
