package model

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/kernels"
)

// AdamWConfig holds the AdamW hyperparameters that stay fixed over a run. The
// learning rate changes per step and is an argument of AdamW.Step.
type AdamWConfig struct {
	Beta1 float64 // decay rate of the first moment, in [0, 1); default 0.9
	Beta2 float64 // decay rate of the second moment, in [0, 1); default 0.999
	Eps   float64 // added to sqrt(v̂) in the denominator, ≥ 0; default 1e-8
	// WeightDecay is the decoupled weight decay of the tensors with
	// Param.Decay set, ≥ 0. Default 0, as in transformers' TrainingArguments
	// (torch.optim.AdamW defaults to 0.01).
	WeightDecay float64
}

// DefaultAdamW returns the defaults of transformers' TrainingArguments: betas
// (0.9, 0.999), eps 1e-8, weight decay 0.
func DefaultAdamW() AdamWConfig {
	return AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// Validate checks the ranges that torch.optim.AdamW accepts.
func (c AdamWConfig) Validate() error {
	switch {
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fmt.Errorf("AdamW beta1 %v must be in [0, 1)", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("AdamW beta2 %v must be in [0, 1)", c.Beta2)
	case !(c.Eps >= 0) || math.IsInf(c.Eps, 1):
		return fmt.Errorf("AdamW eps %v must be a finite number, 0 or above", c.Eps)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 1):
		return fmt.Errorf("AdamW weight decay %v must be a finite number, 0 or above", c.WeightDecay)
	}
	return nil
}

// AdamW is torch.optim.AdamW over a model's Trainable tensors. Its moment
// estimates are allocated once, laid out like FlatGrads.
type AdamW struct {
	backend kernels.Backend
	cfg     AdamWConfig
	params  []Param
	// expAvg[i] and expAvgSq[i] are the first and second moment estimates of
	// params[i], named as in torch's optimizer state.
	expAvg, expAvgSq []kernels.Tensor
	buffers          []kernels.Buffer
	// step counts the updates made, so the next update is step+1.
	step int
}

// NewAdamW returns an optimizer for m's Trainable tensors with zero moments.
func NewAdamW(m *Model, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &AdamW{backend: m.backend, cfg: cfg, params: m.Trainable()}
	n := m.flatGrads.Len()
	for _, moments := range []*[]kernels.Tensor{&o.expAvg, &o.expAvgSq} {
		buf, err := m.backend.Alloc(kernels.F32, n)
		if err != nil {
			o.Close()
			return nil, fmt.Errorf("allocating AdamW state of %d elements: %w", n, err)
		}
		o.buffers = append(o.buffers, buf)
		for _, p := range o.params {
			view, err := kernels.NewTensor(buf, p.Grad.Offset(), p.Grad.Shape()...)
			if err != nil {
				o.Close()
				return nil, err
			}
			*moments = append(*moments, view)
		}
	}
	return o, nil
}

// Close releases the moment buffers.
func (o *AdamW) Close() {
	for _, buf := range o.buffers {
		o.backend.Free(buf)
	}
	o.buffers = nil
}

// Config returns the hyperparameters.
func (o *AdamW) Config() AdamWConfig { return o.cfg }

// StepCount returns the number of updates made, including those of a loaded
// state.
func (o *AdamW) StepCount() int { return o.step }

// SetStepCount sets the number of updates made, for a state taken over from
// another rank whose moments were copied in.
func (o *AdamW) SetStepCount(n int) { o.step = max(n, 0) }

// Moments returns the first and second moment estimates of every trainable
// tensor as two 1-D F32 tensors, laid out like FlatGrads, for example to
// broadcast the optimizer state to a replacement rank.
func (o *AdamW) Moments() (expAvg, expAvgSq kernels.Tensor, err error) {
	if len(o.buffers) != 2 || len(o.params) == 0 {
		return kernels.Tensor{}, kernels.Tensor{}, fmt.Errorf("the optimizer has no moment buffers (closed, or no trainable tensors)")
	}
	first, last := o.params[0].Grad, o.params[len(o.params)-1].Grad
	n := last.Offset() + last.Len() - first.Offset()
	if expAvg, err = kernels.NewTensor(o.buffers[0], first.Offset(), n); err != nil {
		return kernels.Tensor{}, kernels.Tensor{}, err
	}
	if expAvgSq, err = kernels.NewTensor(o.buffers[1], first.Offset(), n); err != nil {
		return kernels.Tensor{}, kernels.Tensor{}, err
	}
	return expAvg, expAvgSq, nil
}

// Step updates every trainable tensor from its gradient with learning rate lr.
// Weight decay applies to the tensors with Param.Decay set. It fails, changing
// nothing, when lr is negative or not finite.
func (o *AdamW) Step(lr float64) error {
	if !(lr >= 0) || math.IsInf(lr, 1) {
		return fmt.Errorf("learning rate %v must be a finite number, 0 or above", lr)
	}
	o.step++
	for i, p := range o.params {
		decay := 0.0
		if p.Decay {
			decay = o.cfg.WeightDecay
		}
		o.backend.AdamW(p.Value, p.Grad, o.expAvg[i], o.expAvgSq[i], kernels.AdamWStep{
			LR: lr, Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, WeightDecay: decay, Step: o.step,
		})
	}
	return nil
}

// Optimizer state files are safetensors files with one F32 tensor per moment,
// named "exp_avg.<name>" and "exp_avg_sq.<name>" after the parameter, and the
// step count and hyperparameters in the metadata.
const (
	stateFormat     = "ringtune-adamw"
	expAvgPrefix    = "exp_avg."
	expAvgSqPrefix  = "exp_avg_sq."
	metaFormat      = "format"
	metaStep        = "step"
	metaBeta1       = "beta1"
	metaBeta2       = "beta2"
	metaEps         = "eps"
	metaWeightDecay = "weight_decay"
)

// SaveState writes the moment estimates, the step count and the
// hyperparameters to a safetensors file at path. Together with the model's
// trainable values it lets a run resume with bit-identical updates.
func (o *AdamW) SaveState(path string) error {
	var tensors []checkpoint.Tensor
	for i, p := range o.params {
		tensors = append(tensors,
			checkpoint.Tensor{Name: expAvgPrefix + p.Name, DType: checkpoint.F32, Shape: p.Grad.Shape(), Data: backendSource{o.backend, o.expAvg[i]}},
			checkpoint.Tensor{Name: expAvgSqPrefix + p.Name, DType: checkpoint.F32, Shape: p.Grad.Shape(), Data: backendSource{o.backend, o.expAvgSq[i]}},
		)
	}
	format := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	metadata := map[string]string{
		metaFormat:      stateFormat,
		metaStep:        strconv.Itoa(o.step),
		metaBeta1:       format(o.cfg.Beta1),
		metaBeta2:       format(o.cfg.Beta2),
		metaEps:         format(o.cfg.Eps),
		metaWeightDecay: format(o.cfg.WeightDecay),
	}
	return checkpoint.Write(path, tensors, metadata)
}

// LoadState reads a file that SaveState wrote for the same trainable tensors
// and hyperparameters. It fails, changing nothing, when the file is of another
// format, lacks a tensor, has an extra one or one of another shape, or was
// saved with other hyperparameters.
func (o *AdamW) LoadState(path string) error {
	f, err := checkpoint.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	meta := f.Metadata()
	if meta[metaFormat] != stateFormat {
		return fmt.Errorf("%s: metadata format is %q, want %q: the file is not an optimizer state that AdamW.SaveState wrote", path, meta[metaFormat], stateFormat)
	}
	step, err := strconv.Atoi(meta[metaStep])
	if err != nil || step < 0 {
		return fmt.Errorf("%s: invalid step count %q in the metadata", path, meta[metaStep])
	}
	for _, h := range []struct {
		key   string
		value float64
	}{{metaBeta1, o.cfg.Beta1}, {metaBeta2, o.cfg.Beta2}, {metaEps, o.cfg.Eps}, {metaWeightDecay, o.cfg.WeightDecay}} {
		saved, err := strconv.ParseFloat(meta[h.key], 64)
		if err != nil {
			return fmt.Errorf("%s: invalid %s %q in the metadata", path, h.key, meta[h.key])
		}
		if saved != h.value {
			return fmt.Errorf("%s: the state was saved with %s %v, but this optimizer has %v: build the AdamW with the saved hyperparameters to resume the run exactly", path, h.key, saved, h.value)
		}
	}

	want := map[string][]int{}
	for _, p := range o.params {
		want[expAvgPrefix+p.Name] = p.Grad.Shape()
		want[expAvgSqPrefix+p.Name] = p.Grad.Shape()
	}
	for _, info := range f.Tensors() {
		shape, ok := want[info.Name]
		if !ok {
			return fmt.Errorf("%s: tensor %q matches no trainable tensor of this model", path, info.Name)
		}
		if !slices.Equal(shape, info.Shape) || info.DType != checkpoint.F32 {
			return fmt.Errorf("%s: tensor %q is %s %v, want F32 %v", path, info.Name, info.DType, info.Shape, shape)
		}
		delete(want, info.Name)
	}
	if len(want) > 0 {
		missing := slices.Sorted(maps.Keys(want))
		return fmt.Errorf("%s: missing tensor %q and %d more: the state was saved for other trainable tensors", path, missing[0], len(missing)-1)
	}

	for i, p := range o.params {
		for _, moment := range []struct {
			name   string
			tensor kernels.Tensor
		}{{expAvgPrefix + p.Name, o.expAvg[i]}, {expAvgSqPrefix + p.Name, o.expAvgSq[i]}} {
			values := make([]float32, moment.tensor.Len())
			if err := f.ReadFloat32(moment.name, values); err != nil {
				return err
			}
			if err := o.backend.CopyFromHostF32(moment.tensor, values); err != nil {
				return err
			}
		}
	}
	o.step = step
	return nil
}

// GradNorm returns the global L2 norm of the trainable gradients, accumulated
// in float64.
func (m *Model) GradNorm() float64 {
	return kernels.GlobalNorm(m.backend, m.gradList)
}

// ClipGradNorm scales the trainable gradients so that their global L2 norm is
// at most maxNorm, as torch.nn.utils.clip_grad_norm_ does, and returns the
// norm before clipping. A NaN or infinite norm leaves the gradients unchanged,
// so the caller can skip the step.
func (m *Model) ClipGradNorm(maxNorm float64) float64 {
	return kernels.ClipGradNorm(m.backend, m.gradList, maxNorm)
}

// Schedule is a learning-rate schedule: linear warmup from 0 to PeakLR, then
// cosine decay to MinLRRatio·PeakLR at TotalSteps, and that floor afterwards.
// LR(step) equals transformers' get_cosine_with_min_lr_schedule_with_warmup
// at current_step = step. Steps count updates from 1, so the first update gets
// PeakLR/WarmupSteps, where transformers' scheduler gives its first update 0.
type Schedule struct {
	PeakLR      float64 // learning rate at the end of warmup
	WarmupSteps int     // updates of linear warmup; 0 starts at PeakLR
	// TotalSteps is the update at which the decay reaches the floor. 0 means
	// no decay: PeakLR after warmup.
	TotalSteps int
	MinLRRatio float64 // floor as a fraction of PeakLR, in [0, 1]
}

// Validate checks the fields.
func (s Schedule) Validate() error {
	switch {
	case !(s.PeakLR >= 0) || math.IsInf(s.PeakLR, 1):
		return fmt.Errorf("peak learning rate %v must be a finite number, 0 or above", s.PeakLR)
	case s.WarmupSteps < 0:
		return fmt.Errorf("warmup steps %d must not be negative", s.WarmupSteps)
	case s.TotalSteps < 0:
		return fmt.Errorf("total steps %d must not be negative", s.TotalSteps)
	case s.TotalSteps > 0 && s.TotalSteps < s.WarmupSteps:
		return fmt.Errorf("total steps %d must be at least the %d warmup steps", s.TotalSteps, s.WarmupSteps)
	case !(s.MinLRRatio >= 0 && s.MinLRRatio <= 1):
		return fmt.Errorf("minimum learning-rate ratio %v must be in [0, 1]", s.MinLRRatio)
	}
	return nil
}

// LR returns the learning rate of update step, counting from 1. Pass
// AdamW.StepCount()+1 before calling AdamW.Step.
func (s Schedule) LR(step int) float64 {
	if step <= 0 {
		return 0
	}
	if step <= s.WarmupSteps {
		return s.PeakLR * float64(step) / float64(s.WarmupSteps)
	}
	if s.TotalSteps == 0 {
		return s.PeakLR
	}
	progress := 1.0
	if decaySteps := s.TotalSteps - s.WarmupSteps; decaySteps > 0 {
		progress = min(1, float64(step-s.WarmupSteps)/float64(decaySteps))
	}
	cosine := 0.5 * (1 + math.Cos(math.Pi*progress))
	return s.PeakLR * (s.MinLRRatio + (1-s.MinLRRatio)*cosine)
}
