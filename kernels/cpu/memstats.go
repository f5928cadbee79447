package cpu

import "github.com/ringtune/ringtune/kernels"

var _ kernels.MemoryStats = (*Backend)(nil)

// AllocatedBytes returns the bytes of the buffers of Alloc that Free has not
// released: 4 per F32 or I32 element and 2 per BF16 element. It does not count
// the scratch slices of the ops, such as the cross-entropy logits of
// 4·CrossEntropyChunkRows·V bytes, nor memory that the garbage collector has
// not yet reclaimed from freed buffers.
func (b *Backend) AllocatedBytes() int64 { return b.memory.AllocatedBytes() }

// PeakAllocatedBytes returns the maximum of AllocatedBytes since New.
func (b *Backend) PeakAllocatedBytes() int64 { return b.memory.PeakAllocatedBytes() }

// bufferBytes returns the size of buf's elements in bytes.
func bufferBytes(buf *buffer) int64 { return int64(buf.n) * int64(buf.dtype.Size()) }
