package collective

import (
	"math/bits"
	"sync"
)

// dirtyPool is a mem.BufferPool with one sync.Pool per power-of-two capacity. Unlike
// gRPC's default pool it does not zero recycled buffers: every byte handed out here
// is overwritten (by the socket read or the frame encoder) before it is read, and
// zeroing cost several percent of a core at loopback rates.
type dirtyPool struct {
	classes [maxPoolClass + 1]sync.Pool
}

const (
	minPoolClass = 8  // 256 B
	maxPoolClass = 26 // 64 MiB; larger requests are allocated and dropped after use
)

var framePayloadPool = &dirtyPool{}

func poolClass(n int) int {
	if n <= 1<<minPoolClass {
		return minPoolClass
	}
	return bits.Len(uint(n - 1))
}

func (p *dirtyPool) Get(length int) *[]byte {
	class := poolClass(length)
	if class > maxPoolClass {
		b := make([]byte, length)
		return &b
	}
	if bp, ok := p.classes[class].Get().(*[]byte); ok {
		*bp = (*bp)[:length]
		return bp
	}
	b := make([]byte, length, 1<<class)
	return &b
}

func (p *dirtyPool) Put(bp *[]byte) {
	c := cap(*bp)
	if c == 0 || c&(c-1) != 0 {
		return // not one of ours
	}
	class := bits.Len(uint(c)) - 1
	if class < minPoolClass || class > maxPoolClass {
		return
	}
	*bp = (*bp)[:0]
	p.classes[class].Put(bp)
}
