package cpu

import (
	"math/rand/v2"
	"testing"
)

// benchShape is one benchmarked product: op(A) m×k times op(B) k×n.
type benchShape struct {
	name           string
	m, n, k        int
	transA, transB bool
}

// benchShapes are square products and the shapes of a Qwen3-style training
// step with 1024 tokens, hidden size 256, MLP size 768 and a 151936-entry
// vocabulary. Weights W are stored out×in, as in torch.nn.Linear, so the
// forward pass y = x·Wᵀ is NT, the input gradient dx = dy·W is NN and the
// weight gradient dW += dyᵀ·x is TN with beta = 1. The lm_head rows use the
// whole vocabulary and one eighth of it (18992 entries), the chunk size of a
// chunked cross-entropy.
var benchShapes = []benchShape{
	{"square/NN/1024", 1024, 1024, 1024, false, false},
	{"square/NN/2048", 2048, 2048, 2048, false, false},
	{"square/NN/4096", 4096, 4096, 4096, false, false},
	{"square/NT/1024", 1024, 1024, 1024, false, true},
	{"square/TN/1024", 1024, 1024, 1024, true, false},
	{"square/NT/2048", 2048, 2048, 2048, false, true},
	{"square/TN/2048", 2048, 2048, 2048, true, false},
	{"mlp_up/fwd/NT/m1024_n768_k256", 1024, 768, 256, false, true},
	{"mlp_up/dx/NN/m1024_n256_k768", 1024, 256, 768, false, false},
	{"mlp_up/dw/TN/m768_n256_k1024", 768, 256, 1024, true, false},
	{"lm_head/fwd/NT/m1024_n18992_k256", 1024, 18992, 256, false, true},
	{"lm_head/dx/NN/m1024_n256_k18992", 1024, 256, 18992, false, false},
	{"lm_head/dw/TN/m18992_n256_k1024", 18992, 256, 1024, true, false},
	{"lm_head/fwd/NT/m1024_n151936_k256", 1024, 151936, 256, false, true},
}

// BenchmarkSgemm reports GFLOP/s, counting 2·m·n·k floating-point operations
// per call. The weight-gradient shapes accumulate (beta = 1); the others
// overwrite C (beta = 0), as torch.mm does.
func BenchmarkSgemm(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(s.name, func(b *testing.B) {
			benchmarkShape(b, s)
		})
	}
}

func benchmarkShape(b *testing.B, s benchShape) {
	rng := rand.New(rand.NewPCG(1, 1))
	rowsA, colsA := s.m, s.k
	if s.transA {
		rowsA, colsA = s.k, s.m
	}
	rowsB, colsB := s.k, s.n
	if s.transB {
		rowsB, colsB = s.n, s.k
	}
	a := randomStridedMatrix(rng, rowsA, colsA, colsA, 0)
	bm := randomStridedMatrix(rng, rowsB, colsB, colsB, 0)
	c := make([]float32, s.m*s.n)
	var beta float32
	if s.transA {
		beta = 1
	}
	flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)

	Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, colsA, bm, colsB, beta, c, s.n) // warm-up
	b.ResetTimer()
	for b.Loop() {
		Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, colsA, bm, colsB, beta, c, s.n)
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkTile measures each micro-kernel alone on packed panels that stay
// in L1, which bounds what the blocked driver can reach on one core.
func BenchmarkTile(b *testing.B) {
	for _, kernel := range supportedKernels {
		b.Run(kernel.name, func(b *testing.B) {
			kc := 256
			a := make([]float32, kernel.mr*kc)
			bp := make([]float32, kernel.nr*kc)
			c := make([]float32, kernel.mr*kernel.nr)
			for b.Loop() {
				kernel.tile(kc, a, bp, c, kernel.nr, 1, 1)
			}
			flops := 2 * float64(kernel.mr*kernel.nr*kc)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
