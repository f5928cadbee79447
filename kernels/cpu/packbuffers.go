package cpu

import (
	"sync"
	"unsafe"
)

// packBuffers holds one goroutine's packing buffers. The buffers grow to the
// largest size requested and are reused through packBufferPool, so steady-state
// calls do not allocate.
type packBuffers struct {
	a, b, tile []float32
}

// freeList is a pool whose items survive garbage collection, unlike sync.Pool's,
// which the collector empties: a regrown packing buffer after each GC cycle would
// cost the training step an allocation of megabytes. It holds at most as many
// items as goroutines ever used it at once.
type freeList[T any] struct {
	mu    sync.Mutex
	items []*T
}

func (l *freeList[T]) get() *T {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.items); n > 0 {
		item := l.items[n-1]
		l.items = l.items[:n-1]
		return item
	}
	return new(T)
}

func (l *freeList[T]) put(item *T) {
	l.mu.Lock()
	l.items = append(l.items, item)
	l.mu.Unlock()
}

var packBufferPool freeList[packBuffers]

// reserve makes the buffers at least aSize, bSize and tileSize floats long.
func (pb *packBuffers) reserve(aSize, bSize, tileSize int) {
	pb.a = growAligned(pb.a, aSize)
	pb.b = growAligned(pb.b, bSize)
	pb.tile = growAligned(pb.tile, tileSize)
}

// packAlignment is the alignment of packed buffers in bytes, so that the vector
// loads of a micro-panel never straddle two cache lines.
const packAlignment = 64

// growAligned returns buf if it holds at least n floats, or else a new slice of
// n floats whose first element is packAlignment-aligned.
func growAligned(buf []float32, n int) []float32 {
	if len(buf) >= n {
		return buf
	}
	const pad = packAlignment / 4
	raw := make([]float32, n+pad)
	offset := 0
	if misalign := uintptr(unsafe.Pointer(&raw[0])) % packAlignment; misalign != 0 {
		offset = int(packAlignment-misalign) / 4
	}
	return raw[offset : offset+n]
}
