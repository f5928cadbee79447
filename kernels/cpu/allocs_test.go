package cpu_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// TestOpsDoNotAllocateInSteadyState runs each op once to size its scratch
// memory, then checks that further calls with the same shapes allocate
// nothing.
func TestOpsDoNotAllocateInSteadyState(t *testing.T) {
	be := newBackend(t, cpu.Options{CrossEntropyChunkRows: 8})
	rng := rand.New(rand.NewPCG(101, 102))
	const batch, seqLen, nh, nkv, hs, vocab = 2, 40, 4, 2, 8, 50
	const channels, n = nh * hs, batch * seqLen
	random := func(shape ...int) kernels.Tensor {
		size := 1
		for _, d := range shape {
			size *= d
		}
		return newF32(t, be, randomValues(rng, size, 1), shape...)
	}
	x, w, out, rstd := random(n, channels), random(channels), random(n, channels), random(n)
	dx, dw := random(n, channels), random(channels)
	q, k, v := random(batch, seqLen, nh, hs), random(batch, seqLen, nkv, hs), random(batch, seqLen, nkv, hs)
	attnOut, lse := random(batch, seqLen, nh, hs), random(batch, nh, seqLen)
	dq, dk, dv := random(batch, seqLen, nh, hs), random(batch, seqLen, nkv, hs), random(batch, seqLen, nkv, hs)
	table, dTable := random(vocab, channels), random(vocab, channels)
	m, v2 := random(vocab, channels), random(vocab, channels)
	dUp, up := random(n, channels), random(n, channels)
	bf16Table := newBF16(t, be, toBF16(randomValues(rng, vocab*channels, 1)), vocab, channels)
	matmulOut := random(n, vocab)
	seg := make([]int32, n)
	positions := make([]int32, n)
	ids := make([]int32, n)
	for i := range n {
		positions[i] = int32(i % seqLen)
		ids[i] = int32(rng.IntN(vocab))
	}
	ids[3] = kernels.IgnoreIndex
	segments := newI32(t, be, seg, batch, seqLen)
	positionTensor := newI32(t, be, positions, batch, seqLen)
	targets := newI32(t, be, ids, n)
	ids[3] = 0
	idTensor := newI32(t, be, ids, n)
	grads := []kernels.Tensor{dx, dw, dTable}
	step := kernels.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, Step: 1}

	ops := []struct {
		name string
		// sgemm marks ops that call Sgemm, whose sync.Pool allocates at
		// random under the race detector.
		sgemm bool
		run   func()
	}{
		{"EmbeddingForward", false, func() { be.EmbeddingForward(out, bf16Table, idTensor) }},
		{"EmbeddingBackward", false, func() { be.EmbeddingBackward(dTable, out, idTensor) }},
		{"RMSNormForward", false, func() { be.RMSNormForward(out, rstd, x, w, 1e-6) }},
		{"RMSNormBackward", false, func() { be.RMSNormBackward(dx, dw, out, x, w, rstd) }},
		{"RoPEForward", false, func() { be.RoPEForward(q, q, positionTensor, 1e6) }},
		{"RoPEBackward", false, func() { be.RoPEBackward(q, q, positionTensor, 1e6) }},
		{"SwiGLUForward", false, func() { be.SwiGLUForward(dx, x, out) }},
		{"SwiGLUBackward", false, func() { be.SwiGLUBackward(dx, dUp, out, x, up) }},
		{"Add", false, func() { be.Add(out, out, x) }},
		{"SumSquares", false, func() { kernels.ClipGradNorm(be, grads, 1e9) }},
		{"AdamW", false, func() { be.AdamW(table, dTable, m, v2, step) }},
		{"Matmul", true, func() { be.Matmul(matmulOut, x, bf16Table, false, true, 1, 0) }},
		{"AttentionForward", true, func() { be.AttentionForward(attnOut, lse, q, k, v, segments) }},
		{"AttentionBackward", true, func() { be.AttentionBackward(dq, dk, dv, attnOut, q, k, v, attnOut, lse, segments) }},
		{"LinearCrossEntropy", true, func() { be.LinearCrossEntropy(dx, dTable, x, table, targets, 1) }},
	}
	for _, op := range ops {
		if op.sgemm && raceDetectorOn {
			continue
		}
		op.run()
		assert.Zero(t, testing.AllocsPerRun(3, op.run), "%s allocates", op.name)
	}
}
