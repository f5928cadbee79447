package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// The attention kernels (kernels/attention.cu) work on tiles of
// attentionTile queries and keys with attentionThreads threads per block.
//
// NOTE: they multiply in fp32 on CUDA cores, not on tensor cores, so they
// reach a fraction of the GEMMs' rate; BenchmarkAttention measures it. A
// decoding step (Tq = 1) keeps one of a block's four warps busy.
const (
	attentionTile    = 32
	attentionThreads = 128
)

// attentionBuild returns the index in attentionBuilds of the smallest build
// that covers head size hs. It panics for a head size above the largest.
//
// NOTE: kernels/cpu takes any even head size, but the kernels here stop at
// 256, which covers Qwen3 (128) and the usual 64.
func attentionBuild(op string, hs int) int {
	for i, maxHS := range attentionBuilds {
		if hs <= maxHS {
			return i
		}
	}
	panic(fmt.Errorf("kernels: %s: head size %d is not supported by the CUDA backend, whose attention kernels take head sizes up to %d",
		op, hs, attentionBuilds[len(attentionBuilds)-1]))
}

// Shared memory of the kernels, in bytes, for head size hs. They match the
// layouts in kernels/attention.cu.
// HSP is hs rounded up to a multiple of 4, and tiles that lanes read by row
// have 4 floats of padding per row.
func attentionForwardShared(hs int) int {
	hsp := paddedHeadSize(hs)
	return 4 * attentionTile * (hsp + (hsp + 4) + hs)
}

func attentionDQShared(hs int) int {
	hsp := paddedHeadSize(hs)
	return 4 * attentionTile * (2*hsp + 2*(hsp+4))
}

func attentionDKDVShared(hs int) int {
	hsp := paddedHeadSize(hs)
	return 4*attentionTile*(2*hsp+2*(hsp+4)) + 4*4*attentionTile
}

// paddedHeadSize returns hs rounded up to a multiple of 4, as
// padded_head_size in kernels/attention.cu.
func paddedHeadSize(hs int) int { return (hs + 3) &^ 3 }

// attentionScale returns 1/sqrt(HS) as kernels/cpu rounds it.
func attentionScale(hs int) float32 {
	return float32(1 / math.Sqrt(float64(hs)))
}

// AttentionForward computes causal grouped-query attention with one block per
// tile of 32 queries of one head.
func (b *Backend) AttentionForward(out, lse, q, k, v, segmentStarts kernels.Tensor) {
	d, err := kernels.CheckAttentionForward(out, lse, q, k, v, segmentStarts)
	if err != nil {
		panic(err)
	}
	build := attentionBuild("AttentionForward", d.HS)
	if d.B == 0 || d.T == 0 || d.NH == 0 || d.HS == 0 {
		return
	}
	b.attentionForward(build, b.ptr(out), b.ptr(lse), b.ptr(q), b.ptr(k), b.ptr(v), b.ptr(segmentStarts),
		d.B, d.T, d.T, d.NH, d.NKV, d.HS, 0)
}

// AttentionDecode attends Tq new queries to a key/value cache. It is the
// forward kernel with the queries at positions length−Tq … length−1, the
// cache's S as the key stride and no segments.
func (b *Backend) AttentionDecode(out, q, kCache, vCache kernels.Tensor, length int) {
	d, err := kernels.CheckAttentionDecode(out, q, kCache, vCache, length)
	if err != nil {
		panic(err)
	}
	build := attentionBuild("AttentionDecode", d.HS)
	if d.B == 0 || d.NH == 0 || d.HS == 0 {
		return
	}
	b.attentionForward(build, b.ptr(out), 0, b.ptr(q), b.ptr(kCache), b.ptr(vCache), 0,
		d.B, d.Tq, d.S, d.NH, d.NKV, d.HS, d.Length-d.Tq)
}

func (b *Backend) attentionForward(build int, out, lse, q, k, v, seg cudalib.DevicePtr, batch, tq, tkv, nh, nkv, hs, qPos0 int) {
	tqArg, tkvArg, nhArg, nkvArg, hsArg, pos0 := int32(tq), int32(tkv), int32(nh), int32(nkv), int32(hs), int32(qPos0)
	scale := attentionScale(hs)
	grid := [3]uint32{uint32((tq + attentionTile - 1) / attentionTile), uint32(nh), uint32(batch)}
	b.launch(b.fn.attentionForward[build], grid, [3]uint32{attentionThreads, 1, 1}, attentionForwardShared(hs),
		unsafe.Pointer(&out), unsafe.Pointer(&lse), unsafe.Pointer(&q), unsafe.Pointer(&k), unsafe.Pointer(&v),
		unsafe.Pointer(&seg), unsafe.Pointer(&tqArg), unsafe.Pointer(&tkvArg), unsafe.Pointer(&nhArg),
		unsafe.Pointer(&nkvArg), unsafe.Pointer(&hsArg), unsafe.Pointer(&pos0), unsafe.Pointer(&scale),
		unsafe.Pointer(&b.errFlag))
}

// AttentionBackward computes dq, dk and dv in three kernels: the row dots
// D = rowsum(dO ∘ O), then dq with one block per query tile and dk, dv with
// one block per key tile. Each recomputes the probabilities from lse, so no
// atomics are needed and the result is deterministic.
func (b *Backend) AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, segmentStarts kernels.Tensor) {
	d, err := kernels.CheckAttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, segmentStarts)
	if err != nil {
		panic(err)
	}
	build := attentionBuild("AttentionBackward", d.HS)
	if d.B == 0 || d.T == 0 || d.HS == 0 {
		return
	}
	if d.NH == 0 {
		// No query reads the keys, so their gradients are zero.
		b.Zero(dk)
		b.Zero(dv)
		return
	}
	rows := d.B * d.NH * d.T
	rowDot := b.scratchBytes(scratchRowDot, 4*rows)
	if rowDot == 0 {
		return
	}
	dqPtr, dkPtr, dvPtr, dOutPtr := b.ptr(dq), b.ptr(dk), b.ptr(dv), b.ptr(dOut)
	qPtr, kPtr, vPtr, outPtr := b.ptr(q), b.ptr(k), b.ptr(v), b.ptr(out)
	lsePtr, segPtr := b.ptr(lse), b.ptr(segmentStarts)
	batch, t, nh, nkv, hs := int32(d.B), int32(d.T), int32(d.NH), int32(d.NKV), int32(d.HS)
	scale := attentionScale(d.HS)

	const rowsPerBlock = 8 // warps of attention_row_dot's blocks
	b.launch(b.fn.attentionRowDot, [3]uint32{uint32(min(65535, (rows+rowsPerBlock-1)/rowsPerBlock)), 1, 1}, [3]uint32{32 * rowsPerBlock, 1, 1}, 0,
		unsafe.Pointer(&rowDot), unsafe.Pointer(&outPtr), unsafe.Pointer(&dOutPtr),
		unsafe.Pointer(&batch), unsafe.Pointer(&t), unsafe.Pointer(&nh), unsafe.Pointer(&hs))

	tiles := uint32((d.T + attentionTile - 1) / attentionTile)
	b.launch(b.fn.attentionBackwardDQ[build], [3]uint32{tiles, uint32(d.NH), uint32(d.B)}, [3]uint32{attentionThreads, 1, 1},
		attentionDQShared(d.HS),
		unsafe.Pointer(&dqPtr), unsafe.Pointer(&dOutPtr), unsafe.Pointer(&qPtr), unsafe.Pointer(&kPtr),
		unsafe.Pointer(&vPtr), unsafe.Pointer(&lsePtr), unsafe.Pointer(&rowDot), unsafe.Pointer(&segPtr),
		unsafe.Pointer(&t), unsafe.Pointer(&nh), unsafe.Pointer(&nkv), unsafe.Pointer(&hs), unsafe.Pointer(&scale),
		unsafe.Pointer(&b.errFlag))
	b.launch(b.fn.attentionBackwardDKDV[build], [3]uint32{tiles, uint32(d.NKV), uint32(d.B)}, [3]uint32{attentionThreads, 1, 1},
		attentionDKDVShared(d.HS),
		unsafe.Pointer(&dkPtr), unsafe.Pointer(&dvPtr), unsafe.Pointer(&dOutPtr), unsafe.Pointer(&qPtr),
		unsafe.Pointer(&kPtr), unsafe.Pointer(&vPtr), unsafe.Pointer(&lsePtr), unsafe.Pointer(&rowDot),
		unsafe.Pointer(&segPtr), unsafe.Pointer(&t), unsafe.Pointer(&nh), unsafe.Pointer(&nkv), unsafe.Pointer(&hs),
		unsafe.Pointer(&scale), unsafe.Pointer(&b.errFlag))
}
