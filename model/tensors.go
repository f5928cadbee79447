package model

import (
	"fmt"
	"slices"

	"github.com/ringtune/ringtune/kernels"
)

// tensorEntry is one tensor of the model: a row of the parameter table or an
// adapter, with its storage.
type tensorEntry struct {
	name  string
	shape []int
	decay bool
	// frozen tensors have no gradient. In LoRA mode, that is every row of the
	// parameter table.
	frozen bool
	// bf16 marks a frozen matrix stored in bfloat16 (Options.FrozenBF16).
	bf16 bool
	// adapter marks a LoRA matrix, named by its PEFT key, and loraA its A
	// matrix, (r, in).
	adapter, loraA bool
	// trainIndex is the position in Trainable, or -1 for a frozen tensor.
	trainIndex int

	value kernels.Tensor
	grad  kernels.Tensor // absent when frozen
}

func (e *tensorEntry) numElements() int {
	n := 1
	for _, d := range e.shape {
		n *= d
	}
	return n
}

// Param is one tensor of the model as the optimizer and the trainer see it.
type Param struct {
	// Name is the Hugging Face name of a base tensor, or the PEFT key of an
	// adapter, such as base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.
	Name  string
	Value kernels.Tensor // F32, or BF16 for a frozen matrix with Options.FrozenBF16
	// Grad is the F32 gradient, a view into FlatGrads, or the absent tensor for
	// a frozen tensor.
	Grad kernels.Tensor
	// Decay reports whether AdamW applies weight decay: every matrix and
	// adapter, no norm weight.
	Decay bool
}

// buildTable lists the entries from the parameter table and, in LoRA mode,
// the adapter table.
func (m *Model) buildTable() {
	lora := m.opts.Mode == ModeLoRA
	m.byName = map[string]*tensorEntry{}
	add := func(e *tensorEntry) {
		e.trainIndex = -1
		if !e.frozen {
			e.trainIndex = len(m.trainable)
			m.trainable = append(m.trainable, e)
		}
		m.entries = append(m.entries, e)
		m.byName[e.name] = e
	}
	for _, spec := range m.cfg.Params() {
		add(&tensorEntry{
			name:   spec.Name,
			shape:  spec.Shape,
			decay:  spec.Decay,
			frozen: lora,
			bf16:   lora && m.opts.FrozenBF16 && len(spec.Shape) == 2,
		})
	}
	if lora {
		for _, spec := range m.cfg.Adapters(m.opts.LoRA) {
			add(&tensorEntry{name: spec.Name, shape: spec.Shape, decay: true, adapter: true, loraA: spec.IsA})
		}
	}
}

// allocateTensors lays the entries out in three buffers: trainable values
// (with a gradient buffer of the same layout), frozen F32 values and frozen
// BF16 values.
func (m *Model) allocateTensors() error {
	var trainable, frozenF32, frozenBF16 int
	for _, e := range m.entries {
		switch {
		case !e.frozen:
			trainable += e.numElements()
		case e.bf16:
			frozenBF16 += e.numElements()
		default:
			frozenF32 += e.numElements()
		}
	}
	alloc := func(dtype kernels.DType, n int) (kernels.Buffer, error) {
		if n == 0 {
			return nil, nil
		}
		return m.alloc(dtype, n)
	}
	values, err := alloc(kernels.F32, trainable)
	if err != nil {
		return err
	}
	grads, err := alloc(kernels.F32, trainable)
	if err != nil {
		return err
	}
	f32, err := alloc(kernels.F32, frozenF32)
	if err != nil {
		return err
	}
	bf16, err := alloc(kernels.BF16, frozenBF16)
	if err != nil {
		return err
	}

	var trainOffset, f32Offset, bf16Offset int
	for _, e := range m.entries {
		n := e.numElements()
		switch {
		case !e.frozen:
			if e.value, err = kernels.NewTensor(values, trainOffset, e.shape...); err != nil {
				return err
			}
			if e.grad, err = kernels.NewTensor(grads, trainOffset, e.shape...); err != nil {
				return err
			}
			trainOffset += n
		case e.bf16:
			if e.value, err = kernels.NewTensor(bf16, bf16Offset, e.shape...); err != nil {
				return err
			}
			bf16Offset += n
		default:
			if e.value, err = kernels.NewTensor(f32, f32Offset, e.shape...); err != nil {
				return err
			}
			f32Offset += n
		}
	}
	if trainable > 0 {
		if m.flatValues, err = kernels.NewTensor(values, 0, trainable); err != nil {
			return err
		}
		if m.flatGrads, err = kernels.NewTensor(grads, 0, trainable); err != nil {
			return err
		}
		m.gradList = []kernels.Tensor{m.flatGrads}
	}
	return nil
}

// bindWeights points the typed fields that the forward and backward passes
// use at the entries.
func (m *Model) bindWeights() {
	var missing []string
	get := func(name string) *tensorEntry {
		e := m.byName[name]
		if e == nil {
			missing = append(missing, name)
		}
		return e
	}
	m.embed = get("model.embed_tokens.weight")
	m.finalNorm = get("model.norm.weight")
	m.head = m.embed
	if !m.cfg.TieWordEmbeddings {
		m.head = get("lm_head.weight")
	}
	m.layers = make([]layerWeights, m.cfg.NumLayers)
	for l := range m.layers {
		w := &m.layers[l]
		prefix := fmt.Sprintf("model.layers.%d.", l)
		w.inputNorm = get(prefix + "input_layernorm.weight")
		w.qNorm = get(prefix + "self_attn.q_norm.weight")
		w.kNorm = get(prefix + "self_attn.k_norm.weight")
		w.postNorm = get(prefix + "post_attention_layernorm.weight")
		for _, p := range w.projections() {
			p.layer = l
			p.weight = get(prefix + p.group + "." + p.module + ".weight")
			if p.weight == nil {
				continue
			}
			adapterPrefix := "base_model.model." + prefix + p.group + "." + p.module
			p.loraA = m.byName[adapterPrefix+".lora_A.weight"]
			p.loraB = m.byName[adapterPrefix+".lora_B.weight"]
		}
	}
	if len(missing) > 0 {
		// Config.Params and this function name the same tensors, so this is a bug.
		panic(fmt.Sprintf("model: the parameter table lacks %v", missing))
	}
}

// Params returns every tensor: the parameter table in Hugging Face order, then
// in LoRA mode the adapters, A before B, in the order of Config.Adapters.
func (m *Model) Params() []Param {
	params := make([]Param, len(m.entries))
	for i, e := range m.entries {
		params[i] = e.param()
	}
	return params
}

// Trainable returns the tensors that have a gradient, in the order of their
// gradients in FlatGrads: the whole parameter table in ModeFull, the adapters
// in ModeLoRA. The index of a tensor in this list is the index that
// ForwardBackward passes to onGradReady.
func (m *Model) Trainable() []Param {
	params := make([]Param, len(m.trainable))
	for i, e := range m.trainable {
		params[i] = e.param()
	}
	return params
}

func (e *tensorEntry) param() Param {
	return Param{Name: e.name, Value: e.value, Grad: e.grad, Decay: e.decay}
}

// FlatGrads returns every trainable gradient as one 1-D F32 tensor, in
// Trainable order, so that an all-reduce bucket is a range of it. Each
// Param.Grad is a view into it, starting at Param.Grad.Offset().
func (m *Model) FlatGrads() kernels.Tensor { return m.flatGrads }

// FlatTrainable returns every trainable value as one 1-D F32 tensor, laid out
// like FlatGrads, for example to broadcast the initial weights.
func (m *Model) FlatTrainable() kernels.Tensor { return m.flatValues }

// ZeroGrad sets every gradient to zero.
func (m *Model) ZeroGrad() {
	m.backend.Zero(m.flatGrads)
}

// lookup returns the named entry or an error that lists what exists.
func (m *Model) lookup(name string) (*tensorEntry, error) {
	e := m.byName[name]
	if e == nil {
		return nil, fmt.Errorf("model has no tensor %q: names are Hugging Face names such as model.layers.0.self_attn.q_proj.weight, or PEFT keys in LoRA mode (see Params)", name)
	}
	return e, nil
}

// Tensor returns the value of the named tensor, a Hugging Face name or a PEFT
// adapter key.
func (m *Model) Tensor(name string) (kernels.Tensor, error) {
	e, err := m.lookup(name)
	if err != nil {
		return kernels.Tensor{}, err
	}
	return e.value, nil
}

// SetTensor copies values, in row-major order, into the named tensor. A BF16
// tensor receives the values rounded to nearest even.
func (m *Model) SetTensor(name string, values []float32) error {
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	if len(values) != e.numElements() {
		return fmt.Errorf("SetTensor %q: got %d values, want %d for shape %v", name, len(values), e.numElements(), e.shape)
	}
	if e.bf16 {
		bits := make([]uint16, len(values))
		for i, v := range values {
			bits[i] = kernels.BF16FromFloat32(v)
		}
		return m.backend.CopyFromHostBF16(e.value, bits)
	}
	return m.backend.CopyFromHostF32(e.value, values)
}

// ReadTensor returns a host copy of the named tensor's value as float32.
func (m *Model) ReadTensor(name string) ([]float32, error) {
	e, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	return m.readValue(e.value)
}

// ReadGrad returns a host copy of the named tensor's gradient. It fails for a
// frozen tensor.
func (m *Model) ReadGrad(name string) ([]float32, error) {
	e, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	if e.frozen {
		return nil, fmt.Errorf("tensor %q is frozen in %s mode and has no gradient", name, m.opts.Mode)
	}
	return m.readValue(e.grad)
}

// readValue copies an F32 or BF16 tensor to the host as float32.
func (m *Model) readValue(t kernels.Tensor) ([]float32, error) {
	values := make([]float32, t.Len())
	if t.DType() != kernels.BF16 {
		return values, m.backend.CopyToHostF32(values, t)
	}
	bits := make([]uint16, t.Len())
	if err := m.backend.CopyToHostBF16(bits, t); err != nil {
		return nil, err
	}
	for i, h := range bits {
		values[i] = kernels.Float32FromBF16(h)
	}
	return values, nil
}

// baseEntries returns the rows of the parameter table, without adapters.
func (m *Model) baseEntries() []*tensorEntry {
	return slices.DeleteFunc(slices.Clone(m.entries), func(e *tensorEntry) bool { return e.adapter })
}

// adapterEntries returns the LoRA adapters, empty in ModeFull.
func (m *Model) adapterEntries() []*tensorEntry {
	return slices.DeleteFunc(slices.Clone(m.entries), func(e *tensorEntry) bool { return !e.adapter })
}
