package cuda

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// gemmShapes are the products of a Qwen3-0.6B training step (hidden 1024,
// MLP 3072, vocabulary 151936) over 8192 tokens, as M×K×N with op(a) M×K and
// op(b) K×N.
var gemmShapes = []struct{ m, k, n int }{
	{8192, 1024, 3072},   // gate_proj, up_proj
	{8192, 3072, 1024},   // down_proj
	{8192, 1024, 2048},   // q_proj with 16 heads of 128
	{1024, 1024, 151936}, // the lm head of one LinearCrossEntropy chunk (default 1024 rows)
	{8192, 1024, 151936}, // the lm head of all 8192 rows at once
}

// fillPattern fills an F32 tensor with values in [−1, 1) from a hash of the
// index, without a random generator on the host for hundreds of MB.
func fillPattern(tb testing.TB, be *Backend, t kernels.Tensor) {
	tb.Helper()
	const chunk = 1 << 22
	host := make([]float32, min(chunk, t.Len()))
	for start := 0; start < t.Len(); start += chunk {
		end := min(t.Len(), start+chunk)
		values := host[:end-start]
		for i := range values {
			h := uint32(start+i) * 2654435761
			values[i] = float32(h>>8)/float32(1<<23) - 1
		}
		view, err := kernels.NewTensor(t.Buffer(), t.Offset()+start, end-start)
		require.NoError(tb, err)
		require.NoError(tb, be.CopyFromHostF32(view, values))
	}
}

func benchTensor(tb testing.TB, be *Backend, dtype kernels.DType, shape ...int) kernels.Tensor {
	tb.Helper()
	x, err := kernels.AllocTensor(be, dtype, shape...)
	require.NoError(tb, err)
	tb.Cleanup(func() { be.Free(x.Buffer()) })
	if dtype == kernels.F32 {
		fillPattern(tb, be, x)
		return x
	}
	wide := benchTensor(tb, be, kernels.F32, shape...)
	be.Copy(x, wide)
	return x
}

// newBenchGPU returns a CUDA backend on a GPU, skipping on the emulated
// device.
func newBenchGPU(b *testing.B, opts Options) *Backend {
	b.Helper()
	requireRealGPU(b)
	return newGPU(b, opts)
}

// benchOutput returns a zeroed F32 tensor for results, without filling it.
func benchOutput(tb testing.TB, be *Backend, shape ...int) kernels.Tensor {
	tb.Helper()
	x, err := kernels.AllocTensor(be, kernels.F32, shape...)
	require.NoError(tb, err)
	tb.Cleanup(func() { be.Free(x.Buffer()) })
	return x
}

// reportTFLOPS reports flopsPerOp·b.N / elapsed in TFLOP/s.
func reportTFLOPS(b *testing.B, flopsPerOp float64) {
	b.ReportMetric(flopsPerOp*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
}

// BenchmarkGemmBF16 measures cuBLAS's bf16×bf16 product with fp32
// accumulation and an fp32 output, the product Matmul runs for a BF16 weight,
// without Matmul's rounding of a to bf16. Its TFLOP/s is the rate cuBLAS
// reaches on the device, the reference for the backend's products.
func BenchmarkGemmBF16(b *testing.B) {
	be := newBenchGPU(b, Options{})
	for _, s := range gemmShapes {
		b.Run(fmt.Sprintf("%dx%dx%d", s.m, s.k, s.n), func(b *testing.B) {
			a := benchTensor(b, be, kernels.BF16, s.m, s.k)
			w := benchTensor(b, be, kernels.BF16, s.n, s.k) // a weight (out, in), used transposed
			c := benchOutput(b, be, s.m, s.n)
			require.NoError(b, be.Sync())
			d := kernels.MatmulDims{M: s.m, N: s.n, K: s.k}
			b.ResetTimer()
			for range b.N {
				be.gemm(false, true, d, 1, be.ptr(a), cudalib.R16BF, s.k, be.ptr(w), cudalib.R16BF, s.k, 0, be.ptr(c), cudalib.Compute32F)
			}
			require.NoError(b, be.Sync())
			reportTFLOPS(b, 2*float64(s.m)*float64(s.n)*float64(s.k))
		})
	}
}

// BenchmarkMatmul measures Matmul itself for the first three shapes: with an
// F32 weight in TF32 and in strict fp32, and with a BF16 weight, which
// includes the rounding of a to bf16.
func BenchmarkMatmul(b *testing.B) {
	for _, mode := range []struct {
		name   string
		strict bool
		weight kernels.DType
	}{{"TF32", false, kernels.F32}, {"FP32", true, kernels.F32}, {"BF16", false, kernels.BF16}} {
		b.Run(mode.name, func(b *testing.B) {
			be := newBenchGPU(b, Options{StrictFP32: mode.strict})
			for _, s := range gemmShapes[:3] {
				b.Run(fmt.Sprintf("%dx%dx%d", s.m, s.k, s.n), func(b *testing.B) {
					a := benchTensor(b, be, kernels.F32, s.m, s.k)
					w := benchTensor(b, be, mode.weight, s.n, s.k)
					c := benchOutput(b, be, s.m, s.n)
					require.NoError(b, be.Sync())
					b.ResetTimer()
					for range b.N {
						be.Matmul(c, a, w, false, true, 1, 0)
					}
					require.NoError(b, be.Sync())
					reportTFLOPS(b, 2*float64(s.m)*float64(s.n)*float64(s.k))
				})
			}
		})
	}
}

// BenchmarkAttention measures the attention kernels on Qwen3-0.6B's heads
// (16 query heads, 8 key/value heads of 128) over 4 rows of 2048 tokens.
// TFLOP/s counts the causal half of the score and value products: 2 of them
// forward, 5 backward (with the recomputed scores).
func BenchmarkAttention(b *testing.B) {
	const batch, seqLen, nh, nkv, hs = 4, 2048, 16, 8, 128
	be := newBenchGPU(b, Options{})
	q := benchTensor(b, be, kernels.F32, batch, seqLen, nh, hs)
	k := benchTensor(b, be, kernels.F32, batch, seqLen, nkv, hs)
	v := benchTensor(b, be, kernels.F32, batch, seqLen, nkv, hs)
	be.Scale(q, 0.1)
	be.Scale(k, 0.1)
	out := benchOutput(b, be, batch, seqLen, nh, hs)
	lse := benchOutput(b, be, batch, nh, seqLen)
	dOut := benchTensor(b, be, kernels.F32, batch, seqLen, nh, hs)
	dq := benchOutput(b, be, batch, seqLen, nh, hs)
	dk := benchOutput(b, be, batch, seqLen, nkv, hs)
	dv := benchOutput(b, be, batch, seqLen, nkv, hs)
	seg, err := kernels.AllocTensor(be, kernels.I32, batch, seqLen)
	require.NoError(b, err)
	pairFlops := 2 * float64(batch) * nh * seqLen * seqLen / 2 * hs // one causal (T, T)×HS product

	b.Run("forward", func(b *testing.B) {
		for range b.N {
			be.AttentionForward(out, lse, q, k, v, seg)
		}
		require.NoError(b, be.Sync())
		reportTFLOPS(b, 2*pairFlops)
	})
	b.Run("backward", func(b *testing.B) {
		be.AttentionForward(out, lse, q, k, v, seg)
		require.NoError(b, be.Sync())
		b.ResetTimer()
		for range b.N {
			be.AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, seg)
		}
		require.NoError(b, be.Sync())
		reportTFLOPS(b, 5*pairFlops)
	})
}

// BenchmarkLinearCrossEntropy measures the head and loss of Qwen3-0.6B over
// 8192 tokens with gradients, for an F32 (TF32) and a BF16 weight.
func BenchmarkLinearCrossEntropy(b *testing.B) {
	const n, c, v = 8192, 1024, 151936
	for _, dtype := range []kernels.DType{kernels.F32, kernels.BF16} {
		b.Run(dtype.String(), func(b *testing.B) {
			be := newBenchGPU(b, Options{})
			hidden := benchTensor(b, be, kernels.F32, n, c)
			weight := benchTensor(b, be, dtype, v, c)
			dHidden := benchOutput(b, be, n, c)
			var dWeight kernels.Tensor
			if dtype == kernels.F32 {
				dWeight = benchOutput(b, be, v, c)
			}
			targets := make([]int32, n)
			for i := range targets {
				targets[i] = int32(i * 7919 % v)
			}
			targetT, err := kernels.AllocTensor(be, kernels.I32, n)
			require.NoError(b, err)
			require.NoError(b, be.CopyFromHostI32(targetT, targets))
			b.ResetTimer()
			for range b.N {
				be.LinearCrossEntropy(dHidden, dWeight, hidden, weight, targetT, 1.0/n)
			}
			require.NoError(b, be.Sync())
			products := 2.0 // logits and dHidden
			if !dWeight.IsAbsent() {
				products = 3
			}
			reportTFLOPS(b, products*2*float64(n)*float64(c)*float64(v))
		})
	}
}
