package kernels

import "sync/atomic"

// MemoryStats is implemented by backends that count the memory they allocate.
// Callers find it with a type assertion on a Backend. Each implementation
// documents which allocations it counts beyond the buffers of Alloc. The
// methods are safe to call from any goroutine, also while the backend runs
// ops on another.
type MemoryStats interface {
	// AllocatedBytes returns the bytes of the counted allocations that are
	// live now: every buffer of Alloc that Free has not released.
	AllocatedBytes() int64
	// PeakAllocatedBytes returns the maximum of AllocatedBytes since the
	// backend was created.
	PeakAllocatedBytes() int64
}

// MemoryCounter counts live bytes and their high-water mark, for backends
// that implement MemoryStats. The zero value counts from 0. Its methods are
// safe for concurrent use.
type MemoryCounter struct {
	allocated atomic.Int64
	peak      atomic.Int64
}

// Add counts an allocation of bytes and raises the peak when needed.
func (c *MemoryCounter) Add(bytes int64) {
	now := c.allocated.Add(bytes)
	for {
		peak := c.peak.Load()
		if now <= peak || c.peak.CompareAndSwap(peak, now) {
			return
		}
	}
}

// Sub counts the release of an allocation of bytes.
func (c *MemoryCounter) Sub(bytes int64) { c.allocated.Add(-bytes) }

// AllocatedBytes returns the bytes added and not yet subtracted.
func (c *MemoryCounter) AllocatedBytes() int64 { return c.allocated.Load() }

// PeakAllocatedBytes returns the maximum of AllocatedBytes so far.
func (c *MemoryCounter) PeakAllocatedBytes() int64 { return c.peak.Load() }
