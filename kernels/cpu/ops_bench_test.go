package cpu_test

import (
	"math/rand/v2"
	"testing"

	"github.com/ringtune/ringtune/kernels/cpu"
)

// BenchmarkAttention times one layer of Qwen3-0.6B attention (NH 16, NKV 8,
// HS 128) on one row of 1024 tokens, forward and backward.
func BenchmarkAttention(b *testing.B) {
	be := newBackend(b, cpu.Options{})
	rng := rand.New(rand.NewPCG(1, 1))
	const batch, seqLen, nh, nkv, hs = 1, 1024, 16, 8, 128
	q := newF32(b, be, randomValues(rng, batch*seqLen*nh*hs, 1), batch, seqLen, nh, hs)
	k := newF32(b, be, randomValues(rng, batch*seqLen*nkv*hs, 1), batch, seqLen, nkv, hs)
	v := newF32(b, be, randomValues(rng, batch*seqLen*nkv*hs, 1), batch, seqLen, nkv, hs)
	out := newF32(b, be, nil, batch, seqLen, nh, hs)
	lse := newF32(b, be, nil, batch, nh, seqLen)
	seg := newI32(b, be, make([]int32, batch*seqLen), batch, seqLen)
	dq := newF32(b, be, nil, batch, seqLen, nh, hs)
	dk := newF32(b, be, nil, batch, seqLen, nkv, hs)
	dv := newF32(b, be, nil, batch, seqLen, nkv, hs)
	// Causal attention multiplies 2·T²/2·HS per head in each of QKᵀ and PV.
	flops := 2.0 * 2 * seqLen * seqLen / 2 * hs * nh * batch
	b.Run("forward", func(b *testing.B) {
		for b.Loop() {
			be.AttentionForward(out, lse, q, k, v, seg)
		}
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("backward", func(b *testing.B) {
		for b.Loop() {
			be.AttentionBackward(dq, dk, dv, out, q, k, v, out, lse, seg)
		}
		b.ReportMetric(2.5*flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

// BenchmarkLinearCrossEntropy times the head and loss of 256 rows with
// Qwen3-0.6B's C = 1024 and a vocabulary of 32768 (a fifth of Qwen3's, to
// keep the benchmark's memory small).
func BenchmarkLinearCrossEntropy(b *testing.B) {
	be := newBackend(b, cpu.Options{})
	rng := rand.New(rand.NewPCG(2, 2))
	const n, c, vocab = 256, 1024, 32768
	hidden := newF32(b, be, randomValues(rng, n*c, 1), n, c)
	weight := newF32(b, be, randomValues(rng, vocab*c, 0.05), vocab, c)
	targets := make([]int32, n)
	for i := range targets {
		targets[i] = int32(rng.IntN(vocab))
	}
	targetTensor := newI32(b, be, targets, n)
	dHidden := newF32(b, be, nil, n, c)
	dWeight := newF32(b, be, nil, vocab, c)
	flops := 3 * 2.0 * n * c * vocab
	for b.Loop() {
		be.LinearCrossEntropy(dHidden, dWeight, hidden, weight, targetTensor, 1)
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
