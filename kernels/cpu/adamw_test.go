package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// adamWReference is torch.optim.AdamW's single-tensor update transcribed in
// float64:
//
//	param.mul_(1 - lr * weight_decay)
//	exp_avg.lerp_(grad, 1 - beta1)
//	exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
//	step_size = lr / (1 - beta1 ** step)
//	denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
//	param.addcdiv_(exp_avg, denom, value=-step_size)
func adamWReference(p, g, m, v []float64, s kernels.AdamWStep) {
	bias1 := 1 - math.Pow(s.Beta1, float64(s.Step))
	bias2 := 1 - math.Pow(s.Beta2, float64(s.Step))
	for i := range p {
		p[i] *= 1 - s.LR*s.WeightDecay
		m[i] += (1 - s.Beta1) * (g[i] - m[i])
		v[i] = v[i]*s.Beta2 + (1-s.Beta2)*g[i]*g[i]
		denom := math.Sqrt(v[i])/math.Sqrt(bias2) + s.Eps
		p[i] -= s.LR / bias1 * m[i] / denom
	}
}

func TestAdamWMatchesTorchTranscription(t *testing.T) {
	for _, tc := range []struct {
		name        string
		weightDecay float64
	}{{"with weight decay", 0.1}, {"without weight decay", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, cpu.Options{})
			rng := rand.New(rand.NewPCG(91, 92))
			const n = 70_000 // several chunks of the parallel loop
			pHost := randomValues(rng, n, 1)
			param := newF32(t, be, pHost, n)
			m := newF32(t, be, nil, n)
			v := newF32(t, be, nil, n)
			p64, m64, v64 := widen(pHost), make([]float64, n), make([]float64, n)

			for step := 1; step <= 5; step++ {
				gHost := randomValues(rng, n, 0.01)
				// Some gradients are near eps, where eps halves the update.
				for i := 0; i < n; i += 97 {
					gHost[i] = 1e-8
				}
				s := kernels.AdamWStep{LR: 1e-3 * float64(step), Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: tc.weightDecay, Step: step}
				be.AdamW(param, newF32(t, be, gHost, n), m, v, s)
				adamWReference(p64, widen(gHost), m64, v64, s)
			}

			// Tolerances: the parameters, of order 1, move by about lr per
			// step. float32 rounds them to 6e-8, and each step's update
			// carries a relative error near 1e-6, so 1e-7 absolute plus
			// 1e-6 relative covers five steps. m sums gradients of order
			// 0.01 that may cancel, so its error is absolute, a few float32
			// roundings of 0.01 (1e-9). v sums squares, which do not
			// cancel: 1e-5 relative.
			requireClose(t, "param", toHost(t, be, param), p64, 1e-7, 1e-6)
			requireClose(t, "m", toHost(t, be, m), m64, 1e-9, 1e-5)
			requireClose(t, "v", toHost(t, be, v), v64, 0, 1e-5)
		})
	}
}

func TestAdamWRejectsInvalidStep(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	x := func() kernels.Tensor { return newF32(t, be, nil, 3) }
	requirePanicsWith(t, func() {
		be.AdamW(x(), x(), x(), x(), kernels.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Step: 0})
	}, "AdamW", "invalid Step 0")
	requirePanicsWith(t, func() {
		be.AdamW(x(), x(), x(), x(), kernels.AdamWStep{LR: 1e-3, Beta1: 1, Beta2: 0.999, Step: 1})
	}, "AdamW", "invalid Beta1 1")
	p := x()
	requirePanicsWith(t, func() {
		be.AdamW(p, x(), p, x(), kernels.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Step: 1})
	}, "AdamW", "param", "overlaps m")
}
