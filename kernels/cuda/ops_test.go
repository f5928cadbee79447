package cuda

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
)

func TestRMSNorm(t *testing.T) {
	h := newHarness(t, Options{})
	for _, size := range []struct{ n, c int }{{1, 1}, {3, 7}, {17, 128}, {300, 1000}, {5, 2048}} {
		name := fmt.Sprintf("N=%d C=%d", size.n, size.c)
		x := h.random(3, size.n, size.c)
		w := h.random(1, size.c)
		out := h.alloc(kernels.F32, 1, size.n, size.c)
		rstd := h.alloc(kernels.F32, 0, size.n)
		h.ref.RMSNormForward(out.ref, rstd.ref, x.ref, w.ref, 1e-6)
		h.gpu.RMSNormForward(out.gpu, rstd.gpu, x.gpu, w.gpu, 1e-6)
		h.compare(name+" forward out", out, tolFP32)
		h.compare(name+" forward rstd", rstd, tolFP32)

		dOut := h.random(1, size.n, size.c)
		dx := h.alloc(kernels.F32, 0, size.n, size.c)
		dw := h.random(1, size.c) // accumulated into
		h.ref.RMSNormBackward(dx.ref, dw.ref, dOut.ref, x.ref, w.ref, rstd.ref)
		h.gpu.RMSNormBackward(dx.gpu, dw.gpu, dOut.gpu, x.gpu, w.gpu, rstd.gpu)
		h.compare(name+" backward dx", dx, tolFP32)
		h.compare(name+" backward dWeight", dw, tolFP32)

		// dx in place of dOut, without dWeight.
		h.ref.RMSNormBackward(dOut.ref, kernels.Tensor{}, dOut.ref, x.ref, w.ref, rstd.ref)
		h.gpu.RMSNormBackward(dOut.gpu, kernels.Tensor{}, dOut.gpu, x.gpu, w.gpu, rstd.gpu)
		h.compare(name+" backward in place", dOut, tolFP32)

		// out in place of x, without rstd.
		h.ref.RMSNormForward(x.ref, kernels.Tensor{}, x.ref, w.ref, 1e-5)
		h.gpu.RMSNormForward(x.gpu, kernels.Tensor{}, x.gpu, w.gpu, 1e-5)
		h.compare(name+" forward in place", x, tolFP32)
	}
}

func TestRoPE(t *testing.T) {
	h := newHarness(t, Options{})
	for _, size := range []struct{ b, t, heads, hs int }{{1, 1, 1, 2}, {2, 7, 3, 64}, {1, 45, 8, 128}} {
		name := fmt.Sprintf("B=%d T=%d heads=%d HS=%d", size.b, size.t, size.heads, size.hs)
		positions := make([]int32, size.b*size.t)
		for i := range positions {
			positions[i] = int32(h.rng.IntN(70000)) // past the CPU's cached table too
		}
		pos := h.i32(positions, size.b, size.t)
		x := h.random(2, size.b, size.t, size.heads, size.hs)
		out := h.alloc(kernels.F32, 0, size.b, size.t, size.heads, size.hs)
		for _, theta := range []float64{10000, 1e6} {
			h.ref.RoPEForward(out.ref, x.ref, pos.ref, theta)
			h.gpu.RoPEForward(out.gpu, x.gpu, pos.gpu, theta)
			h.compare(name+" forward", out, tolFP32)
			h.ref.RoPEBackward(out.ref, out.ref, pos.ref, theta)
			h.gpu.RoPEBackward(out.gpu, out.gpu, pos.gpu, theta)
			h.compare(name+" backward in place", out, tolFP32)
		}
	}
}

func TestRoPENegativePositionFailsSync(t *testing.T) {
	h := newHarness(t, Options{})
	x := h.random(1, 1, 2, 1, 4)
	pos := h.i32([]int32{0, -1}, 1, 2)
	h.gpu.RoPEForward(x.gpu, x.gpu, pos.gpu, 1e4)
	err := h.gpu.Sync()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "RoPE position")
}

// attentionCase is one shape of the attention tests, with the examples
// packed into each row (nil: one example).
type attentionCase struct {
	b, t, nh, nkv, hs int
	starts            [][]int32
	lengths           []int
}

func (c attentionCase) String() string {
	return fmt.Sprintf("B=%d T=%d NH=%d NKV=%d HS=%d starts=%v", c.b, c.t, c.nh, c.nkv, c.hs, c.starts)
}

var attentionCases = []attentionCase{
	{b: 1, t: 1, nh: 1, nkv: 1, hs: 64},
	{b: 2, t: 37, nh: 4, nkv: 1, hs: 64},
	{b: 1, t: 100, nh: 8, nkv: 2, hs: 128},
	{b: 2, t: 70, nh: 4, nkv: 4, hs: 128, starts: [][]int32{{0, 5, 33, 64}, {0, 40}}, lengths: []int{70, 61}},
	{b: 1, t: 33, nh: 2, nkv: 1, hs: 80},
	{b: 1, t: 65, nh: 2, nkv: 2, hs: 256, starts: [][]int32{{0, 31, 32}}},
	{b: 1, t: 300, nh: 4, nkv: 1, hs: 128, starts: [][]int32{{0, 100, 290}}},
}

func TestAttention(t *testing.T) {
	h := newHarness(t, Options{})
	for _, c := range attentionCases {
		t.Run(c.String(), func(t *testing.T) {
			h.t = t
			seg := make([]int32, c.b*c.t)
			starts := c.starts
			if starts == nil {
				starts = make([][]int32, c.b)
			}
			require.NoError(t, kernels.SegmentStarts(seg, starts, c.lengths, c.t))
			segT := h.i32(seg, c.b, c.t)
			q := h.random(2, c.b, c.t, c.nh, c.hs)
			k := h.random(2, c.b, c.t, c.nkv, c.hs)
			v := h.random(1, c.b, c.t, c.nkv, c.hs)
			out := h.alloc(kernels.F32, 1, c.b, c.t, c.nh, c.hs)
			lse := h.alloc(kernels.F32, 0, c.b, c.nh, c.t)
			h.ref.AttentionForward(out.ref, lse.ref, q.ref, k.ref, v.ref, segT.ref)
			h.gpu.AttentionForward(out.gpu, lse.gpu, q.gpu, k.gpu, v.gpu, segT.gpu)
			h.compare("out", out, tolAttention)
			h.compare("lse", lse, tolAttention)

			dOut := h.random(1, c.b, c.t, c.nh, c.hs)
			dq := h.f32(h.values(c.b*c.t*c.nh*c.hs, 9), c.b, c.t, c.nh, c.hs) // overwritten, not accumulated
			dk := h.alloc(kernels.F32, 0, c.b, c.t, c.nkv, c.hs)
			dv := h.alloc(kernels.F32, 0, c.b, c.t, c.nkv, c.hs)
			h.ref.AttentionBackward(dq.ref, dk.ref, dv.ref, dOut.ref, q.ref, k.ref, v.ref, out.ref, lse.ref, segT.ref)
			h.gpu.AttentionBackward(dq.gpu, dk.gpu, dv.gpu, dOut.gpu, q.gpu, k.gpu, v.gpu, out.gpu, lse.gpu, segT.gpu)
			h.compare("dq", dq, tolAttention)
			h.compare("dk", dk, tolAttention)
			h.compare("dv", dv, tolAttention)
		})
	}
}

func TestAttentionDecode(t *testing.T) {
	h := newHarness(t, Options{})
	for _, c := range []struct{ b, tq, s, length, nh, nkv, hs int }{
		{1, 1, 1, 1, 1, 1, 64},
		{2, 1, 40, 30, 4, 2, 64},
		{2, 5, 40, 30, 8, 2, 128},
		{1, 37, 80, 80, 4, 4, 128},
	} {
		name := fmt.Sprintf("%+v", c)
		q := h.random(2, c.b, c.tq, c.nh, c.hs)
		kc := h.random(2, c.b, c.s, c.nkv, c.hs)
		vc := h.random(1, c.b, c.s, c.nkv, c.hs)
		out := h.alloc(kernels.F32, 0, c.b, c.tq, c.nh, c.hs)
		h.ref.AttentionDecode(out.ref, q.ref, kc.ref, vc.ref, c.length)
		h.gpu.AttentionDecode(out.gpu, q.gpu, kc.gpu, vc.gpu, c.length)
		h.compare(name, out, tolAttention)
	}
}

func TestAttentionHeadSizeTooLarge(t *testing.T) {
	h := newHarness(t, Options{})
	q := h.random(1, 1, 2, 1, 258)
	seg := h.i32([]int32{0, 0}, 1, 2)
	out := h.alloc(kernels.F32, 0, 1, 2, 1, 258)
	assert.Panics(t, func() { h.gpu.AttentionForward(out.gpu, kernels.Tensor{}, q.gpu, q.gpu, q.gpu, seg.gpu) })
}

func TestMatmul(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("StrictFP32=%t", strict), func(t *testing.T) {
			h := newHarness(t, Options{StrictFP32: strict})
			f32Tol, bf16Tol := tolTF32, tolBF16
			if strict {
				f32Tol, bf16Tol = tolFP32, tolFP32
			}
			for _, size := range []struct{ m, n, k int }{{1, 1, 1}, {7, 5, 3}, {64, 96, 128}, {129, 257, 65}, {3, 1000, 1}} {
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
						bValues := h.values(size.k*size.n, 1)
						bF32 := h.f32(bValues, bShape...)
						bBF16 := h.bf16(bValues, bShape...)

						c := h.alloc(kernels.F32, 1, size.m, size.n)
						h.setF32(c, nanValues(size.m*size.n)) // beta 0 must not read c
						h.ref.Matmul(c.ref, a.ref, bF32.ref, transA, transB, 0.5, 0)
						h.gpu.Matmul(c.gpu, a.gpu, bF32.gpu, transA, transB, 0.5, 0)
						h.compare(name+" F32", c, f32Tol)

						h.ref.Matmul(c.ref, a.ref, bBF16.ref, transA, transB, 1, 1)
						h.gpu.Matmul(c.gpu, a.gpu, bBF16.gpu, transA, transB, 1, 1)
						h.compare(name+" BF16 accumulated", c, bf16Tol)
					}
				}
			}
		})
	}
}

func nanValues(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(nan())
	}
	return x
}

func TestMatmulEmptyInner(t *testing.T) {
	h := newHarness(t, Options{})
	a := h.alloc(kernels.F32, 0, 3, 0)
	b := h.alloc(kernels.F32, 0, 0, 4)
	c := h.random(1, 3, 4)
	h.ref.Matmul(c.ref, a.ref, b.ref, false, false, 1, 2)
	h.gpu.Matmul(c.gpu, a.gpu, b.gpu, false, false, 1, 2)
	h.compareExact("K=0, beta 2", c)
	h.setF32(c, nanValues(12))
	h.ref.Matmul(c.ref, a.ref, b.ref, false, false, 1, 0)
	h.gpu.Matmul(c.gpu, a.gpu, b.gpu, false, false, 1, 0)
	h.compareExact("K=0, beta 0", c)
}

func TestLinearCrossEntropy(t *testing.T) {
	for _, strict := range []bool{false, true} {
		for _, weightType := range []kernels.DType{kernels.F32, kernels.BF16} {
			t.Run(fmt.Sprintf("StrictFP32=%t/%s", strict, weightType), func(t *testing.T) {
				h := newHarness(t, Options{StrictFP32: strict, CrossEntropyChunkRows: 7})
				tol := tolTF32
				if weightType == kernels.BF16 {
					tol = tolBF16
				}
				if strict {
					tol = 1e-4
				}
				const n, c, v = 40, 64, 1001
				targets := make([]int32, n)
				for i := range targets {
					targets[i] = int32(h.rng.IntN(v))
					if i%3 == 1 {
						targets[i] = kernels.IgnoreIndex
					}
				}
				targetT := h.i32(targets, n)
				hidden := h.random(1, n, c)
				wValues := h.values(v*c, 0.5)
				weight := h.f32(wValues, v, c)
				if weightType == kernels.BF16 {
					weight = h.bf16(wValues, v, c)
				}
				dHidden := h.f32(nanValues(n*c), n, c) // overwritten, ignored rows included
				dWeight := h.random(0.01, v, c)        // accumulated into
				scale := float32(1.0 / 27)
				wantLoss, wantCount := h.ref.LinearCrossEntropy(dHidden.ref, dWeight.ref, hidden.ref, weight.ref, targetT.ref, scale)
				gotLoss, gotCount := h.gpu.LinearCrossEntropy(dHidden.gpu, dWeight.gpu, hidden.gpu, weight.gpu, targetT.gpu, scale)
				require.NoError(t, h.gpu.Sync())
				assert.Equal(t, wantCount, gotCount)
				assert.InEpsilon(t, wantLoss, gotLoss, tol, "loss sum")
				h.compare("dHidden", dHidden, tol)
				h.compare("dWeight", dWeight, tol)

				lossOnly, countOnly := h.gpu.LinearCrossEntropy(kernels.Tensor{}, kernels.Tensor{}, hidden.gpu, weight.gpu, targetT.gpu, scale)
				assert.Equal(t, wantCount, countOnly)
				assert.InEpsilon(t, wantLoss, lossOnly, tol, "loss sum without gradients")
			})
		}
	}
}

func TestLinearCrossEntropyAllIgnored(t *testing.T) {
	h := newHarness(t, Options{})
	targets := h.i32([]int32{kernels.IgnoreIndex, kernels.IgnoreIndex}, 2)
	hidden := h.random(1, 2, 8)
	weight := h.random(1, 5, 8)
	dHidden := h.f32(nanValues(16), 2, 8)
	loss, count := h.gpu.LinearCrossEntropy(dHidden.gpu, kernels.Tensor{}, hidden.gpu, weight.gpu, targets.gpu, 1)
	assert.Zero(t, loss)
	assert.Zero(t, count)
	_, got := h.read(pair{ref: dHidden.ref, gpu: dHidden.gpu})
	assert.Equal(t, make([]float32, 16), got, "dHidden of ignored rows is zero")
}

func TestLinearCrossEntropyTargetOutOfRangePanics(t *testing.T) {
	h := newHarness(t, Options{})
	targets := h.i32([]int32{0, 5}, 2)
	hidden := h.random(1, 2, 8)
	weight := h.random(1, 5, 8)
	assert.PanicsWithError(t,
		"kernels: LinearCrossEntropy: target 5 of row 1 is out of range for a vocabulary of 5. Use -100 to ignore a row",
		func() {
			h.gpu.LinearCrossEntropy(kernels.Tensor{}, kernels.Tensor{}, hidden.gpu, weight.gpu, targets.gpu, 1)
		})
}
