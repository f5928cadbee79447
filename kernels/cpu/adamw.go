package cpu

import (
	"math"

	"github.com/ringtune/ringtune/kernels"
)

// AdamW updates param, m and v in one pass over memory, with the arithmetic
// of torch.optim.AdamW's single-tensor path (torch/optim/adam.py,
// _single_tensor_adam with decoupled weight decay), in the same order:
//
//	p  = p·(1 − lr·wd)
//	m  = lerp(m, g, 1 − β1)
//	v  = v·β2 + (1 − β2)·g·g
//	p += −(lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps)
//
// with bc1 = 1 − β1^step and bc2 = 1 − β2^step. The scalars are computed in
// float64, as Python computes them, and rounded to float32 for the
// elementwise float32 arithmetic.
func (b *Backend) AdamW(param, grad, m, v kernels.Tensor, step kernels.AdamWStep) {
	n, err := kernels.CheckAdamW(param, grad, m, v, step)
	if err != nil {
		panic(err)
	}
	bias1 := 1 - math.Pow(step.Beta1, float64(step.Step))
	bias2 := 1 - math.Pow(step.Beta2, float64(step.Step))
	t := &b.tasks.adamW
	*t = adamWTask{
		param: Float32s(param), grad: Float32s(grad), m: Float32s(m), v: Float32s(v),
		decay:      float32(1 - step.LR*step.WeightDecay),
		weight1:    float32(1 - step.Beta1),
		beta2:      float32(step.Beta2),
		weight2:    float32(1 - step.Beta2),
		stepSize:   float32(-step.LR / bias1),
		bias2Sqrt:  float32(math.Sqrt(bias2)),
		eps:        float32(step.Eps),
		applyDecay: step.WeightDecay != 0,
	}
	b.pool.run(t, n, elementGrain)
	*t = adamWTask{}
}

// adamWTask: param, grad, m, v: (n).
type adamWTask struct {
	param, grad, m, v []float32
	decay             float32 // 1 − lr·wd
	weight1           float32 // 1 − β1, the lerp weight
	beta2, weight2    float32 // β2 and 1 − β2
	stepSize          float32 // −lr/bc1
	bias2Sqrt         float32 // sqrt(bc2)
	eps               float32
	applyDecay        bool // torch skips the multiply when wd is 0
}

func (t *adamWTask) run(_, start, end int) {
	p := t.param[start:end]
	g := t.grad[start:end]
	m := t.m[start:end]
	v := t.v[start:end]
	g = g[:len(p)]
	m = m[:len(p)]
	v = v[:len(p)]
	for i := range p {
		pi := p[i]
		if t.applyDecay {
			pi *= t.decay
		}
		gi := g[i]
		mi := lerp(m[i], gi, t.weight1)
		vi := v[i]*t.beta2 + t.weight2*gi*gi
		denom := float32(math.Sqrt(float64(vi)))/t.bias2Sqrt + t.eps
		pi += t.stepSize * mi / denom
		p[i], m[i], v[i] = pi, mi, vi
	}
}

// lerp is PyTorch's lerp(start, end, weight): start + weight·(end − start)
// for |weight| < 0.5, and end − (end − start)·(1 − weight) otherwise, which
// keeps the result exact at weight 1.
func lerp(start, end, weight float32) float32 {
	if weight < 0.5 && weight > -0.5 {
		return start + weight*(end-start)
	}
	return end - (end-start)*(1-weight)
}
