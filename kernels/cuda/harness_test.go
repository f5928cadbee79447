package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// Tolerances of the comparisons with kernels/cpu, as max|got − want| /
// max|want| over a tensor.
const (
	// tolFP32 is for fp32 ops that differ from the CPU only in the order of
	// sums and fused multiply-adds.
	tolFP32 = 1e-5
	// tolAttention is for attention, whose softmax sums run over up to a
	// few hundred keys in another order.
	tolAttention = 1e-4
	// tolTF32 is for products on tensor cores in TF32 (10-bit mantissas).
	tolTF32 = 1e-2
	// tolBF16 is for products whose inputs are rounded to bfloat16 (8-bit
	// mantissas).
	tolBF16 = 1e-2
)

var gpuCheck struct {
	findOnce sync.Once
	gpuErr   error // why no GPU is usable, or nil

	once sync.Once
	err  error // why neither a GPU nor the emulated device is usable, or nil
	// emulated is set when the device tests run on the emulated device.
	emulated bool
}

// requireGPU skips the test unless a device is usable: a GPU, or without one
// the emulated device (see emulatedLibs), unless RINGTUNE_CUDA_EMULATE=0.
// On the emulated device, New runs the kernels on the CPU.
// With RINGTUNE_REQUIRE_GPU=1 only a GPU counts, and the test fails without one.
func requireGPU(t testing.TB) {
	t.Helper()
	gpuCheck.once.Do(func() {
		if hasRealGPU() {
			return
		}
		gpuErr := gpuCheck.gpuErr
		if gpuRequired() {
			gpuCheck.err = fmt.Errorf("%w (RINGTUNE_REQUIRE_GPU=1 turns off the emulated device)", gpuErr)
			return
		}
		if os.Getenv("RINGTUNE_CUDA_EMULATE") == "0" {
			gpuCheck.err = fmt.Errorf("%w (RINGTUNE_CUDA_EMULATE=0 turns off the emulated device)", gpuErr)
			return
		}
		libs, err := emulatedLibs()
		if err != nil {
			gpuCheck.err = fmt.Errorf("%w, and the emulated device is not available: %v", gpuErr, err)
			return
		}
		openContext = libs.Open
		gpuCheck.emulated = true
	})
	if gpuCheck.err != nil {
		if gpuRequired() {
			t.Fatalf("RINGTUNE_REQUIRE_GPU=1 but no CUDA GPU is usable: %v", gpuCheck.err)
		}
		t.Skipf("no usable CUDA GPU, so the device tests are skipped: %v", gpuCheck.err)
	}
	if gpuCheck.emulated {
		t.Log("no GPU: the test runs on the emulated device, which runs the kernels on the CPU")
	}
}

// requireRealGPU skips the test unless it runs on a GPU, for benchmarks.
func requireRealGPU(t testing.TB) {
	t.Helper()
	requireGPU(t)
	if gpuCheck.emulated {
		t.Skip("no GPU, and timings of the emulated device mean nothing")
	}
}

// gpuRequired reports whether RINGTUNE_REQUIRE_GPU=1, as scripts/gpu-check.sh
// sets: the device tests and benchmarks then fail instead of skipping or
// running on the emulated device.
func gpuRequired() bool { return os.Getenv("RINGTUNE_REQUIRE_GPU") == "1" }

// hasRealGPU reports whether a GPU is usable, without the emulated device.
func hasRealGPU() bool {
	gpuCheck.findOnce.Do(func() { gpuCheck.gpuErr = findGPU() })
	return gpuCheck.gpuErr == nil
}

// findGPU returns nil when the CUDA libraries load and a device is visible.
func findGPU() error {
	libs, err := cudalib.LoadAll()
	if err != nil {
		return err
	}
	_, devices, err := libs.Devices()
	if err == nil && len(devices) == 0 {
		err = errNoDevice
	}
	return err
}

var errNoDevice = errors.New("the CUDA driver reports no device")

// newGPU returns a CUDA backend on device 0, closed when the test ends.
func newGPU(t testing.TB, opts Options) *Backend {
	t.Helper()
	requireGPU(t)
	be, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, be.Close()) })
	return be
}

// newCPU returns the reference backend, closed when the test ends.
func newCPU(t testing.TB, opts cpu.Options) *cpu.Backend {
	t.Helper()
	be, err := cpu.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { be.Close() })
	return be
}

// harness runs the same ops on kernels/cpu and on a CUDA backend.
type harness struct {
	t   *testing.T
	ref *cpu.Backend
	gpu *Backend
	rng *rand.Rand
}

// pair is one tensor on both backends.
type pair struct{ ref, gpu kernels.Tensor }

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	gpu := newGPU(t, opts)
	ref := newCPU(t, cpu.Options{CrossEntropyChunkRows: opts.CrossEntropyChunkRows})
	return &harness{t: t, ref: ref, gpu: gpu, rng: newTestRand()}
}

// newTestRand returns the tests' random source, fixed so that a failure
// repeats.
func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

func (h *harness) backends() []kernels.Backend { return []kernels.Backend{h.ref, h.gpu} }

// alloc returns a tensor of shape in a buffer of offset + size + 3 elements
// at element offset, so that writes past either end would show.
func (h *harness) alloc(dtype kernels.DType, offset int, shape ...int) pair {
	h.t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	var out [2]kernels.Tensor
	for i, be := range h.backends() {
		buf, err := be.Alloc(dtype, offset+n+3)
		require.NoError(h.t, err)
		out[i], err = kernels.NewTensor(buf, offset, shape...)
		require.NoError(h.t, err)
	}
	return pair{ref: out[0], gpu: out[1]}
}

// f32 returns an F32 tensor holding values.
func (h *harness) f32(values []float32, shape ...int) pair {
	h.t.Helper()
	p := h.alloc(kernels.F32, 0, shape...)
	h.setF32(p, values)
	return p
}

func (h *harness) setF32(p pair, values []float32) {
	h.t.Helper()
	require.NoError(h.t, h.ref.CopyFromHostF32(p.ref, values))
	require.NoError(h.t, h.gpu.CopyFromHostF32(p.gpu, values))
}

// random returns an F32 tensor of values uniform in [−scale, scale).
func (h *harness) random(scale float32, shape ...int) pair {
	h.t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	return h.f32(h.values(n, scale), shape...)
}

func (h *harness) values(n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = scale * (2*h.rng.Float32() - 1)
	}
	return x
}

func (h *harness) bf16(values []float32, shape ...int) pair {
	h.t.Helper()
	bits := make([]uint16, len(values))
	for i, v := range values {
		bits[i] = kernels.BF16FromFloat32(v)
	}
	p := h.alloc(kernels.BF16, 0, shape...)
	require.NoError(h.t, h.ref.CopyFromHostBF16(p.ref, bits))
	require.NoError(h.t, h.gpu.CopyFromHostBF16(p.gpu, bits))
	return p
}

func (h *harness) i32(values []int32, shape ...int) pair {
	h.t.Helper()
	p := h.alloc(kernels.I32, 0, shape...)
	require.NoError(h.t, h.ref.CopyFromHostI32(p.ref, values))
	require.NoError(h.t, h.gpu.CopyFromHostI32(p.gpu, values))
	return p
}

// read returns the host copies of an F32 pair: the reference's and the
// GPU's. It syncs the GPU first, so a device error fails the test.
func (h *harness) read(p pair) (want, got []float32) {
	h.t.Helper()
	require.NoError(h.t, h.gpu.Sync())
	want = make([]float32, p.ref.Len())
	got = make([]float32, p.gpu.Len())
	require.NoError(h.t, h.ref.CopyToHostF32(want, p.ref))
	require.NoError(h.t, h.gpu.CopyToHostF32(got, p.gpu))
	return want, got
}

// compare fails when the GPU's tensor differs from the reference's by more
// than tol relative to the reference's largest magnitude.
func (h *harness) compare(name string, p pair, tol float64) {
	h.t.Helper()
	want, got := h.read(p)
	err, at := relativeError(got, want)
	require.LessOrEqual(h.t, err, tol, "%s: relative error %.3g at element %d (got %g, want %g) exceeds %g",
		name, err, at, valueAt(got, at), valueAt(want, at), tol)
}

// compareExact fails unless the two tensors are equal bit for bit.
func (h *harness) compareExact(name string, p pair) {
	h.t.Helper()
	want, got := h.read(p)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			h.t.Fatalf("%s: element %d is %g (bits %#x), want %g (bits %#x)", name, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func valueAt(x []float32, i int) float32 {
	if i < 0 || i >= len(x) {
		return float32(math.NaN())
	}
	return x[i]
}

// relativeError returns max|got − want| / max|want| and the index of the
// largest difference. A NaN in either counts as an infinite error.
func relativeError(got, want []float32) (float64, int) {
	var maxDiff, maxRef float64
	at := -1
	for i := range want {
		diff := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(diff) {
			if math.IsNaN(float64(got[i])) && math.IsNaN(float64(want[i])) {
				continue
			}
			return math.Inf(1), i
		}
		if diff > maxDiff {
			maxDiff, at = diff, i
		}
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
	}
	if maxRef == 0 {
		return maxDiff, at
	}
	return maxDiff / maxRef, at
}

func nan() float64 { return math.NaN() }
