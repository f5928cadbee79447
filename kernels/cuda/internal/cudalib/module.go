//go:build linux

package cudalib

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"unsafe"
)

// Module is a cubin, fatbin or PTX image loaded into a Context.
type Module struct {
	c      *Context
	handle uintptr // CUmodule; 0 after Unload
}

// jitLogBytes is the size of the buffer for the driver's PTX compile errors.
const jitLogBytes = 16 << 10

// LoadModule loads a cubin, fatbin or PTX image, such as the output of
// NVRTC.Compile, into the context. The driver compiles PTX for the device at this
// point, and a PTX compile error carries the driver's log. A cubin for another
// architecture fails with CUDA_ERROR_NO_BINARY_FOR_GPU.
func (c *Context) LoadModule(image []byte) (*Module, error) {
	kind := DetectImage(image)
	switch kind {
	case ImageUnknown:
		return nil, fmt.Errorf("cuModuleLoadDataEx: the %d-byte image is not a cubin, fatbin or PTX", len(image))
	case ImagePTX:
		// The driver reads PTX up to a NUL byte.
		if image[len(image)-1] != 0 {
			image = append(image[:len(image):len(image)], 0)
		}
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()

	errorLog := make([]byte, jitLogBytes)
	// The option values are void*; the size option carries an integer in place
	// of a pointer, so the array is built from uintptr and errorLog is kept alive
	// by hand.
	options := []int32{cuJitErrorLogBuffer, cuJitErrorLogBufferSizeBytes}
	values := []uintptr{uintptr(unsafe.Pointer(&errorLog[0])), uintptr(len(errorLog))}
	var handle uintptr
	rc := c.d.cuModuleLoadDataEx(&handle, unsafe.Pointer(&image[0]), uint32(len(options)), &options[0], &values[0])
	runtime.KeepAlive(errorLog)
	if err := c.d.check("cuModuleLoadDataEx", rc, "%d-byte %v for %s", len(image), kind, c.device.Arch()); err != nil {
		if log := strings.TrimSpace(goString(&errorLog[0])); log != "" {
			return nil, fmt.Errorf("%w\n%s", err, log)
		}
		return nil, err
	}
	return &Module{c: c, handle: handle}, nil
}

// check rejects a zero Function and one whose module is unloaded, before call
// would pass its handle to the driver.
func (f Function) check(call string) error {
	if f.handle == 0 || f.module == nil {
		return fmt.Errorf("%s: the Function is zero; get it from Module.Function", call)
	}
	if f.module.handle == 0 {
		return fmt.Errorf("%s of %s: %w", call, f.name, ErrClosed)
	}
	return nil
}

// maxKernelParams bounds the probe of a kernel's parameter count.
const maxKernelParams = 4096

// Function looks up a kernel of the module by name. With NVRTC, a kernel keeps
// its source name only when declared extern "C"; a C++ name is mangled.
func (m *Module) Function(name string) (Function, error) {
	if m == nil || m.handle == 0 {
		return Function{}, ErrClosed
	}
	cName, err := cString("kernel name", name)
	if err != nil {
		return Function{}, err
	}
	c := m.c
	if err := c.enter(); err != nil {
		return Function{}, err
	}
	defer c.exit()
	var handle uintptr
	if err := c.d.check("cuModuleGetFunction", c.d.cuModuleGetFunction(&handle, m.handle, cName), "kernel %q; is it extern \"C\"?", name); err != nil {
		return Function{}, err
	}
	return Function{handle: handle, name: name, params: c.countParams(handle), module: m}, nil
}

// countParams returns the number of parameters of a kernel, or -1 when the driver
// cannot tell. It calls cuFuncGetParamCount where the driver has it, and otherwise
// probes cuFuncGetParamInfo (CUDA 12.4 and later) up to the first index it
// rejects with CUDA_ERROR_INVALID_VALUE, the error its documentation lists.
func (c *Context) countParams(function uintptr) int {
	if c.d.cuFuncGetParamCount != nil {
		var count uintptr
		if c.d.cuFuncGetParamCount(function, &count) == cudaSuccess && count <= maxKernelParams {
			return int(count)
		}
		return -1
	}
	if c.d.cuFuncGetParamInfo == nil {
		return -1
	}
	for i := range maxKernelParams {
		var offset, size uintptr
		switch rc := c.d.cuFuncGetParamInfo(function, uintptr(i), &offset, &size); rc {
		case cudaSuccess:
			continue
		case cudaErrorInvalidValue:
			return i // the first index past the last parameter
		default:
			return -1
		}
	}
	return -1
}

// Unload unloads the module. Launch and FuncSetMaxDynamicShared then reject its
// Functions with ErrClosed. Unload must not run concurrently with them. A second
// Unload returns nil.
func (m *Module) Unload() error {
	if m == nil || m.handle == 0 {
		return nil
	}
	c := m.c
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	handle := m.handle
	m.handle = 0
	return c.d.check("cuModuleUnload", c.d.cuModuleUnload(handle), "")
}

// Launch queues the kernel f on s with cuLaunchKernel. Each of args points to the
// value of one kernel parameter, in order, as CUDA's kernelParams requires: pass
// unsafe.Pointer(&n) for an int32 parameter n and unsafe.Pointer(&p) for a
// DevicePtr parameter p. The driver copies the values before Launch returns, so
// they may change afterwards.
//
// Launch rejects a nil argument. Where the driver reports parameter counts (CUDA
// 12.4 and later), it also rejects a count that differs from the kernel's. Without
// that check, a wrong count or a value of the wrong size makes the driver read out
// of bounds.
// sharedBytes is the dynamic shared memory per block; above 48 KiB it needs
// FuncSetMaxDynamicShared first. Errors of the running kernel surface at the next
// synchronization.
func (c *Context) Launch(f Function, grid, block [3]uint32, sharedBytes uint32, s Stream, args ...unsafe.Pointer) error {
	if err := f.check("cuLaunchKernel"); err != nil {
		return err
	}
	for i, arg := range args {
		if arg == nil {
			return fmt.Errorf("cuLaunchKernel of %s: argument %d is nil; pass a pointer to the value", f.name, i)
		}
	}
	if f.params >= 0 && len(args) != f.params {
		return fmt.Errorf("cuLaunchKernel of %s: %d arguments for a kernel with %d parameters", f.name, len(args), f.params)
	}
	for i := range 3 {
		if grid[i] == 0 || block[i] == 0 {
			return fmt.Errorf("cuLaunchKernel of %s: grid %v and block %v must have no zero dimension", f.name, grid, block)
		}
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	var params *unsafe.Pointer
	if len(args) > 0 {
		params = &args[0]
	}
	rc := c.d.cuLaunchKernel(f.handle, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, uintptr(s), params, nil)
	return c.d.check("cuLaunchKernel", rc, "%s, grid %v, block %v, %d bytes of shared memory", f.name, grid, block, sharedBytes)
}

// FuncSetMaxDynamicShared lets f use up to bytes of dynamic shared memory per
// block, which launches above 48 KiB need. The device's limit is
// Device().MaxSharedPerBlockOptin, less the kernel's static shared memory.
func (c *Context) FuncSetMaxDynamicShared(f Function, bytes int) error {
	if err := f.check("cuFuncSetAttribute"); err != nil {
		return err
	}
	if bytes < 0 || bytes > math.MaxInt32 {
		return fmt.Errorf("cuFuncSetAttribute of %s: invalid size %d bytes", f.name, bytes)
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	rc := c.d.cuFuncSetAttribute(f.handle, cuFuncAttributeMaxDynamicSharedBytes, int32(bytes))
	return c.d.check("cuFuncSetAttribute", rc, "%s, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES=%d, device limit %d", f.name, bytes, c.device.MaxSharedPerBlockOptin)
}
