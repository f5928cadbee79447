package cuda

import (
	"github.com/ringtune/ringtune/kernels"
)

var _ kernels.MemoryStats = (*Backend)(nil)

// AllocatedBytes returns the bytes of device memory that the backend holds
// now, as it requested them from cuMemAlloc. It counts the buffers of Alloc,
// rounded up to whole 4-byte words, and the scratch buffers of the ops,
// rounded up to 256 bytes, which grow to the largest call and stay until
// Close. It does not count the device error flag (4 bytes), the RoPE
// frequency tables, cuBLAS's workspace, the loaded kernels or the CUDA
// context, so nvidia-smi shows more.
func (b *Backend) AllocatedBytes() int64 { return b.memory().AllocatedBytes() }

// PeakAllocatedBytes returns the maximum of AllocatedBytes since New.
func (b *Backend) PeakAllocatedBytes() int64 { return b.memory().PeakAllocatedBytes() }

// memory returns b's counter of device memory.
func (b *Backend) memory() *kernels.MemoryCounter { return &b.memStats }

// bufferBytes returns the bytes that Alloc requests for n elements of dtype:
// whole 32-bit words, so that MemsetD32 clears every byte.
func bufferBytes(dtype kernels.DType, n int) int {
	words := (n*elementBytes(dtype) + 3) / 4
	return 4 * words
}
