package cuda

import (
	"fmt"
	"unsafe"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// buffer is a device allocation of n elements. ptr is 0 for n = 0.
type buffer struct {
	backend *Backend
	ptr     cudalib.DevicePtr
	dtype   kernels.DType
	n       int
	freed   bool
}

func (buf *buffer) Len() int             { return buf.n }
func (buf *buffer) DType() kernels.DType { return buf.dtype }
func (buf *buffer) String() string {
	return fmt.Sprintf("cuda %s buffer of %d elements", buf.dtype, buf.n)
}

// elementBytes returns the size of one element of dtype.
func elementBytes(dtype kernels.DType) int {
	if dtype == kernels.BF16 {
		return 2
	}
	return 4
}

// Alloc returns a zeroed device buffer of n elements.
func (b *Backend) Alloc(dtype kernels.DType, n int) (kernels.Buffer, error) {
	if !dtype.Valid() {
		return nil, fmt.Errorf("kernels/cuda: cannot allocate a buffer of invalid dtype %s", dtype)
	}
	if n < 0 {
		return nil, fmt.Errorf("kernels/cuda: cannot allocate a %s buffer of %d elements: the length must not be negative", dtype, n)
	}
	buf := &buffer{backend: b, dtype: dtype, n: n}
	if n == 0 {
		return buf, nil
	}
	size := bufferBytes(dtype, n)
	ptr, err := b.ctx.MemAlloc(size)
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: allocate a %s buffer of %d elements: %w", dtype, n, err)
	}
	if err := b.ctx.MemsetD32Async(ptr, 0, size/4, b.compute); err != nil {
		b.ctx.MemFree(ptr)
		return nil, fmt.Errorf("kernels/cuda: clear a %s buffer of %d elements: %w", dtype, n, err)
	}
	buf.ptr = ptr
	b.memory().Add(int64(size))
	return buf, nil
}

// Free waits for the queued ops, which may still read the buffer, and
// releases its memory. Using the buffer afterwards panics.
func (b *Backend) Free(kb kernels.Buffer) {
	buf := b.deviceBuffer(kb)
	buf.freed = true
	if buf.ptr == 0 {
		return
	}
	b.fail(b.ctx.StreamSynchronize(b.compute))
	b.fail(b.ctx.MemFree(buf.ptr))
	buf.ptr = 0
	b.memory().Sub(int64(bufferBytes(buf.dtype, buf.n)))
}

func (b *Backend) deviceBuffer(kb kernels.Buffer) *buffer {
	buf, ok := kb.(*buffer)
	if !ok || buf.backend != b {
		panic(fmt.Errorf("kernels/cuda: a %T buffer belongs to another backend", kb))
	}
	if buf.freed {
		panic(fmt.Errorf("kernels/cuda: use of a freed %s buffer of %d elements", buf.dtype, buf.n))
	}
	return buf
}

// ptr returns the device address of t's first element, or 0 for the absent
// tensor.
func (b *Backend) ptr(t kernels.Tensor) cudalib.DevicePtr {
	if t.IsAbsent() {
		return 0
	}
	buf := b.deviceBuffer(t.Buffer())
	return buf.ptr + cudalib.DevicePtr(t.Offset()*elementBytes(buf.dtype))
}

func checkHostLen(op string, hostLen int, t kernels.Tensor, dtype kernels.DType) error {
	if t.IsAbsent() {
		return fmt.Errorf("kernels/cuda: %s: the tensor is absent", op)
	}
	if t.DType() != dtype {
		return fmt.Errorf("kernels/cuda: %s: the tensor is %s, want dtype %s", op, t, dtype)
	}
	if hostLen != t.Len() {
		return fmt.Errorf("kernels/cuda: %s: the host slice has %d elements but the tensor %s has %d", op, hostLen, t, t.Len())
	}
	return nil
}

// copyFromHost copies bytes from src to dst after the queued ops.
func (b *Backend) copyFromHost(op string, dst kernels.Tensor, src unsafe.Pointer, bytes int) error {
	if b.err != nil {
		return b.err
	}
	if bytes == 0 {
		return nil
	}
	if err := b.upload(b.ptr(dst), src, bytes); err != nil {
		return fmt.Errorf("kernels/cuda: %s: %w", op, err)
	}
	return nil
}

// upload copies bytes from host memory to dst after the queued ops, which may
// still read dst, and returns when the copy is done.
func (b *Backend) upload(dst cudalib.DevicePtr, src unsafe.Pointer, bytes int) error {
	return b.ctx.MemcpyHtoD(dst, src, bytes)
}

// copyToHost copies bytes from src after the queued ops.
func (b *Backend) copyToHost(op string, dst unsafe.Pointer, src kernels.Tensor, bytes int) error {
	if b.err != nil {
		return b.err
	}
	if bytes == 0 {
		return nil
	}
	if err := b.ctx.MemcpyDtoH(dst, b.ptr(src), bytes); err != nil {
		return fmt.Errorf("kernels/cuda: %s: %w", op, err)
	}
	return nil
}

// CopyFromHostF32 copies src into dst.
func (b *Backend) CopyFromHostF32(dst kernels.Tensor, src []float32) error {
	if err := checkHostLen("CopyFromHostF32", len(src), dst, kernels.F32); err != nil {
		return err
	}
	return b.copyFromHost("CopyFromHostF32", dst, unsafe.Pointer(unsafe.SliceData(src)), 4*len(src))
}

// CopyFromHostBF16 copies src into dst.
func (b *Backend) CopyFromHostBF16(dst kernels.Tensor, src []uint16) error {
	if err := checkHostLen("CopyFromHostBF16", len(src), dst, kernels.BF16); err != nil {
		return err
	}
	return b.copyFromHost("CopyFromHostBF16", dst, unsafe.Pointer(unsafe.SliceData(src)), 2*len(src))
}

// CopyFromHostI32 copies src into dst.
func (b *Backend) CopyFromHostI32(dst kernels.Tensor, src []int32) error {
	if err := checkHostLen("CopyFromHostI32", len(src), dst, kernels.I32); err != nil {
		return err
	}
	return b.copyFromHost("CopyFromHostI32", dst, unsafe.Pointer(unsafe.SliceData(src)), 4*len(src))
}

// CopyToHostF32 copies src into dst.
func (b *Backend) CopyToHostF32(dst []float32, src kernels.Tensor) error {
	if err := checkHostLen("CopyToHostF32", len(dst), src, kernels.F32); err != nil {
		return err
	}
	return b.copyToHost("CopyToHostF32", unsafe.Pointer(unsafe.SliceData(dst)), src, 4*len(dst))
}

// CopyToHostBF16 copies src into dst.
func (b *Backend) CopyToHostBF16(dst []uint16, src kernels.Tensor) error {
	if err := checkHostLen("CopyToHostBF16", len(dst), src, kernels.BF16); err != nil {
		return err
	}
	return b.copyToHost("CopyToHostBF16", unsafe.Pointer(unsafe.SliceData(dst)), src, 2*len(dst))
}

// CopyToHostI32 copies src into dst.
func (b *Backend) CopyToHostI32(dst []int32, src kernels.Tensor) error {
	if err := checkHostLen("CopyToHostI32", len(dst), src, kernels.I32); err != nil {
		return err
	}
	return b.copyToHost("CopyToHostI32", unsafe.Pointer(unsafe.SliceData(dst)), src, 4*len(dst))
}

// scratchSlot names a scratch buffer of the backend.
type scratchSlot int

const (
	scratchOperand      scratchSlot = iota // Matmul's converted operand
	scratchRowDot                          // AttentionBackward's rowsum(dO ∘ O)
	scratchNormPartials                    // RMSNormBackward's dWeight partial sums
	scratchSumSquares                      // SumSquares' partial sums
	scratchCERows                          // LinearCrossEntropy's row indices
	scratchCEHidden                        // a chunk's rows of hidden
	scratchCEHiddenBF16                    // the same rounded to bf16
	scratchCELogits                        // a chunk's logits, then their gradients
	scratchCELogitsBF16                    // the gradients rounded to bf16
	scratchCEDHidden                       // a chunk's rows of dHidden
	scratchCELosses                        // the loss of every row, float64
)

// deviceScratch is a device buffer that grows to the largest request.
type deviceScratch struct {
	ptr   cudalib.DevicePtr
	bytes int
}

// scratchBytes returns slot's buffer of at least bytes bytes. Its contents
// are left from earlier ops. Growing it waits for the queued ops, which may
// use the old buffer. On a failed allocation it records the error and
// returns 0, and the op returns without running.
func (b *Backend) scratchBytes(slot scratchSlot, bytes int) cudalib.DevicePtr {
	s := b.scratch[slot]
	if s == nil {
		s = &deviceScratch{}
		b.scratch[slot] = s
	}
	if s.bytes >= bytes {
		return s.ptr
	}
	if s.ptr != 0 {
		b.fail(b.ctx.StreamSynchronize(b.compute))
		b.fail(b.ctx.MemFree(s.ptr))
		b.memory().Sub(int64(s.bytes))
		s.ptr, s.bytes = 0, 0
	}
	size := (bytes + 255) &^ 255
	ptr, err := b.ctx.MemAlloc(size)
	if err != nil {
		b.fail(fmt.Errorf("kernels/cuda: allocate %d bytes of scratch memory: %w", size, err))
		return 0
	}
	s.ptr, s.bytes = ptr, size
	b.memory().Add(int64(size))
	return ptr
}
