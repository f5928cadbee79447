package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

func TestAddAndScale(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(71, 72))
	const n = 100_000 // several chunks of the parallel loop
	aHost := randomValues(rng, n, 1)
	bHost := randomValues(rng, n, 1)
	a := newF32(t, be, aHost, n)
	b := newF32(t, be, bHost, n)

	be.Add(a, a, b)
	be.Scale(a, -0.5)

	got := toHost(t, be, a)
	for i := range got {
		// Exact: the same two float32 operations in the same order.
		require.Equal(t, (aHost[i]+bHost[i])*-0.5, got[i], "element %d", i)
	}
}

func TestSumSquaresAcrossTensors(t *testing.T) {
	rng := rand.New(rand.NewPCG(73, 74))
	// 200,000 elements span four partial-sum chunks of 65,536.
	sizes := []int{200_000, 7, 1, 4096}
	hosts := make([][]float32, len(sizes))
	var want float64
	for i, size := range sizes {
		hosts[i] = randomValues(rng, size, 3)
		for _, v := range hosts[i] {
			want += float64(v) * float64(v)
		}
	}

	results := map[int]float64{}
	for _, workers := range []int{1, 2, 3} {
		be := newBackend(t, cpu.Options{Workers: workers})
		grads := make([]kernels.Tensor, len(sizes))
		for i, size := range sizes {
			grads[i] = newF32(t, be, hosts[i], size)
		}
		results[workers] = be.SumSquares(grads)
		// Tolerance 1e-12 relative: float64 sums of float64 squares.
		assert.InEpsilon(t, want, results[workers], 1e-12, "%d workers", workers)
		assert.InEpsilon(t, math.Sqrt(want), kernels.GlobalNorm(be, grads), 1e-12, "%d workers", workers)
	}
	// The partial sums are fixed by the element count, so the result is
	// bitwise the same for any number of workers.
	assert.Equal(t, results[1], results[2])
	assert.Equal(t, results[1], results[3])
}

func TestClipGradNorm(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	// Norm sqrt(3² + 4² + 12²) = 13.
	a := newF32(t, be, []float32{3, 4}, 2)
	b := newF32(t, be, []float32{12}, 1)
	grads := []kernels.Tensor{a, b}

	norm := kernels.ClipGradNorm(be, grads, 20)
	assert.Equal(t, 13.0, norm)
	assert.Equal(t, []float32{3, 4}, toHost(t, be, a), "a norm below the maximum leaves the gradients unchanged")

	norm = kernels.ClipGradNorm(be, grads, 6.5)
	assert.Equal(t, 13.0, norm, "ClipGradNorm returns the norm before clipping")
	// The scale is 6.5/(13 + 1e-6), as in torch.nn.utils.clip_grad_norm_.
	// Tolerance 1e-6 relative: float32 products.
	coef := 6.5 / (13 + 1e-6)
	requireClose(t, "a", toHost(t, be, a), []float64{3 * coef, 4 * coef}, 0, 1e-6)
	requireClose(t, "b", toHost(t, be, b), []float64{12 * coef}, 0, 1e-6)
	assert.InEpsilon(t, 6.5, kernels.GlobalNorm(be, grads), 1e-6)
}

func TestClipGradNormLeavesNonFiniteNorm(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	a := newF32(t, be, []float32{1, float32(math.Inf(1))}, 2)
	b := newF32(t, be, []float32{2}, 1)

	norm := kernels.ClipGradNorm(be, []kernels.Tensor{a, b}, 1)

	assert.True(t, math.IsInf(norm, 1), "norm %v", norm)
	assert.Equal(t, []float32{2}, toHost(t, be, b))
}
