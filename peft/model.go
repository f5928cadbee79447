package peft

import (
	"fmt"
	"slices"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
)

// FromModel copies the adapter matrices of m, a model in LoRA mode, into an Adapter
// for a base model named baseModel (written as base_model_name_or_path).
func FromModel(m *model.Model, baseModel string) (*Adapter, error) {
	opts := m.Options()
	if opts.Mode != model.ModeLoRA {
		return nil, fmt.Errorf("the model trains in full mode and has no adapter; save it with SaveBase")
	}
	a, err := NewAdapter(FromLoRA(opts.LoRA, baseModel), m.Config())
	if err != nil {
		return nil, err
	}
	for i := range a.Tensors {
		t := &a.Tensors[i]
		values, err := m.ReadTensor(modelAdapterName(t))
		if err != nil {
			return nil, err
		}
		t.Data = values
		t.DType = checkpoint.F32
	}
	return a, nil
}

// SaveAdapter writes the adapter of m as a PEFT directory (adapter_config.json and
// adapter_model.safetensors) that PEFT loads onto the base model unchanged.
func SaveAdapter(m *model.Model, dir, baseModel string) error {
	a, err := FromModel(m, baseModel)
	if err != nil {
		return err
	}
	return Write(dir, a)
}

// Apply replaces the adapter matrices of m, a model in LoRA mode, with those of a. The
// base weights stay loaded, so switching between adapters trained with the same rank,
// alpha and target modules costs one copy of the adapter. a must match m's LoRA
// configuration, because the scaling and the set of adapted projections are fixed when
// m is built.
func Apply(m *model.Model, a *Adapter) error {
	opts := m.Options()
	if opts.Mode != model.ModeLoRA {
		return fmt.Errorf("the model trains in full mode: build it with Mode LoRA to apply an adapter, or merge the adapter into the base with Merge")
	}
	lora, err := a.Config.LoRA()
	if err != nil {
		return err
	}
	want := opts.LoRA
	sameTargets := slices.Equal(sortedCopy(lora.TargetModules), sortedCopy(want.TargetModules))
	if lora.Rank != want.Rank || lora.Alpha != want.Alpha || !sameTargets {
		return fmt.Errorf("adapter has rank %d, alpha %v and targets %v, but the model was built for rank %d, alpha %v and targets %v: build a model with the adapter's LoRA configuration",
			lora.Rank, lora.Alpha, lora.TargetModules, want.Rank, want.Alpha, want.TargetModules)
	}

	for i := range a.Tensors {
		t := &a.Tensors[i]
		if err := m.SetTensor(modelAdapterName(t), t.Data); err != nil {
			return err
		}
	}
	return nil
}

// LoadAdapter reads the PEFT adapter in dir, checks it against m's base configuration and
// applies it to m.
func LoadAdapter(m *model.Model, dir string) (*Adapter, error) {
	a, err := Load(dir, m.Config())
	if err != nil {
		return nil, err
	}
	if err := Apply(m, a); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return a, nil
}

// modelAdapterName returns the name under which package model keeps a tensor: the PEFT
// key that PEFT saves.
func modelAdapterName(t *Tensor) string {
	return TensorName(t.Module, t.IsA)
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
