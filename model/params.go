package model

import (
	"fmt"
	"slices"
	"strings"
)

// ParamSpec is one tensor of the model: its Hugging Face name, shape and training role.
// Every buffer (weights, gradients, optimizer state, all-reduce buckets, checkpoint files)
// is laid out from the ordered list of specs that Params returns.
type ParamSpec struct {
	Name  string
	Shape []int // row-major; linear weights are (out, in) as in PyTorch

	// Layer is the decoder layer index, or -1 for the embedding, final norm and head.
	Layer int

	// Module is the projection a LoRA adapter can target (q_proj, ..., down_proj), or ""
	// for norms and embeddings.
	Module string

	// Decay reports whether AdamW applies weight decay. Norm weights are exempt, as in
	// Hugging Face's Trainer, which decays every weight except biases and norms.
	Decay bool
}

// NumElements returns the product of the shape.
func (p ParamSpec) NumElements() int64 {
	n := int64(1)
	for _, d := range p.Shape {
		n *= int64(d)
	}
	return n
}

// Projection modules, in the order they appear in a decoder layer.
var projectionModules = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// ProjectionModules returns the names of the seven linear projections of a decoder layer.
func ProjectionModules() []string { return slices.Clone(projectionModules) }

// Params returns the model's tensors in Hugging Face's order: embedding, then each layer,
// then the final norm and, unless tied to the embedding, lm_head.
func (c Config) Params() []ParamSpec {
	C, I, HS := c.HiddenSize, c.IntermediateSize, c.HeadDim
	qDim, kvDim := c.NumHeads*HS, c.NumKVHeads*HS

	params := []ParamSpec{{Name: "model.embed_tokens.weight", Shape: []int{c.VocabSize, C}, Layer: -1, Decay: true}}
	for l := 0; l < c.NumLayers; l++ {
		prefix := fmt.Sprintf("model.layers.%d.", l)
		norm := func(name string, size int) ParamSpec {
			return ParamSpec{Name: prefix + name, Shape: []int{size}, Layer: l}
		}
		linear := func(group, module string, out, in int) ParamSpec {
			return ParamSpec{Name: prefix + group + "." + module + ".weight", Shape: []int{out, in}, Layer: l, Module: module, Decay: true}
		}
		params = append(params,
			norm("input_layernorm.weight", C),
			linear("self_attn", "q_proj", qDim, C),
			linear("self_attn", "k_proj", kvDim, C),
			linear("self_attn", "v_proj", kvDim, C),
			linear("self_attn", "o_proj", C, qDim),
			norm("self_attn.q_norm.weight", HS),
			norm("self_attn.k_norm.weight", HS),
			norm("post_attention_layernorm.weight", C),
			linear("mlp", "gate_proj", I, C),
			linear("mlp", "up_proj", I, C),
			linear("mlp", "down_proj", C, I),
		)
	}
	params = append(params, ParamSpec{Name: "model.norm.weight", Shape: []int{C}, Layer: -1})
	if !c.TieWordEmbeddings {
		params = append(params, ParamSpec{Name: "lm_head.weight", Shape: []int{c.VocabSize, C}, Layer: -1, Decay: true})
	}
	return params
}

// NumParams returns the number of parameters, counting a tied embedding once.
func (c Config) NumParams() int64 {
	var n int64
	for _, p := range c.Params() {
		n += p.NumElements()
	}
	return n
}

// LoRAConfig selects the low-rank adapters of LoRA training, with PEFT's meaning of each
// field.
type LoRAConfig struct {
	Rank          int      `json:"r"`
	Alpha         float64  `json:"lora_alpha"`
	Dropout       float64  `json:"lora_dropout"`
	TargetModules []string `json:"target_modules"`
}

// DefaultLoRA returns rank 8, alpha 16, dropout 0 on the attention projections.
func DefaultLoRA() LoRAConfig {
	return LoRAConfig{Rank: 8, Alpha: 16, TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj"}}
}

// Scaling returns alpha / rank, the factor on the adapter's output.
func (l LoRAConfig) Scaling() float64 { return l.Alpha / float64(l.Rank) }

// Validate checks the rank, alpha, dropout and that every target names a projection.
func (l LoRAConfig) Validate() error {
	if l.Rank <= 0 {
		return fmt.Errorf("LoRA rank %d must be positive", l.Rank)
	}
	if l.Alpha <= 0 {
		return fmt.Errorf("LoRA alpha %v must be positive", l.Alpha)
	}
	if l.Dropout < 0 || l.Dropout >= 1 {
		return fmt.Errorf("LoRA dropout %v must be in [0, 1)", l.Dropout)
	}
	if len(l.TargetModules) == 0 {
		return fmt.Errorf("LoRA needs at least one target module: any of %s", strings.Join(projectionModules, ", "))
	}
	seen := map[string]bool{}
	for _, m := range l.TargetModules {
		if !slices.Contains(projectionModules, m) {
			return fmt.Errorf("LoRA target module %q is not a projection: use any of %s (the tied embedding is never a target)", m, strings.Join(projectionModules, ", "))
		}
		if seen[m] {
			return fmt.Errorf("LoRA target module %q is listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// AdapterSpec is one LoRA matrix and the base weight it adapts.
type AdapterSpec struct {
	Name  string // PEFT key, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
	Base  string // Hugging Face name of the adapted weight
	Shape []int  // lora_A: (r, in); lora_B: (out, r)
	IsA   bool
}

// NumElements returns the product of the shape.
func (a AdapterSpec) NumElements() int64 { return int64(a.Shape[0]) * int64(a.Shape[1]) }

// Adapters returns the LoRA matrices for cfg, in the base model's parameter order with A
// before B, named as PEFT saves them in adapter_model.safetensors.
func (c Config) Adapters(lora LoRAConfig) []AdapterSpec {
	var specs []AdapterSpec
	for _, p := range c.Params() {
		if p.Module == "" || !slices.Contains(lora.TargetModules, p.Module) {
			continue
		}
		out, in := p.Shape[0], p.Shape[1]
		prefix := "base_model.model." + strings.TrimSuffix(p.Name, ".weight")
		specs = append(specs,
			AdapterSpec{Name: prefix + ".lora_A.weight", Base: p.Name, Shape: []int{lora.Rank, in}, IsA: true},
			AdapterSpec{Name: prefix + ".lora_B.weight", Base: p.Name, Shape: []int{out, lora.Rank}},
		)
	}
	return specs
}

// NumLoRAParams returns the number of trainable parameters in LoRA mode.
func (c Config) NumLoRAParams(lora LoRAConfig) int64 {
	var n int64
	for _, a := range c.Adapters(lora) {
		n += a.NumElements()
	}
	return n
}

// TrainableSpecs returns the tensors that Model.Trainable returns for a model
// built with cfg and opts, in the same order and with the same names and shapes,
// without allocating the model. In ModeLoRA they are the adapters, each with the
// Layer and Module of the weight it adapts. Only opts.Mode and opts.LoRA matter.
func TrainableSpecs(cfg Config, opts Options) ([]ParamSpec, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch opts.Mode {
	case ModeFull:
		return cfg.Params(), nil
	case ModeLoRA:
		if err := opts.LoRA.Validate(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("invalid mode %v: use ModeFull or ModeLoRA", opts.Mode)
	}
	bases := map[string]ParamSpec{}
	for _, p := range cfg.Params() {
		bases[p.Name] = p
	}
	adapters := cfg.Adapters(opts.LoRA)
	specs := make([]ParamSpec, len(adapters))
	for i, a := range adapters {
		base := bases[a.Base]
		specs[i] = ParamSpec{Name: a.Name, Shape: a.Shape, Layer: base.Layer, Module: base.Module, Decay: true}
	}
	return specs, nil
}
