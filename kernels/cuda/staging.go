package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/ringtune/ringtune/kernels"
)

// AllocPinnedF32 returns n float32 elements of page-locked host memory.
func (b *Backend) AllocPinnedF32(n int) ([]float32, error) {
	if n < 0 {
		return nil, fmt.Errorf("kernels/cuda: cannot allocate %d pinned float32 elements: the length must not be negative", n)
	}
	if n == 0 {
		return []float32{}, nil
	}
	p, err := b.ctx.MemHostAlloc(4 * n)
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: allocate %d bytes of pinned host memory: %w", 4*n, err)
	}
	return unsafe.Slice((*float32)(p), n), nil
}

// FreePinnedF32 releases a buffer returned by AllocPinnedF32.
func (b *Backend) FreePinnedF32(buf []float32) {
	if len(buf) == 0 {
		return
	}
	b.fail(b.ctx.MemHostFree(unsafe.Pointer(unsafe.SliceData(buf))))
}

// CopyToHostAsyncF32 queues the copy of src into the pinned buffer dst on the
// copy stream, after an event that marks the ops queued so far on the
// compute stream, so the compute stream goes on while the copy runs. wait
// blocks on a second event recorded after the copy. It touches only the
// context, whose methods are safe for concurrent use, so another goroutine
// may call it while ops are being issued.
func (b *Backend) CopyToHostAsyncF32(dst []float32, src kernels.Tensor) (wait func() error, err error) {
	if err := checkHostLen("CopyToHostAsyncF32", len(dst), src, kernels.F32); err != nil {
		return nil, err
	}
	if b.err != nil {
		return nil, b.err
	}
	srcPtr := b.ptr(src)
	if len(dst) == 0 {
		return func() error { return nil }, nil
	}
	ready, err := b.ctx.NewEvent()
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: CopyToHostAsyncF32: %w", err)
	}
	done, err := b.ctx.NewEvent()
	if err != nil {
		b.ctx.DestroyEvent(ready)
		return nil, fmt.Errorf("kernels/cuda: CopyToHostAsyncF32: %w", err)
	}
	release := func() error {
		return errors.Join(b.ctx.DestroyEvent(ready), b.ctx.DestroyEvent(done))
	}
	if err := errors.Join(
		b.ctx.EventRecord(ready, b.compute),
		b.ctx.StreamWaitEvent(b.copy, ready),
		b.ctx.MemcpyDtoHAsync(unsafe.Pointer(unsafe.SliceData(dst)), srcPtr, 4*len(dst), b.copy),
		b.ctx.EventRecord(done, b.copy),
	); err != nil {
		// The copy may be queued, so wait for the copy stream before the
		// events go.
		syncErr := b.ctx.StreamSynchronize(b.copy)
		return nil, fmt.Errorf("kernels/cuda: CopyToHostAsyncF32: %w", errors.Join(err, syncErr, release()))
	}
	return func() error {
		if err := b.ctx.EventSynchronize(done); err != nil {
			release()
			return fmt.Errorf("kernels/cuda: CopyToHostAsyncF32: wait for the copy: %w", err)
		}
		return release()
	}, nil
}
