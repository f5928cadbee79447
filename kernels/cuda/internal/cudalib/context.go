//go:build linux

package cudalib

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Context is one CUDA device opened for computing: its primary context retained,
// one compute stream and a cuBLAS handle bound to that stream.
//
// The thread rule: a CUDA context is current per OS thread, and Go moves
// goroutines between threads. So every method that calls the driver or cuBLAS
// locks the calling goroutine to its OS thread for the call and makes the context
// current there with cuCtxSetCurrent first. Callers therefore need no
// runtime.LockOSThread, may call from any goroutine, and may use several Contexts
// (devices) in one process. The cost is one more driver call per method.
//
// The methods are safe for concurrent use, except Close, which must not run
// concurrently with any other method. GemmEx calls are serialized, because a
// cuBLAS handle is not safe for concurrent use.
type Context struct {
	libs      *Libs
	d         *driverAPI
	device    Device
	cuDevice  int32
	ctx       uintptr // the primary context; 0 after Close
	stream    Stream  // the compute stream
	blas      uintptr // cublasHandle_t
	blasMu    sync.Mutex
	workspace DevicePtr // cuBLAS workspace; 0 when cuBLAS manages its own
}

// cublasWorkspaceBytes is the cuBLAS workspace of a Context. The cuBLAS API
// reference (cublasSetWorkspace) recommends 32 MiB on Hopper (sm_90) and 4 MiB on
// older architectures, so 32 MiB serves both.
const cublasWorkspaceBytes = 32 << 20

// Open finds and loads the CUDA driver, NVRTC and cuBLAS, and opens the device
// with the given ordinal, counted among the devices CUDA_VISIBLE_DEVICES leaves
// visible. Its errors name the missing library, the missing device or the failed
// call.
func Open(ordinal int) (*Context, error) {
	libs, err := LoadAll()
	if err != nil {
		return nil, err
	}
	return libs.Open(ordinal)
}

// Open opens the device with the given ordinal. See the package function Open.
func (l *Libs) Open(ordinal int) (c *Context, err error) {
	if err := l.initDriver(); err != nil {
		return nil, err
	}
	d := l.driver
	var count int32
	if err := d.check("cuDeviceGetCount", d.cuDeviceGetCount(&count), ""); err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= int(count) {
		return nil, fmt.Errorf("open CUDA device %d: not found, the driver reports %d devices (CUDA_VISIBLE_DEVICES=%q)", ordinal, count, os.Getenv("CUDA_VISIBLE_DEVICES"))
	}
	c = &Context{libs: l, d: d}
	if err := d.check("cuDeviceGet", d.cuDeviceGet(&c.cuDevice, int32(ordinal)), "ordinal %d", ordinal); err != nil {
		return nil, err
	}
	if c.device, err = l.describe(ordinal, c.cuDevice); err != nil {
		return nil, err
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.check("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&c.ctx, c.cuDevice), "device %d", ordinal); err != nil {
		return nil, err
	}
	// From here on, a failure releases what was set up so far.
	defer func() {
		if err != nil {
			err = errors.Join(err, c.release())
			c = nil
		}
	}()
	if err := d.check("cuCtxSetCurrent", d.cuCtxSetCurrent(c.ctx), "device %d", ordinal); err != nil {
		return c, err
	}
	var stream uintptr
	if err := d.check("cuStreamCreate", d.cuStreamCreate(&stream, cuStreamNonBlocking), "device %d", ordinal); err != nil {
		return c, err
	}
	c.stream = Stream(stream)
	if err := c.openCuBLAS(); err != nil {
		return c, fmt.Errorf("open cuBLAS %s on device %d: %w", l.Paths[CuBLASLibrary.Name], ordinal, err)
	}
	return c, nil
}

// describe reads the name, memory and limits of a device.
func (l *Libs) describe(ordinal int, dev int32) (Device, error) {
	d := l.driver
	attribute := func(attr int32, what string) (int, error) {
		var v int32
		err := d.check("cuDeviceGetAttribute", d.cuDeviceGetAttribute(&v, attr, dev), "%s of device %d", what, ordinal)
		return int(v), err
	}

	info := Device{Ordinal: ordinal}
	var err error
	if info.Major, err = attribute(cuDeviceAttributeComputeCapabilityMajor, "compute capability"); err != nil {
		return info, err
	}
	if info.Minor, err = attribute(cuDeviceAttributeComputeCapabilityMinor, "compute capability"); err != nil {
		return info, err
	}
	if info.Multiprocessors, err = attribute(cuDeviceAttributeMultiprocessorCount, "multiprocessor count"); err != nil {
		return info, err
	}
	if info.MaxSharedPerBlockOptin, err = attribute(cuDeviceAttributeMaxSharedPerBlockOptin, "opt-in shared memory per block"); err != nil {
		return info, err
	}

	name := make([]byte, 256)
	if err := d.check("cuDeviceGetName", d.cuDeviceGetName(&name[0], int32(len(name)), dev), "device %d", ordinal); err != nil {
		return info, err
	}
	info.Name = goString(&name[0])
	var total uintptr
	if err := d.check("cuDeviceTotalMem_v2", d.cuDeviceTotalMem(&total, dev), "device %d", ordinal); err != nil {
		return info, err
	}
	info.TotalMemory = int(total)
	return info, nil
}

// Close waits for the compute stream, destroys the cuBLAS handle and the compute
// stream, and releases the primary context. Memory, streams, events and modules
// that the caller created stay allocated until the primary context's last
// release destroys them. A second Close returns nil.
func (c *Context) Close() error {
	if c == nil || c.ctx == 0 {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := c.d.check("cuCtxSetCurrent", c.d.cuCtxSetCurrent(c.ctx), ""); err != nil {
		return errors.Join(err, c.release())
	}
	err := c.d.check("cuStreamSynchronize", c.d.cuStreamSynchronize(uintptr(c.stream)), "compute stream")
	return errors.Join(err, c.release())
}

// release frees what Open set up, in reverse order, on a thread where the context
// is current or about to be released. It clears c.ctx, so later calls fail with
// ErrClosed.
func (c *Context) release() error {
	var errs []error
	if c.blas != 0 {
		errs = append(errs, c.libs.cublas.check("cublasDestroy_v2", c.libs.cublas.cublasDestroy(c.blas), ""))
		c.blas = 0
	}
	if c.workspace != 0 {
		errs = append(errs, c.d.check("cuMemFree_v2", c.d.cuMemFree(uintptr(c.workspace)), "cuBLAS workspace"))
		c.workspace = 0
	}
	if c.stream != 0 {
		errs = append(errs, c.d.check("cuStreamDestroy_v2", c.d.cuStreamDestroy(uintptr(c.stream)), "compute stream"))
		c.stream = 0
	}
	if c.ctx != 0 {
		errs = append(errs, c.d.check("cuDevicePrimaryCtxRelease_v2", c.d.cuDevicePrimaryCtxRelease(c.cuDevice), "device %d", c.device.Ordinal))
		c.ctx = 0
	}
	return errors.Join(errs...)
}

// enter locks the goroutine to its OS thread and makes the context current there.
// Every successful enter must be followed by exit.
func (c *Context) enter() error {
	if c == nil || c.ctx == 0 {
		return ErrClosed
	}
	runtime.LockOSThread()
	if err := c.d.check("cuCtxSetCurrent", c.d.cuCtxSetCurrent(c.ctx), "device %d", c.device.Ordinal); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	return nil
}

func (c *Context) exit() { runtime.UnlockOSThread() }

// Device returns the device's ordinal, compute capability, name, memory and limits.
func (c *Context) Device() Device { return c.device }

// NVRTC returns the NVRTC library loaded with the context.
func (c *Context) NVRTC() *NVRTC { return c.libs.nvrtc }

// Stream returns the compute stream. It does not synchronize with the legacy
// default stream (it is created with CU_STREAM_NON_BLOCKING), so order work on
// other streams against it with events.
func (c *Context) Stream() Stream { return c.stream }

// checkBytes rejects a negative byte count before it reaches C as a huge size_t.
func checkBytes(call string, bytes int) error {
	if bytes < 0 {
		return fmt.Errorf("%s: invalid size %d bytes", call, bytes)
	}
	return nil
}

// MemAlloc allocates bytes of device memory. A size of 0 is invalid, as in CUDA.
func (c *Context) MemAlloc(bytes int) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuMemAlloc_v2: invalid size %d bytes", bytes)
	}
	if err := c.enter(); err != nil {
		return 0, err
	}
	defer c.exit()
	var p uintptr
	if err := c.d.check("cuMemAlloc_v2", c.d.cuMemAlloc(&p, uintptr(bytes)), "%d bytes", bytes); err != nil {
		return 0, err
	}
	return DevicePtr(p), nil
}

// MemFree frees device memory from MemAlloc. Freeing 0 does nothing.
// NOTE: the CUDA documentation does not promise that cuMemFree waits for queued
// work that still reads or writes p, so free p only after that work has finished.
func (c *Context) MemFree(p DevicePtr) error {
	if p == 0 {
		return nil
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuMemFree_v2", c.d.cuMemFree(uintptr(p)), "%#x", uintptr(p))
}

// MemGetInfo returns the free and total device memory in bytes.
func (c *Context) MemGetInfo() (free, total int, err error) {
	if err := c.enter(); err != nil {
		return 0, 0, err
	}
	defer c.exit()
	var f, t uintptr
	if err := c.d.check("cuMemGetInfo_v2", c.d.cuMemGetInfo(&f, &t), ""); err != nil {
		return 0, 0, err
	}
	return int(f), int(t), nil
}

// MemsetD32Async sets count 32-bit words at p to value, in stream order on s.
func (c *Context) MemsetD32Async(p DevicePtr, value uint32, count int, s Stream) error {
	if count < 0 {
		return fmt.Errorf("cuMemsetD32Async: invalid count %d", count)
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuMemsetD32Async", c.d.cuMemsetD32Async(uintptr(p), value, uintptr(count), uintptr(s)), "%d words at %#x", count, uintptr(p))
}

// MemcpyHtoD copies bytes from host memory at src to dst after the work queued on
// the compute stream, and returns when the copy has finished, so src may be reused
// at once. src may be Go memory or pinned memory from MemHostAlloc.
func (c *Context) MemcpyHtoD(dst DevicePtr, src unsafe.Pointer, bytes int) error {
	if err := c.MemcpyHtoDAsync(dst, src, bytes, c.stream); err != nil {
		return err
	}
	return c.StreamSynchronize(c.stream)
}

// MemcpyDtoH waits for the work queued on the compute stream, then copies bytes
// from src to host memory at dst and returns when the copy has finished.
func (c *Context) MemcpyDtoH(dst unsafe.Pointer, src DevicePtr, bytes int) error {
	if err := c.MemcpyDtoHAsync(dst, src, bytes, c.stream); err != nil {
		return err
	}
	return c.StreamSynchronize(c.stream)
}

// MemcpyHtoDAsync queues a copy of bytes from host memory at src to dst on s.
// When src is pinned memory from MemHostAlloc, the copy runs asynchronously, and
// src must stay unchanged until s reaches it. Other host memory, Go memory
// included, is staged by the driver before the call returns.
func (c *Context) MemcpyHtoDAsync(dst DevicePtr, src unsafe.Pointer, bytes int, s Stream) error {
	if err := checkBytes("cuMemcpyHtoDAsync_v2", bytes); err != nil || bytes == 0 {
		return err
	}
	if src == nil {
		return errors.New("cuMemcpyHtoDAsync_v2: nil host pointer")
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuMemcpyHtoDAsync_v2", c.d.cuMemcpyHtoDAsync(uintptr(dst), src, uintptr(bytes), uintptr(s)), "%d bytes to %#x", bytes, uintptr(dst))
}

// MemcpyDtoHAsync queues a copy of bytes from src to host memory at dst on s.
// For the copy to run asynchronously, dst must be pinned memory from
// MemHostAlloc, and the caller must not read it before s reaches the copy (see
// EventRecord and EventSynchronize). Into other host memory, Go memory included,
// the driver copies before the call returns.
func (c *Context) MemcpyDtoHAsync(dst unsafe.Pointer, src DevicePtr, bytes int, s Stream) error {
	if err := checkBytes("cuMemcpyDtoHAsync_v2", bytes); err != nil || bytes == 0 {
		return err
	}
	if dst == nil {
		return errors.New("cuMemcpyDtoHAsync_v2: nil host pointer")
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuMemcpyDtoHAsync_v2", c.d.cuMemcpyDtoHAsync(dst, uintptr(src), uintptr(bytes), uintptr(s)), "%d bytes from %#x", bytes, uintptr(src))
}

// MemcpyDtoDAsync queues a copy of bytes from src to dst on s.
func (c *Context) MemcpyDtoDAsync(dst, src DevicePtr, bytes int, s Stream) error {
	if err := checkBytes("cuMemcpyDtoDAsync_v2", bytes); err != nil || bytes == 0 {
		return err
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuMemcpyDtoDAsync_v2", c.d.cuMemcpyDtoDAsync(uintptr(dst), uintptr(src), uintptr(bytes), uintptr(s)), "%d bytes from %#x to %#x", bytes, uintptr(src), uintptr(dst))
}

// MemHostAlloc allocates bytes of page-locked (pinned) host memory, which
// asynchronous copies need. It is C memory: the Go garbage collector neither
// moves nor frees it, so free it with MemHostFree.
func (c *Context) MemHostAlloc(bytes int) (unsafe.Pointer, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("cuMemHostAlloc: invalid size %d bytes", bytes)
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()
	var p unsafe.Pointer
	if err := c.d.check("cuMemHostAlloc", c.d.cuMemHostAlloc(&p, uintptr(bytes), cuMemHostAllocPortable), "%d bytes", bytes); err != nil {
		return nil, err
	}
	return p, nil
}

// MemHostFree frees pinned memory from MemHostAlloc. Freeing nil does nothing.
func (c *Context) MemHostFree(p unsafe.Pointer) error {
	if p == nil {
		return nil
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuMemFreeHost", c.d.cuMemFreeHost(p), "%p", p)
}

// NewStream creates a stream that does not synchronize with the legacy default
// stream (CU_STREAM_NON_BLOCKING), such as one for copies that overlap compute.
func (c *Context) NewStream() (Stream, error) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	defer c.exit()
	var s uintptr
	if err := c.d.check("cuStreamCreate", c.d.cuStreamCreate(&s, cuStreamNonBlocking), ""); err != nil {
		return 0, err
	}
	return Stream(s), nil
}

// DestroyStream destroys a stream from NewStream. Work queued on it still runs.
func (c *Context) DestroyStream(s Stream) error {
	if s == 0 || s == c.stream {
		return fmt.Errorf("cuStreamDestroy_v2: stream %#x is the legacy default or the compute stream, which the context owns", uintptr(s))
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuStreamDestroy_v2", c.d.cuStreamDestroy(uintptr(s)), "")
}

// StreamSynchronize waits until the work queued on s has finished. An error from
// an earlier asynchronous launch or copy on s surfaces here.
func (c *Context) StreamSynchronize(s Stream) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuStreamSynchronize", c.d.cuStreamSynchronize(uintptr(s)), "")
}

// NewEvent creates an event for ordering streams and waiting on the host. It
// records no time (CU_EVENT_DISABLE_TIMING), which makes it cheaper; use
// NewTimingEvent for EventElapsed.
func (c *Context) NewEvent() (Event, error) { return c.newEvent(cuEventDisableTiming) }

// NewTimingEvent creates an event that records when the stream reaches it, for
// EventElapsed.
func (c *Context) NewTimingEvent() (Event, error) { return c.newEvent(0) }

func (c *Context) newEvent(flags uint32) (Event, error) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	defer c.exit()
	var e uintptr
	if err := c.d.check("cuEventCreate", c.d.cuEventCreate(&e, flags), "flags %#x", flags); err != nil {
		return 0, err
	}
	return Event(e), nil
}

// EventRecord records e at the current end of s.
func (c *Context) EventRecord(e Event, s Stream) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuEventRecord", c.d.cuEventRecord(uintptr(e), uintptr(s)), "")
}

// StreamWaitEvent makes work queued on s after this call wait until e's last
// record has completed. The host does not wait.
func (c *Context) StreamWaitEvent(s Stream, e Event) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuStreamWaitEvent", c.d.cuStreamWaitEvent(uintptr(s), uintptr(e), 0), "")
}

// EventSynchronize waits on the host until e's last record has completed.
func (c *Context) EventSynchronize(e Event) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuEventSynchronize", c.d.cuEventSynchronize(uintptr(e)), "")
}

// EventElapsed returns the time between two completed records of events from
// NewTimingEvent, with the driver's resolution of about 0.5 microseconds.
func (c *Context) EventElapsed(start, end Event) (time.Duration, error) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	defer c.exit()
	var ms float32
	if err := c.d.check("cuEventElapsedTime", c.d.cuEventElapsedTime(&ms, uintptr(start), uintptr(end)), ""); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), nil
}

// DestroyEvent destroys an event. A record still pending completes first.
func (c *Context) DestroyEvent(e Event) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	return c.d.check("cuEventDestroy_v2", c.d.cuEventDestroy(uintptr(e)), "")
}
