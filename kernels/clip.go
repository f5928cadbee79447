package kernels

import "math"

// clipEpsilon is added to the norm in the clip coefficient, as in PyTorch's
// torch.nn.utils.clip_grad_norm_ (torch/nn/utils/clip_grad.py).
const clipEpsilon = 1e-6

// GlobalNorm returns the L2 norm of the F32 tensors grads taken together, as
// if they were one vector, accumulated in float64.
func GlobalNorm(b Backend, grads []Tensor) float64 {
	return math.Sqrt(b.SumSquares(grads))
}

// ClipGradNorm scales grads so that their global L2 norm is at most maxNorm and
// returns the norm before clipping. As in torch.nn.utils.clip_grad_norm_, the
// scale is maxNorm / (norm + 1e-6) and applies only when it is below 1. When
// the norm is NaN or infinite, ClipGradNorm leaves grads unchanged and returns
// the norm, so the caller can skip the step.
func ClipGradNorm(b Backend, grads []Tensor, maxNorm float64) float64 {
	norm := GlobalNorm(b, grads)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm
	}
	coef := maxNorm / (norm + clipEpsilon)
	if coef >= 1 {
		return norm
	}
	for _, g := range grads {
		b.Scale(g, float32(coef))
	}
	return norm
}
