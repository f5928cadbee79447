package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// rowThreads returns the threads of a block that works on one row of c
// elements: whole warps, at most 1024.
func rowThreads(c int) uint32 {
	return uint32(min(1024, max(32, (c+31)/32*32)))
}

// RMSNormForward normalizes each row of x, one block per row.
func (b *Backend) RMSNormForward(out, rstd, x, weight kernels.Tensor, eps float32) {
	d, err := kernels.CheckRMSNormForward(out, rstd, x, weight, eps)
	if err != nil {
		panic(err)
	}
	if d.N == 0 {
		return
	}
	outPtr, rstdPtr, xPtr, wPtr := b.ptr(out), b.ptr(rstd), b.ptr(x), b.ptr(weight)
	n, c := int32(d.N), int32(d.C)
	b.launch(b.fn.rmsNormForward, [3]uint32{uint32(d.N), 1, 1}, [3]uint32{min(256, rowThreads(d.C)), 1, 1}, 0,
		unsafe.Pointer(&outPtr), unsafe.Pointer(&rstdPtr), unsafe.Pointer(&xPtr), unsafe.Pointer(&wPtr),
		unsafe.Pointer(&n), unsafe.Pointer(&c), unsafe.Pointer(&eps))
}

// rmsNormSliceRows is the number of rows each partial sum of dWeight covers.
const rmsNormSliceRows = 256

// RMSNormBackward computes dx and accumulates dWeight. dWeight comes first,
// because dx may overwrite dOut. Its sums over rows are split into slices of
// rmsNormSliceRows rows whose float64 partial sums are then added in slice
// order, so the result is deterministic.
func (b *Backend) RMSNormBackward(dx, dWeight, dOut, x, weight, rstd kernels.Tensor) {
	d, err := kernels.CheckRMSNormBackward(dx, dWeight, dOut, x, weight, rstd)
	if err != nil {
		panic(err)
	}
	if d.N == 0 || d.C == 0 {
		return
	}
	dxPtr, dOutPtr, xPtr, wPtr, rstdPtr := b.ptr(dx), b.ptr(dOut), b.ptr(x), b.ptr(weight), b.ptr(rstd)
	n, c := int32(d.N), int32(d.C)
	if !dWeight.IsAbsent() {
		slices := (d.N + rmsNormSliceRows - 1) / rmsNormSliceRows
		partials := b.scratchBytes(scratchNormPartials, 8*slices*d.C)
		if partials == 0 {
			return
		}
		sliceRows := int32(rmsNormSliceRows)
		b.launch(b.fn.rmsNormDWeightPartial, [3]uint32{uint32((d.C + 31) / 32), uint32(slices), 1}, [3]uint32{32, 8, 1}, 0,
			unsafe.Pointer(&partials), unsafe.Pointer(&dOutPtr), unsafe.Pointer(&xPtr), unsafe.Pointer(&rstdPtr),
			unsafe.Pointer(&n), unsafe.Pointer(&c), unsafe.Pointer(&sliceRows))
		dwPtr := b.ptr(dWeight)
		sliceCount := int32(slices)
		b.launch(b.fn.rmsNormDWeightFinish, [3]uint32{uint32((d.C + 255) / 256), 1, 1}, [3]uint32{256, 1, 1}, 0,
			unsafe.Pointer(&dwPtr), unsafe.Pointer(&partials), unsafe.Pointer(&sliceCount), unsafe.Pointer(&c))
	}
	b.launch(b.fn.rmsNormBackwardDX, [3]uint32{uint32(d.N), 1, 1}, [3]uint32{min(256, rowThreads(d.C)), 1, 1}, 0,
		unsafe.Pointer(&dxPtr), unsafe.Pointer(&dOutPtr), unsafe.Pointer(&xPtr), unsafe.Pointer(&wPtr),
		unsafe.Pointer(&rstdPtr), unsafe.Pointer(&n), unsafe.Pointer(&c))
}

// ropeKey identifies a table of inverse frequencies.
type ropeKey struct {
	theta float64
	half  int
}

// RoPEForward rotates x by the angles of positions.
func (b *Backend) RoPEForward(out, x, positions kernels.Tensor, theta float64) {
	b.rope("RoPEForward", out, x, positions, theta, 1)
}

// RoPEBackward rotates dOut by the opposite angles.
func (b *Backend) RoPEBackward(dx, dOut, positions kernels.Tensor, theta float64) {
	b.rope("RoPEBackward", dx, dOut, positions, theta, -1)
}

func (b *Backend) rope(op string, out, x, positions kernels.Tensor, theta float64, sinSign float32) {
	d, err := kernels.CheckRoPE(op, out, x, positions, theta)
	if err != nil {
		panic(err)
	}
	tokens := d.B * d.T
	half := d.HS / 2
	if tokens == 0 || d.Heads == 0 || half == 0 {
		return
	}
	invFreq := b.ropeInverseFrequencies(theta, half)
	if invFreq == 0 {
		return
	}
	outPtr, xPtr, posPtr := b.ptr(out), b.ptr(x), b.ptr(positions)
	tokenCount := int64(tokens)
	heads, hs := int32(d.Heads), int32(d.HS)
	b.launch(b.fn.rope, elementGrid(tokens*half, elementThreads), [3]uint32{elementThreads, 1, 1}, 0,
		unsafe.Pointer(&outPtr), unsafe.Pointer(&xPtr), unsafe.Pointer(&posPtr), unsafe.Pointer(&invFreq),
		unsafe.Pointer(&tokenCount), unsafe.Pointer(&heads), unsafe.Pointer(&hs), unsafe.Pointer(&sinSign),
		unsafe.Pointer(&b.errFlag))
}

// ropeInverseFrequencies returns a device table of 1/theta^(2i/HS) for
// i < half, computed as kernels/cpu does in float32 and uploaded once per
// theta and head size. It returns 0 after a failed call.
func (b *Backend) ropeInverseFrequencies(theta float64, half int) cudalib.DevicePtr {
	key := ropeKey{theta: theta, half: half}
	if p, ok := b.invFreqs[key]; ok {
		return p
	}
	table := make([]float32, half)
	for i := range table {
		exponent := float32(2*i) / float32(2*half)
		table[i] = 1 / float32(math.Pow(theta, float64(exponent)))
	}
	p, err := b.ctx.MemAlloc(4 * half)
	if err != nil {
		b.fail(fmt.Errorf("kernels/cuda: allocate the RoPE frequency table: %w", err))
		return 0
	}
	if err := b.upload(p, unsafe.Pointer(&table[0]), 4*half); err != nil {
		b.fail(fmt.Errorf("kernels/cuda: upload the RoPE frequency table: %w", err))
		return 0
	}
	b.invFreqs[key] = p
	return p
}
