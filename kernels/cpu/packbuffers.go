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

var packBufferPool = sync.Pool{New: func() any { return new(packBuffers) }}

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
