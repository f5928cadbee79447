package peft

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
)

// Tensor is one LoRA matrix of an adapter.
type Tensor struct {
	Name   string           // PEFT key without the adapter name, see TensorName
	Module string           // PEFT module name, e.g. model.layers.0.self_attn.q_proj
	IsA    bool             // lora_A (r, in_features) rather than lora_B (out_features, r)
	DType  checkpoint.DType // F32, BF16 or F16, as stored
	Shape  []int
	Data   []float32 // row-major; BF16 and F16 values widen to float32 exactly
}

// Adapter is a LoRA adapter: its configuration and its matrices.
type Adapter struct {
	Config  Config
	Tensors []Tensor // by layer, then projection, then A before B
}

// NewAdapter returns an adapter for base with zero F32 matrices of the expected shapes,
// for a trainer to fill in.
func NewAdapter(cfg Config, base model.Config) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	specs, err := cfg.Expected(base)
	if err != nil {
		return nil, err
	}
	a := &Adapter{Config: cfg, Tensors: make([]Tensor, len(specs))}
	for i, s := range specs {
		a.Tensors[i] = Tensor{
			Name:   s.Name,
			Module: strings.TrimSuffix(s.Base, ".weight"),
			IsA:    s.IsA,
			DType:  checkpoint.F32,
			Shape:  slices.Clone(s.Shape),
			Data:   make([]float32, s.NumElements()),
		}
	}
	return a, nil
}

// Find returns the lora_A (isA) or lora_B matrix of a module, or nil.
func (a *Adapter) Find(module string, isA bool) *Tensor {
	for i := range a.Tensors {
		if a.Tensors[i].Module == module && a.Tensors[i].IsA == isA {
			return &a.Tensors[i]
		}
	}
	return nil
}

// NumParams returns the number of adapter parameters: PEFT's trainable parameters.
func (a *Adapter) NumParams() int64 {
	var n int64
	for _, t := range a.Tensors {
		n += numElements(t.Shape)
	}
	return n
}

func numElements(shape []int) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= int64(d)
	}
	return n
}

// Load reads the adapter in dir and checks it against the base model's configuration.
// Every tensor must be a lora_A or lora_B matrix of a module that the config targets,
// with the shape that base gives it. No targeted module may lack either matrix.
func Load(dir string, base model.Config) (*Adapter, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	f, err := OpenWeights(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	path := f.Path()
	if err := cfg.CheckTensors(path, f.Tensors(), &base); err != nil {
		return nil, err
	}

	a := &Adapter{Config: cfg}
	for _, info := range f.Tensors() {
		module, isA, canonical, _ := parseTensorName(info.Name)
		data := make([]float32, info.NumElements())
		if err := f.ReadFloat32(info.Name, data); err != nil {
			return nil, err
		}
		a.Tensors = append(a.Tensors, Tensor{
			Name: canonical, Module: module, IsA: isA, DType: info.DType, Shape: slices.Clone(info.Shape), Data: data,
		})
	}
	sortTensors(a.Tensors)
	return a, nil
}

// pytorchWeightsFile is WEIGHTS_NAME in PEFT's src/peft/utils/constants.py: the
// weights as torch.save pickles them, which PEFT writes with safe_serialization=False
// and which older PEFT releases wrote by default.
const pytorchWeightsFile = "adapter_model.bin"

// OpenWeights opens dir/adapter_model.safetensors. When the directory has only
// adapter_model.bin, it returns an ErrUnsupported error that explains how to convert it.
func OpenWeights(dir string) (*checkpoint.File, error) {
	path := filepath.Join(dir, WeightsFile)
	f, err := checkpoint.Open(path)
	if err == nil || !errors.Is(err, checkpoint.ErrNotFound) {
		return f, err
	}
	bin := filepath.Join(dir, pytorchWeightsFile)
	if _, statErr := os.Stat(bin); statErr != nil {
		return nil, err
	}
	return nil, &Error{Path: bin, Kind: ErrUnsupported,
		Msg: "the PyTorch .bin format is not supported, and " + WeightsFile + " is missing: convert the file to safetensors, for example in Python with " +
			`safetensors.torch.save_file(torch.load("adapter_model.bin"), "adapter_model.safetensors", metadata={"format": "pt"})`}
}

// sortTensors orders tensors by layer, projection and A before B, the order of
// model.Config.Adapters.
func sortTensors(tensors []Tensor) {
	projections := model.ProjectionModules()
	key := func(t Tensor) (int, int, int) {
		layer, projection, _ := parseModuleName(t.Module)
		ab := 1
		if t.IsA {
			ab = 0
		}
		return layer, slices.Index(projections, projection), ab
	}
	slices.SortFunc(tensors, func(x, y Tensor) int {
		lx, px, ax := key(x)
		ly, py, ay := key(y)
		switch {
		case lx != ly:
			return lx - ly
		case px != py:
			return px - py
		}
		return ax - ay
	})
}

// CheckTensors checks the tensors of adapter_model.safetensors against the config and,
// when base is not nil, against the base model's shapes. Without base it checks what
// the config alone fixes: names, targeted modules, the rank dimension and that every
// module has both matrices. path labels errors.
func (c Config) CheckTensors(path string, infos []checkpoint.TensorInfo, base *model.Config) error {
	expected := map[string][]int{}
	var specs []model.AdapterSpec
	if base != nil {
		var err error
		if specs, err = c.Expected(*base); err != nil {
			if e, ok := err.(*Error); ok && e.Path == "" {
				e.Path = filepath.Join(filepath.Dir(path), ConfigFile)
			}
			return err
		}
		for _, s := range specs {
			expected[s.Name] = s.Shape
		}
	}

	seen := map[string]string{} // canonical name -> key in the file
	for _, info := range infos {
		module, isA, canonical, ok := parseTensorName(info.Name)
		if !ok {
			return tensorError(path, info.Name, "unknown tensor: %s", unknownTensorHint(info.Name))
		}
		if other, dup := seen[canonical]; dup {
			return tensorError(path, info.Name, "duplicate of %q: both name the %s matrix of %s", other, matrixName(isA), module)
		}
		seen[canonical] = info.Name
		layer, projection, ok := parseModuleName(module)
		if !ok {
			return tensorError(path, info.Name, "unknown tensor: %s is not a linear projection of a Qwen3 decoder layer", module)
		}
		if base != nil && layer >= base.NumLayers {
			return tensorError(path, info.Name, "unknown tensor: layer %d is not in the base model, which has %d layers", layer, base.NumLayers)
		}
		if !c.Targets(layer, projection) {
			return tensorError(path, info.Name, "unknown tensor: adapter_config.json does not target %s (target_modules %q, exclude_modules %q, layers_to_transform %v)",
				module, c.TargetModules, c.ExcludeModules, c.LayersToTransform)
		}
		switch info.DType {
		case checkpoint.F32, checkpoint.BF16, checkpoint.F16:
		default:
			return tensorError(path, info.Name, "dtype %s is not supported: LoRA matrices must be F32, BF16 or F16", info.DType)
		}

		want := expected[canonical]
		if base == nil {
			want = []int{-1, c.Rank} // lora_B: (out_features, r)
			if isA {
				want = []int{c.Rank, -1} // lora_A: (r, in_features)
			}
		}
		if !shapeMatches(info.Shape, want) {
			return tensorError(path, info.Name, "shape %v, expected %s (%s of %s has shape %s with r = %d from adapter_config.json)",
				info.Shape, formatShape(want), matrixName(isA), module, matrixShapeName(isA), c.Rank)
		}
	}

	if base != nil {
		for _, s := range specs {
			if _, ok := seen[s.Name]; !ok {
				return tensorError(path, s.Name, "missing: adapter_config.json targets %s, so PEFT expects its %s matrix with shape %v",
					strings.TrimSuffix(s.Base, ".weight"), matrixName(s.IsA), s.Shape)
			}
		}
		return nil
	}
	for canonical := range seen {
		module, isA, _, _ := parseTensorName(canonical)
		if _, ok := seen[TensorName(module, !isA)]; !ok {
			return tensorError(path, TensorName(module, !isA), "missing: the file has the %s matrix of %s but not its %s matrix",
				matrixName(isA), module, matrixName(!isA))
		}
	}
	return nil
}

func matrixName(isA bool) string {
	if isA {
		return "lora_A"
	}
	return "lora_B"
}

func matrixShapeName(isA bool) string {
	if isA {
		return "(r, in_features)"
	}
	return "(out_features, r)"
}

// shapeMatches compares a shape with one whose -1 entries match any size.
func shapeMatches(shape, want []int) bool {
	if len(shape) != len(want) {
		return false
	}
	for i := range shape {
		if want[i] >= 0 && shape[i] != want[i] {
			return false
		}
	}
	return true
}

func formatShape(shape []int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
		if d < 0 {
			parts[i] = "any"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// unknownTensorHint names the PEFT feature that a tensor this package does not read
// belongs to.
func unknownTensorHint(name string) string {
	switch {
	case strings.Contains(name, "lora_magnitude_vector"):
		return "a DoRA magnitude vector, and DoRA is not supported"
	case strings.Contains(name, "lora_embedding_"):
		return "a LoRA matrix of an embedding layer, and only the linear projections of decoder layers are supported"
	case strings.HasSuffix(name, ".bias"):
		return "a bias vector (bias or lora_bias in adapter_config.json), which is not supported"
	case strings.Contains(name, "modules_to_save") || strings.Contains(name, "original_module"):
		return "a module saved whole (modules_to_save), which is not supported"
	}
	return "not a lora_A or lora_B matrix as PEFT names them, such as base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
}

// Write saves the adapter to dir as PEFT's save_pretrained does: adapter_model.safetensors
// with metadata {"format": "pt"}, then adapter_config.json. Each file is written to a
// temporary name and renamed into place. Tensor names are written without the adapter
// name, whatever names were loaded.
func Write(dir string, a *Adapter) error {
	if err := a.Config.Validate(); err != nil {
		return err
	}
	path := filepath.Join(dir, WeightsFile)
	infos := make([]checkpoint.TensorInfo, len(a.Tensors))
	tensors := make([]checkpoint.Tensor, len(a.Tensors))
	for i, t := range a.Tensors {
		if int64(len(t.Data)) != numElements(t.Shape) {
			return tensorError(path, t.Name, "has %d values for shape %v", len(t.Data), t.Shape)
		}
		dtype := t.DType
		if dtype == "" {
			dtype = checkpoint.F32
		}
		infos[i] = checkpoint.TensorInfo{Name: t.Name, DType: dtype, Shape: t.Shape}
		_, _, canonical, _ := parseTensorName(t.Name)
		tensors[i] = checkpoint.Tensor{Name: canonical, DType: dtype, Shape: t.Shape, Data: checkpoint.FromFloat32(t.Data)}
	}
	if err := a.Config.CheckTensors(path, infos, nil); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := checkpoint.Write(path, tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return WriteConfig(dir, a.Config)
}
