package cuda

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// The tests in this file run the backend's host code on the emulated device
// (see emulatedLibs) without its kernels. They cover memory, copies, streams
// and events, the error flag, and Matmul's mapping of row-major products onto
// column-major cuBLAS, which the emulated device computes in float64.

// newFakeBackend returns a backend on the emulated device with its copy
// stream and error flag but no kernels. It skips without a C and a C++
// compiler or NVRTC. With RINGTUNE_REQUIRE_GPU=1 and no GPU it fails, because
// the emulated device must not stand in for a GPU there.
func newFakeBackend(t *testing.T, strictFP32 bool) *Backend {
	t.Helper()
	if gpuRequired() && !hasRealGPU() {
		t.Fatalf("RINGTUNE_REQUIRE_GPU=1 but no CUDA GPU is usable, so the emulated device is not loaded: %v", gpuCheck.gpuErr)
	}
	if hasRealGPU() {
		// Its exported driver functions would sit beside the real driver's
		// in the process.
		t.Skip("a GPU is present, so the device tests cover this on it, and the emulated device is not loaded")
	}
	libs, err := emulatedLibs()
	if err != nil {
		t.Skipf("the emulated device is not available: %v", err)
	}
	ctx, err := libs.Open(0)
	require.NoError(t, err)
	b := newBackend(ctx, strictFP32, defaultCrossEntropyChunkRows)
	require.NoError(t, b.initStreamAndFlag())
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// newFakeHarness returns a harness on a backend from newFakeBackend. Only the
// harness methods that launch no kernel work with it.
func newFakeHarness(t *testing.T, strictFP32 bool) *harness {
	t.Helper()
	gpu := newFakeBackend(t, strictFP32)
	return &harness{t: t, ref: newCPU(t, cpu.Options{}), gpu: gpu, rng: newTestRand()}
}

func TestFakeMatmulLayouts(t *testing.T) {
	h := newFakeHarness(t, false)
	for _, size := range []struct{ m, n, k int }{{1, 1, 1}, {7, 5, 3}, {3, 1, 9}, {1, 6, 4}, {33, 17, 65}} {
		for _, transA := range []bool{false, true} {
			for _, transB := range []bool{false, true} {
				name := fmt.Sprintf("M=%d N=%d K=%d transA=%t transB=%t", size.m, size.n, size.k, transA, transB)
				aShape := []int{size.m, size.k}
				if transA {
					aShape = []int{size.k, size.m}
				}
				bShape := []int{size.k, size.n}
				if transB {
					bShape = []int{size.n, size.k}
				}
				a := h.random(1, aShape...)
				b := h.random(1, bShape...)
				c := h.alloc(kernels.F32, 1, size.m, size.n)
				h.setF32(c, nanValues(size.m*size.n))
				h.ref.Matmul(c.ref, a.ref, b.ref, transA, transB, 0.5, 0)
				h.gpu.Matmul(c.gpu, a.gpu, b.gpu, transA, transB, 0.5, 0)
				h.compare(name+" beta 0", c, tolFP32)

				h.ref.Matmul(c.ref, a.ref, b.ref, transA, transB, -1, 1)
				h.gpu.Matmul(c.gpu, a.gpu, b.gpu, transA, transB, -1, 1)
				h.compare(name+" beta 1", c, tolFP32)
			}
		}
	}
}

func TestFakeMatmul3DOperands(t *testing.T) {
	h := newFakeHarness(t, true)
	// (B, T, C) reads as (B·T, C), as in dW += dyᵀ·x.
	dy := h.random(1, 2, 3, 4)
	x := h.random(1, 2, 3, 5)
	dw := h.random(1, 4, 5)
	h.ref.Matmul(dw.ref, dy.ref, x.ref, true, false, 1, 1)
	h.gpu.Matmul(dw.gpu, dy.gpu, x.gpu, true, false, 1, 1)
	h.compare("dW += dyᵀ·x", dw, tolFP32)
}

func TestFakeMatmulEmptyInner(t *testing.T) {
	h := newFakeHarness(t, false)
	a := h.alloc(kernels.F32, 0, 3, 0)
	b := h.alloc(kernels.F32, 0, 0, 4)
	c := h.f32(nanValues(12), 3, 4)
	h.gpu.Matmul(c.gpu, a.gpu, b.gpu, false, false, 1, 0)
	_, got := h.read(c)
	assert.Equal(t, make([]float32, 12), got, "K=0 with beta 0 zeroes c")
}

func TestFakeCopiesAndZero(t *testing.T) {
	h := newFakeHarness(t, false)
	values := h.values(13, 5)
	src := h.f32(values, 13)
	dst := h.alloc(kernels.F32, 3, 13)
	h.gpu.Copy(dst.gpu, src.gpu)
	got := make([]float32, 13)
	require.NoError(t, h.gpu.CopyToHostF32(got, dst.gpu))
	assert.Equal(t, values, got, "F32 copy at offset 3")

	bits := []uint16{1, 2, 3, 4, 5}
	bf := h.alloc(kernels.BF16, 1, 5)
	require.NoError(t, h.gpu.CopyFromHostBF16(bf.gpu, bits))
	bfDst := h.alloc(kernels.BF16, 0, 5)
	h.gpu.Copy(bfDst.gpu, bf.gpu)
	gotBits := make([]uint16, 5)
	require.NoError(t, h.gpu.CopyToHostBF16(gotBits, bfDst.gpu))
	assert.Equal(t, bits, gotBits, "BF16 copy from an odd offset")

	ids := []int32{-1, 7, 1 << 30}
	i32 := h.i32(ids, 3)
	i32Dst := h.alloc(kernels.I32, 2, 3)
	h.gpu.Copy(i32Dst.gpu, i32.gpu)
	gotIDs := make([]int32, 3)
	require.NoError(t, h.gpu.CopyToHostI32(gotIDs, i32Dst.gpu))
	assert.Equal(t, ids, gotIDs)

	view, err := kernels.NewTensor(dst.gpu.Buffer(), 5, 4)
	require.NoError(t, err)
	h.gpu.Zero(view)
	require.NoError(t, h.gpu.CopyToHostF32(got, dst.gpu))
	want := append([]float32(nil), values...)
	clear(want[2:6])
	assert.Equal(t, want, got, "Zero of elements 5 to 8 of the buffer")

	assert.ErrorContains(t, h.gpu.CopyToHostF32(got[:3], dst.gpu), "the host slice has 3 elements")
	assert.ErrorContains(t, h.gpu.CopyFromHostI32(dst.gpu, ids), "want dtype I32")
}

func TestFakeAllocAndFree(t *testing.T) {
	b := newFakeBackend(t, false)
	buf, err := b.Alloc(kernels.BF16, 7)
	require.NoError(t, err)
	x, err := kernels.NewTensor(buf, 0, 7)
	require.NoError(t, err)
	got := make([]uint16, 7)
	require.NoError(t, b.CopyToHostBF16(got, x))
	assert.Equal(t, make([]uint16, 7), got, "a new buffer is zeroed")

	empty, err := b.Alloc(kernels.F32, 0)
	require.NoError(t, err)
	b.Free(empty)
	b.Free(buf)
	assert.PanicsWithError(t, "kernels/cuda: use of a freed BF16 buffer of 7 elements", func() { b.Zero(x) })

	_, err = b.Alloc(kernels.F32, -1)
	assert.ErrorContains(t, err, "must not be negative")

	other := newCPU(t, cpu.Options{})
	foreign, err := kernels.AllocTensor(other, kernels.F32, 2)
	require.NoError(t, err)
	assert.Panics(t, func() { b.Zero(foreign) }, "a CPU tensor")
}

func TestFakeSyncReportsErrorFlag(t *testing.T) {
	b := newFakeBackend(t, false)
	require.NoError(t, b.Sync())
	flag := int32(errIDRange | errSegment)
	require.NoError(t, b.ctx.MemcpyHtoD(b.errFlag, unsafe.Pointer(&flag), 4))
	err := b.Sync()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "embedding id")
	assert.Contains(t, err.Error(), "segment start")
	assert.NotContains(t, err.Error(), "RoPE")
	assert.NoError(t, b.Sync(), "Sync clears the flag")
}

func TestFakeHostStaging(t *testing.T) {
	b := newFakeBackend(t, false)
	const n = 1000
	x, err := kernels.AllocTensor(b, kernels.F32, n)
	require.NoError(t, err)
	values := make([]float32, n)
	for i := range values {
		values[i] = float32(i) / 3
	}
	require.NoError(t, b.CopyFromHostF32(x, values))

	pinned, err := b.AllocPinnedF32(n)
	require.NoError(t, err)
	wait, err := b.CopyToHostAsyncF32(pinned, x)
	require.NoError(t, err)
	require.NoError(t, wait())
	assert.Equal(t, values, pinned)
	b.FreePinnedF32(pinned)

	empty, err := b.AllocPinnedF32(0)
	require.NoError(t, err)
	assert.Empty(t, empty)
	require.NoError(t, b.Sync())
}

func TestFakeCloseIsIdempotent(t *testing.T) {
	b := newFakeBackend(t, false)
	require.NoError(t, b.Close())
	assert.NoError(t, b.Close())
}
