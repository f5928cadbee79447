package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

const elementThreads = 256

// Copy copies src into dst, converting between F32 and BF16.
func (b *Backend) Copy(dst, src kernels.Tensor) {
	if dst.IsAbsent() || src.IsAbsent() || dst.Len() != src.Len() {
		panic(fmt.Errorf("kernels: Copy: dst is %s and src is %s, but both must be present with equal element counts", dst, src))
	}
	if kernels.Overlaps(dst, src) {
		panic(fmt.Errorf("kernels: Copy: dst %s at offset %d overlaps src %s at offset %d", dst, dst.Offset(), src, src.Offset()))
	}
	n := dst.Len()
	switch {
	case dst.DType() == src.DType():
		dstPtr, srcPtr := b.ptr(dst), b.ptr(src)
		if n == 0 || b.err != nil {
			return
		}
		b.fail(b.ctx.MemcpyDtoDAsync(dstPtr, srcPtr, n*elementBytes(dst.DType()), b.compute))
	case dst.DType() == kernels.F32 && src.DType() == kernels.BF16:
		b.convert(b.fn.convertBF16ToF32, b.ptr(dst), b.ptr(src), n)
	case dst.DType() == kernels.BF16 && src.DType() == kernels.F32:
		b.convert(b.fn.convertF32ToBF16, b.ptr(dst), b.ptr(src), n)
	default:
		panic(fmt.Errorf("kernels: Copy: cannot convert %s to %s. The conversions are F32 to BF16 and BF16 to F32", src, dst))
	}
}

// convert launches a conversion kernel from n elements at src to dst.
func (b *Backend) convert(f cudalib.Function, dst, src cudalib.DevicePtr, n int) {
	if n == 0 {
		return
	}
	count := int64(n)
	b.launch(f, elementGrid(n, elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
		unsafe.Pointer(&dst), unsafe.Pointer(&src), unsafe.Pointer(&count))
}

// Zero sets every element of t to zero.
func (b *Backend) Zero(t kernels.Tensor) {
	switch t.DType() {
	case kernels.F32, kernels.I32:
		p := b.ptr(t)
		if t.Len() == 0 || b.err != nil {
			return
		}
		b.fail(b.ctx.MemsetD32Async(p, 0, t.Len(), b.compute))
	case kernels.BF16:
		// A BF16 view may start at an odd element, off the 4-byte alignment
		// that MemsetD32 needs.
		p := b.ptr(t)
		if t.Len() == 0 {
			return
		}
		var value uint16
		count := int64(t.Len())
		b.launch(b.fn.fillU16, elementGrid(t.Len(), elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
			unsafe.Pointer(&p), unsafe.Pointer(&value), unsafe.Pointer(&count))
	default:
		panic(fmt.Errorf("kernels: Zero: the tensor is %s", t))
	}
}

// Add computes out = a + c.
func (b *Backend) Add(out, a, c kernels.Tensor) {
	n, err := kernels.CheckAdd(out, a, c)
	if err != nil {
		panic(err)
	}
	if n == 0 {
		return
	}
	outPtr, aPtr, cPtr := b.ptr(out), b.ptr(a), b.ptr(c)
	count := int64(n)
	b.launch(b.fn.add, elementGrid(n, elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
		unsafe.Pointer(&outPtr), unsafe.Pointer(&aPtr), unsafe.Pointer(&cPtr), unsafe.Pointer(&count))
}

// Scale multiplies x by alpha.
func (b *Backend) Scale(x kernels.Tensor, alpha float32) {
	if err := kernels.CheckScale(x); err != nil {
		panic(err)
	}
	b.scaleRaw(b.ptr(x), x.Len(), alpha)
}

func (b *Backend) scaleRaw(p cudalib.DevicePtr, n int, alpha float32) {
	if n == 0 {
		return
	}
	count := int64(n)
	b.launch(b.fn.scale, elementGrid(n, elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
		unsafe.Pointer(&p), unsafe.Pointer(&alpha), unsafe.Pointer(&count))
}

// SwiGLUForward computes out = silu(gate)·up.
func (b *Backend) SwiGLUForward(out, gate, up kernels.Tensor) {
	n, err := kernels.CheckSwiGLUForward(out, gate, up)
	if err != nil {
		panic(err)
	}
	if n == 0 {
		return
	}
	outPtr, gatePtr, upPtr := b.ptr(out), b.ptr(gate), b.ptr(up)
	count := int64(n)
	b.launch(b.fn.swigluForward, elementGrid(n, elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
		unsafe.Pointer(&outPtr), unsafe.Pointer(&gatePtr), unsafe.Pointer(&upPtr), unsafe.Pointer(&count))
}

// SwiGLUBackward computes dGate and dUp.
func (b *Backend) SwiGLUBackward(dGate, dUp, dOut, gate, up kernels.Tensor) {
	n, err := kernels.CheckSwiGLUBackward(dGate, dUp, dOut, gate, up)
	if err != nil {
		panic(err)
	}
	if n == 0 {
		return
	}
	dGatePtr, dUpPtr, dOutPtr := b.ptr(dGate), b.ptr(dUp), b.ptr(dOut)
	gatePtr, upPtr := b.ptr(gate), b.ptr(up)
	count := int64(n)
	b.launch(b.fn.swigluBackward, elementGrid(n, elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
		unsafe.Pointer(&dGatePtr), unsafe.Pointer(&dUpPtr), unsafe.Pointer(&dOutPtr),
		unsafe.Pointer(&gatePtr), unsafe.Pointer(&upPtr), unsafe.Pointer(&count))
}

// AdamW updates param, m and v with the arithmetic of kernels/cpu: the
// scalars are computed here in float64 and rounded to float32.
func (b *Backend) AdamW(param, grad, m, v kernels.Tensor, step kernels.AdamWStep) {
	n, err := kernels.CheckAdamW(param, grad, m, v, step)
	if err != nil {
		panic(err)
	}
	if n == 0 {
		return
	}
	bias1 := 1 - math.Pow(step.Beta1, float64(step.Step))
	bias2 := 1 - math.Pow(step.Beta2, float64(step.Step))
	decay := float32(1 - step.LR*step.WeightDecay)
	weight1 := float32(1 - step.Beta1)
	beta2 := float32(step.Beta2)
	weight2 := float32(1 - step.Beta2)
	stepSize := float32(-step.LR / bias1)
	bias2Sqrt := float32(math.Sqrt(bias2))
	eps := float32(step.Eps)
	var applyDecay int32
	if step.WeightDecay != 0 {
		applyDecay = 1
	}
	pPtr, gPtr, mPtr, vPtr := b.ptr(param), b.ptr(grad), b.ptr(m), b.ptr(v)
	count := int64(n)
	b.launch(b.fn.adamw, elementGrid(n, elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
		unsafe.Pointer(&pPtr), unsafe.Pointer(&gPtr), unsafe.Pointer(&mPtr), unsafe.Pointer(&vPtr),
		unsafe.Pointer(&decay), unsafe.Pointer(&weight1), unsafe.Pointer(&beta2), unsafe.Pointer(&weight2),
		unsafe.Pointer(&stepSize), unsafe.Pointer(&bias2Sqrt), unsafe.Pointer(&eps),
		unsafe.Pointer(&applyDecay), unsafe.Pointer(&count))
}

// sumSquaresBlocks bounds the partial sums per tensor of SumSquares.
const sumSquaresBlocks = 1024

// SumSquares returns the float64 sum of squares of the tensors. Each tensor's
// blocks write float64 partial sums, which are added here in a fixed order.
// It returns NaN when a device call fails, and Sync then returns the error.
func (b *Backend) SumSquares(xs []kernels.Tensor) float64 {
	if err := kernels.CheckSumSquares(xs); err != nil {
		panic(err)
	}
	blocks := make([]int, len(xs))
	total := 0
	for i, x := range xs {
		if x.Len() > 0 {
			blocks[i] = min(sumSquaresBlocks, (x.Len()+elementThreads*4-1)/(elementThreads*4))
		}
		total += blocks[i]
	}
	if total == 0 {
		return 0
	}

	partials := b.scratchBytes(scratchSumSquares, 8*total)
	if partials == 0 {
		return math.NaN()
	}
	at := partials
	for i, x := range xs {
		if blocks[i] == 0 {
			continue
		}
		out, xPtr := at, b.ptr(x)
		count := int64(x.Len())
		b.launch(b.fn.sumSquares, [3]uint32{uint32(blocks[i]), 1, 1}, [3]uint32{elementThreads, 1, 1}, 0,
			unsafe.Pointer(&out), unsafe.Pointer(&xPtr), unsafe.Pointer(&count))
		at += cudalib.DevicePtr(8 * blocks[i])
	}
	if b.err != nil {
		return math.NaN()
	}

	host := make([]float64, total)
	if err := b.ctx.MemcpyDtoH(unsafe.Pointer(&host[0]), partials, 8*total); err != nil {
		b.fail(fmt.Errorf("kernels/cuda: SumSquares: %w", err))
		return math.NaN()
	}
	var sum float64
	for _, p := range host {
		sum += p
	}
	return sum
}

// EmbeddingForward gathers rows of table.
func (b *Backend) EmbeddingForward(out, table, ids kernels.Tensor) {
	d, err := kernels.CheckEmbeddingForward(out, table, ids)
	if err != nil {
		panic(err)
	}
	f := b.fn.embeddingForwardF32
	if table.DType() == kernels.BF16 {
		f = b.fn.embeddingForwardBF16
	}
	b.embedding(f, b.ptr(out), b.ptr(table), b.ptr(ids), d)
}

// EmbeddingBackward scatter-adds dOut into dTable.
func (b *Backend) EmbeddingBackward(dTable, dOut, ids kernels.Tensor) {
	d, err := kernels.CheckEmbeddingBackward(dTable, dOut, ids)
	if err != nil {
		panic(err)
	}
	b.embedding(b.fn.embeddingBackward, b.ptr(dTable), b.ptr(dOut), b.ptr(ids), d)
}

// embedding launches one block per id of an embedding kernel, whose first
// two arguments are the written and the read rows.
func (b *Backend) embedding(f cudalib.Function, written, read, ids cudalib.DevicePtr, d kernels.EmbeddingDims) {
	if d.N == 0 || d.C == 0 {
		return
	}
	n, v, c := int32(d.N), int32(d.V), int32(d.C)
	threads := uint32(min(256, (d.C+31)/32*32))
	b.launch(f, [3]uint32{uint32(d.N), 1, 1}, [3]uint32{threads, 1, 1}, 0,
		unsafe.Pointer(&written), unsafe.Pointer(&read), unsafe.Pointer(&ids),
		unsafe.Pointer(&n), unsafe.Pointer(&v), unsafe.Pointer(&c), unsafe.Pointer(&b.errFlag))
}
