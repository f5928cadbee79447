package cuda

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
)

// elementSizes are element counts around the block size (256) and the
// grid-stride limit (4096 blocks of 256).
var elementSizes = []int{1, 3, 255, 257, 1000, 4096*256 + 17}

func TestCopyConversions(t *testing.T) {
	h := newHarness(t, Options{})
	for _, n := range elementSizes {
		values := h.values(n, 100)
		values[0] = float32(math.NaN())
		if n > 2 {
			values[1] = float32(math.Inf(-1))
			values[2] = 1.00390625 // halfway between two bfloat16 values: rounds to even
		}
		src := h.f32(values, n)

		// Odd offsets put BF16 views off 4-byte alignment.
		narrow := h.alloc(kernels.BF16, 1, n)
		h.ref.Copy(narrow.ref, src.ref)
		h.gpu.Copy(narrow.gpu, src.gpu)
		require.NoError(t, h.gpu.Sync())
		want := make([]uint16, n)
		got := make([]uint16, n)
		require.NoError(t, h.ref.CopyToHostBF16(want, narrow.ref))
		require.NoError(t, h.gpu.CopyToHostBF16(got, narrow.gpu))
		assert.Equal(t, want, got, "F32 to BF16, %d elements", n)

		wide := h.alloc(kernels.F32, 3, n)
		h.ref.Copy(wide.ref, narrow.ref)
		h.gpu.Copy(wide.gpu, narrow.gpu)
		h.compareExact("BF16 to F32", wide)

		same := h.alloc(kernels.F32, 1, n)
		h.ref.Copy(same.ref, src.ref)
		h.gpu.Copy(same.gpu, src.gpu)
		h.compareExact("F32 to F32", same)
	}
}

func TestCopyI32AndBF16(t *testing.T) {
	h := newHarness(t, Options{})
	ids := []int32{5, -7, 1 << 30, 0, 3}
	src := h.i32(ids, 5)
	dst := h.alloc(kernels.I32, 1, 5)
	h.gpu.Copy(dst.gpu, src.gpu)
	got := make([]int32, 5)
	require.NoError(t, h.gpu.CopyToHostI32(got, dst.gpu))
	assert.Equal(t, ids, got)

	bf := h.bf16([]float32{1, -2, 3.5}, 3)
	bfDst := h.alloc(kernels.BF16, 1, 3)
	h.gpu.Copy(bfDst.gpu, bf.gpu)
	gotBits := make([]uint16, 3)
	require.NoError(t, h.gpu.CopyToHostBF16(gotBits, bfDst.gpu))
	assert.Equal(t, []uint16{0x3f80, 0xc000, 0x4060}, gotBits)
}

func TestZeroLeavesNeighbors(t *testing.T) {
	h := newHarness(t, Options{})
	for _, dtype := range []kernels.DType{kernels.F32, kernels.BF16, kernels.I32} {
		buf, err := h.gpu.Alloc(dtype, 11)
		require.NoError(t, err)
		whole, err := kernels.NewTensor(buf, 0, 11)
		require.NoError(t, err)
		switch dtype {
		case kernels.F32:
			require.NoError(t, h.gpu.CopyFromHostF32(whole, []float32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}))
		case kernels.BF16:
			require.NoError(t, h.gpu.CopyFromHostBF16(whole, []uint16{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}))
		case kernels.I32:
			require.NoError(t, h.gpu.CopyFromHostI32(whole, []int32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}))
		}
		view, err := kernels.NewTensor(buf, 3, 5)
		require.NoError(t, err)
		h.gpu.Zero(view)
		require.NoError(t, h.gpu.Sync())
		want := []float64{1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1}
		got := make([]float64, 11)
		switch dtype {
		case kernels.F32:
			host := make([]float32, 11)
			require.NoError(t, h.gpu.CopyToHostF32(host, whole))
			for i, v := range host {
				got[i] = float64(v)
			}
		case kernels.BF16:
			host := make([]uint16, 11)
			require.NoError(t, h.gpu.CopyToHostBF16(host, whole))
			for i, v := range host {
				got[i] = float64(v)
			}
		case kernels.I32:
			host := make([]int32, 11)
			require.NoError(t, h.gpu.CopyToHostI32(host, whole))
			for i, v := range host {
				got[i] = float64(v)
			}
		}
		assert.Equal(t, want, got, "Zero of elements 3 to 7 of a %s buffer", dtype)
	}
}

func TestAllocIsZeroed(t *testing.T) {
	h := newHarness(t, Options{})
	buf, err := h.gpu.Alloc(kernels.F32, 1001)
	require.NoError(t, err)
	x, err := kernels.NewTensor(buf, 0, 1001)
	require.NoError(t, err)
	got := make([]float32, 1001)
	require.NoError(t, h.gpu.CopyToHostF32(got, x))
	assert.Equal(t, make([]float32, 1001), got)
	h.gpu.Free(buf)
	assert.Panics(t, func() { h.gpu.Zero(x) }, "use after Free")
}

func TestAddScaleSwiGLU(t *testing.T) {
	h := newHarness(t, Options{})
	for _, n := range elementSizes {
		a := h.random(2, n)
		b := h.random(2, n)
		out := h.alloc(kernels.F32, 1, n)
		h.ref.Add(out.ref, a.ref, b.ref)
		h.gpu.Add(out.gpu, a.gpu, b.gpu)
		h.compareExact("Add", out)

		h.ref.Add(a.ref, a.ref, b.ref) // in place
		h.gpu.Add(a.gpu, a.gpu, b.gpu)
		h.compareExact("Add in place", a)

		h.ref.Scale(a.ref, -0.37)
		h.gpu.Scale(a.gpu, -0.37)
		h.compareExact("Scale", a)

		gate := h.random(6, n)
		up := h.random(2, n)
		h.ref.SwiGLUForward(out.ref, gate.ref, up.ref)
		h.gpu.SwiGLUForward(out.gpu, gate.gpu, up.gpu)
		h.compare("SwiGLUForward", out, tolFP32)

		dOut := h.random(1, n)
		dGate := h.alloc(kernels.F32, 0, n)
		dUp := h.alloc(kernels.F32, 0, n)
		h.ref.SwiGLUBackward(dGate.ref, dUp.ref, dOut.ref, gate.ref, up.ref)
		h.gpu.SwiGLUBackward(dGate.gpu, dUp.gpu, dOut.gpu, gate.gpu, up.gpu)
		h.compare("SwiGLUBackward dGate", dGate, tolFP32)
		h.compare("SwiGLUBackward dUp", dUp, tolFP32)

		// dGate in place of dOut.
		h.ref.SwiGLUBackward(dOut.ref, dUp.ref, dOut.ref, gate.ref, up.ref)
		h.gpu.SwiGLUBackward(dOut.gpu, dUp.gpu, dOut.gpu, gate.gpu, up.gpu)
		h.compare("SwiGLUBackward dGate in place", dOut, tolFP32)

		// out in place of gate.
		h.ref.SwiGLUForward(gate.ref, gate.ref, up.ref)
		h.gpu.SwiGLUForward(gate.gpu, gate.gpu, up.gpu)
		h.compare("SwiGLUForward in place", gate, tolFP32)
	}
}

func TestSumSquares(t *testing.T) {
	h := newHarness(t, Options{})
	var refs, gpus []kernels.Tensor
	for _, n := range append([]int{0}, elementSizes...) {
		x := h.random(3, max(1, n))
		if n == 0 {
			empty := h.alloc(kernels.F32, 0, 0)
			x = empty
		}
		refs = append(refs, x.ref)
		gpus = append(gpus, x.gpu)
	}
	want := h.ref.SumSquares(refs)
	got := h.gpu.SumSquares(gpus)
	require.NoError(t, h.gpu.Sync())
	assert.InEpsilon(t, want, got, 1e-12)
	assert.Zero(t, h.gpu.SumSquares(nil))
}

func TestAdamW(t *testing.T) {
	h := newHarness(t, Options{})
	for _, n := range []int{1, 1000, 300001} {
		param := h.random(1, n)
		m := h.random(0.1, n)
		v := h.f32(absValues(h.values(n, 0.01)), n)
		for step := 1; step <= 3; step++ {
			grad := h.random(0.5, n)
			s := kernels.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: step}
			if step == 2 {
				s.WeightDecay = 0
				s.Beta1 = 0.6 // the other branch of lerp
			}
			h.ref.AdamW(param.ref, grad.ref, m.ref, v.ref, s)
			h.gpu.AdamW(param.gpu, grad.gpu, m.gpu, v.gpu, s)
		}
		h.compare("AdamW param", param, 1e-6)
		h.compare("AdamW m", m, 1e-6)
		h.compare("AdamW v", v, 1e-6)
	}
}

func absValues(x []float32) []float32 {
	for i, v := range x {
		x[i] = float32(math.Abs(float64(v)))
	}
	return x
}

func TestEmbedding(t *testing.T) {
	h := newHarness(t, Options{})
	for _, c := range []int{1, 33, 1024} {
		const v, n = 50, 77
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(h.rng.IntN(v))
		}
		ids[1] = ids[0] // a repeated id adds twice in backward
		idT := h.i32(ids, n)
		tableValues := h.values(v*c, 1)
		for _, table := range []pair{h.f32(tableValues, v, c), h.bf16(tableValues, v, c)} {
			out := h.alloc(kernels.F32, 1, n, c)
			h.ref.EmbeddingForward(out.ref, table.ref, idT.ref)
			h.gpu.EmbeddingForward(out.gpu, table.gpu, idT.gpu)
			h.compareExact("EmbeddingForward "+table.ref.DType().String(), out)
		}
		dTable := h.random(1, v, c)
		dOut := h.random(1, n, c)
		h.ref.EmbeddingBackward(dTable.ref, dOut.ref, idT.ref)
		h.gpu.EmbeddingBackward(dTable.gpu, dOut.gpu, idT.gpu)
		h.compare("EmbeddingBackward", dTable, tolFP32)
	}
}

func TestEmbeddingIDOutOfRangeFailsSync(t *testing.T) {
	h := newHarness(t, Options{})
	table := h.random(1, 4, 8)
	ids := h.i32([]int32{0, 4}, 2)
	out := h.alloc(kernels.F32, 0, 2, 8)
	h.gpu.EmbeddingForward(out.gpu, table.gpu, ids.gpu)
	err := h.gpu.Sync()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "embedding id")
	assert.NoError(t, h.gpu.Sync(), "the error is reported once")
}

func TestContractViolationsPanicAsCPU(t *testing.T) {
	h := newHarness(t, Options{})
	a := h.random(1, 3, 4)
	b := h.random(1, 5, 6)
	c := h.alloc(kernels.F32, 0, 3, 6)
	_, want := kernels.CheckMatmul(c.gpu, a.gpu, b.gpu, false, false)
	require.Error(t, want)
	assert.PanicsWithError(t, want.Error(), func() { h.gpu.Matmul(c.gpu, a.gpu, b.gpu, false, false, 1, 0) })

	x := h.random(1, 2, 8)
	w := h.random(1, 7)
	_, want = kernels.CheckRMSNormForward(x.gpu, kernels.Tensor{}, x.gpu, w.gpu, 1e-6)
	require.Error(t, want)
	assert.PanicsWithError(t, want.Error(), func() { h.gpu.RMSNormForward(x.gpu, kernels.Tensor{}, x.gpu, w.gpu, 1e-6) })
	assert.Panics(t, func() { h.gpu.Copy(x.gpu, a.gpu) }, "Copy of unequal lengths")
}

func TestHostStaging(t *testing.T) {
	h := newHarness(t, Options{})
	const n = 1<<20 + 3
	x := h.random(1, n)
	h.gpu.Scale(x.gpu, 2)
	pinned, err := h.gpu.AllocPinnedF32(n)
	require.NoError(t, err)
	defer h.gpu.FreePinnedF32(pinned)
	wait, err := h.gpu.CopyToHostAsyncF32(pinned, x.gpu)
	require.NoError(t, err)
	// The trainer waits on another goroutine while it issues more ops.
	waited := make(chan error)
	go func() { waited <- wait() }()
	other := h.random(1, 1000)
	h.gpu.Scale(other.gpu, 3)
	require.NoError(t, <-waited)
	require.NoError(t, h.gpu.Sync())
	h.ref.Scale(x.ref, 2)
	want := make([]float32, n)
	require.NoError(t, h.ref.CopyToHostF32(want, x.ref))
	assert.Equal(t, want, pinned)

	_, err = h.gpu.CopyToHostAsyncF32(pinned[:5], x.gpu)
	assert.Error(t, err, "a destination of the wrong length")
}
