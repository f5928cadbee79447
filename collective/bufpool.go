package collective

import (
	"math/bits"
	"sync"
)

// dirtyPool is the mem.BufferPool of the transports: one free list per power-of-two
// capacity. It differs from gRPC's default pool in two ways that matter at loopback
// rates on small machines:
//   - recycled buffers are not zeroed: every byte handed out is overwritten (by the
//     socket read or the frame encoder) before it is read;
//   - the free lists survive garbage collection, unlike a sync.Pool, so steady-state
//     traffic reuses resident memory instead of faulting in fresh pages, which a VM
//     may fill at well under 1 GiB/s.
type dirtyPool struct {
	classes [maxPoolClass + 1]freeList
}

type freeList struct {
	mu   sync.Mutex
	bufs []*[]byte // guarded by mu; at most maxPoolBytes / class size entries
}

const (
	minPoolClass = 8  // 256 B
	maxPoolClass = 26 // 64 MiB; larger requests are allocated and dropped after use
	// maxPoolBytes bounds the idle memory one size class keeps.
	maxPoolBytes = 64 << 20
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
	l := &p.classes[class]
	l.mu.Lock()
	if n := len(l.bufs); n > 0 {
		bp := l.bufs[n-1]
		l.bufs[n-1] = nil
		l.bufs = l.bufs[:n-1]
		l.mu.Unlock()
		*bp = (*bp)[:length]
		return bp
	}
	l.mu.Unlock()
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
	l := &p.classes[class]
	l.mu.Lock()
	if len(l.bufs) < max(1, maxPoolBytes>>class) {
		l.bufs = append(l.bufs, bp)
	}
	l.mu.Unlock()
}
