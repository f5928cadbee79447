package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// newBackend returns a CPU backend with two workers, so that the parallel
// paths run even on one core, closed when the test ends.
func newBackend(t testing.TB, opts cpu.Options) *cpu.Backend {
	t.Helper()
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	be, err := cpu.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, be.Close()) })
	return be
}

func newF32(t testing.TB, be kernels.Backend, values []float32, shape ...int) kernels.Tensor {
	t.Helper()
	x, err := kernels.AllocTensor(be, kernels.F32, shape...)
	require.NoError(t, err)
	if values != nil {
		require.NoError(t, be.CopyFromHostF32(x, values))
	}
	return x
}

func newBF16(t testing.TB, be kernels.Backend, values []uint16, shape ...int) kernels.Tensor {
	t.Helper()
	x, err := kernels.AllocTensor(be, kernels.BF16, shape...)
	require.NoError(t, err)
	require.NoError(t, be.CopyFromHostBF16(x, values))
	return x
}

func newI32(t testing.TB, be kernels.Backend, values []int32, shape ...int) kernels.Tensor {
	t.Helper()
	x, err := kernels.AllocTensor(be, kernels.I32, shape...)
	require.NoError(t, err)
	require.NoError(t, be.CopyFromHostI32(x, values))
	return x
}

func toHost(t testing.TB, be kernels.Backend, x kernels.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Len())
	require.NoError(t, be.CopyToHostF32(out, x))
	return out
}

// randomValues returns n values uniform in [−scale, scale).
func randomValues(rng *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = scale * (2*rng.Float32() - 1)
	}
	return x
}

func widen(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

func toBF16(x []float32) []uint16 {
	out := make([]uint16, len(x))
	for i, v := range x {
		out[i] = kernels.BF16FromFloat32(v)
	}
	return out
}

func fromBF16(x []uint16) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = kernels.Float32FromBF16(v)
	}
	return out
}

// dot64 returns Σ a·b in float64.
func dot64(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// requireClose checks |got − want| ≤ atol + rtol·|want| elementwise and
// reports the first element that fails with its index.
func requireClose(t testing.TB, name string, got []float32, want []float64, atol, rtol float64) {
	t.Helper()
	require.Len(t, got, len(want), "%s: length", name)
	for i := range want {
		diff := math.Abs(float64(got[i]) - want[i])
		if !(diff <= atol+rtol*math.Abs(want[i])) {
			require.Failf(t, "values differ", "%s[%d] = %.9g, want %.9g (difference %.3g, tolerance %.3g + %.3g·|want|)",
				name, i, got[i], want[i], diff, atol, rtol)
		}
	}
}

// maxAbs returns the largest |x|.
func maxAbs(x []float64) float64 {
	var m float64
	for _, v := range x {
		m = max(m, math.Abs(v))
	}
	return m
}

// fdStep is the step h of the central differences (f(x+h) − f(x−h))/2h,
// taken on the float64 reference. Its truncation error is about h²·|f”'|,
// near 1e-8 for these smooth ops on inputs of order 1, and the rounding error
// about 1e-16·|f|/h, near 1e-12: both far below the float32 error of the
// analytic gradient under test.
const fdStep = 1e-4

// fdSamples is the number of coordinates per input that checkGradient
// perturbs.
const fdSamples = 24

// checkGradient compares the analytic gradient of loss with respect to x,
// computed by a float32 backward pass, against central differences of loss,
// a float64 reference that reads x, at fdSamples random coordinates.
//
// Tolerance: 1e-4 times (|fd| + the largest |gradient|). The analytic
// gradient is float32 arithmetic over sums of up to a few hundred terms, so
// its error is near 1e-6 of the gradient's scale. A wrong formula is off by
// a large part of it.
func checkGradient(t *testing.T, name string, x []float64, analytic []float32, loss func() float64, rng *rand.Rand) {
	t.Helper()
	require.Len(t, analytic, len(x), "%s: gradient length", name)
	scale := maxAbs(widen(analytic))
	for range min(fdSamples, len(x)) {
		i := rng.IntN(len(x))
		saved := x[i]
		x[i] = saved + fdStep
		plus := loss()
		x[i] = saved - fdStep
		minus := loss()
		x[i] = saved
		fd := (plus - minus) / (2 * fdStep)
		diff := math.Abs(float64(analytic[i]) - fd)
		if diff > 1e-4*(math.Abs(fd)+scale) {
			require.Failf(t, "gradient differs from finite differences", "d(loss)/d%s[%d] = %.9g, central difference %.9g (difference %.3g, gradient scale %.3g)",
				name, i, analytic[i], fd, diff, scale)
		}
	}
}

// requirePanicsWith checks that f panics with an error whose message
// contains each of the fragments.
func requirePanicsWith(t *testing.T, f func(), fragments ...string) {
	t.Helper()
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		f()
	}()
	require.NotNil(t, recovered, "expected a panic")
	err, ok := recovered.(error)
	require.True(t, ok, "panic value %v is not an error", recovered)
	for _, fragment := range fragments {
		require.Contains(t, err.Error(), fragment)
	}
}
