//go:build linux

package cudalib

import (
	"fmt"
	"os"
	"unsafe"
)

// driverAPI holds the CUDA driver's entry points. Handles (CUcontext, CUstream,
// CUevent, CUmodule, CUfunction) are uintptr, CUdevice is int32, CUdeviceptr and
// size_t are uintptr, and every function returns a CUresult.
type driverAPI struct {
	path string

	cuInit               func(flags uint32) int32
	cuDriverGetVersion   func(version *int32) int32
	cuGetErrorName       func(code int32, name **byte) int32
	cuGetErrorString     func(code int32, message **byte) int32
	cuDeviceGetCount     func(count *int32) int32
	cuDeviceGet          func(device *int32, ordinal int32) int32
	cuDeviceGetAttribute func(value *int32, attribute int32, device int32) int32
	cuDeviceGetName      func(name *byte, length int32, device int32) int32
	cuDeviceTotalMem     func(bytes *uintptr, device int32) int32 // cuDeviceTotalMem_v2

	cuDevicePrimaryCtxRetain  func(ctx *uintptr, device int32) int32
	cuDevicePrimaryCtxRelease func(device int32) int32 // cuDevicePrimaryCtxRelease_v2
	cuCtxSetCurrent           func(ctx uintptr) int32

	cuMemAlloc        func(ptr *uintptr, bytes uintptr) int32 // cuMemAlloc_v2
	cuMemFree         func(ptr uintptr) int32                 // cuMemFree_v2
	cuMemGetInfo      func(free, total *uintptr) int32        // cuMemGetInfo_v2
	cuMemHostAlloc    func(ptr *unsafe.Pointer, bytes uintptr, flags uint32) int32
	cuMemFreeHost     func(ptr unsafe.Pointer) int32
	cuMemsetD32Async  func(dst uintptr, value uint32, count uintptr, stream uintptr) int32
	cuMemcpyHtoDAsync func(dst uintptr, src unsafe.Pointer, bytes uintptr, stream uintptr) int32 // cuMemcpyHtoDAsync_v2
	cuMemcpyDtoHAsync func(dst unsafe.Pointer, src uintptr, bytes uintptr, stream uintptr) int32 // cuMemcpyDtoHAsync_v2
	cuMemcpyDtoDAsync func(dst, src uintptr, bytes uintptr, stream uintptr) int32                // cuMemcpyDtoDAsync_v2

	cuStreamCreate      func(stream *uintptr, flags uint32) int32
	cuStreamDestroy     func(stream uintptr) int32 // cuStreamDestroy_v2
	cuStreamSynchronize func(stream uintptr) int32
	cuStreamWaitEvent   func(stream, event uintptr, flags uint32) int32
	cuEventCreate       func(event *uintptr, flags uint32) int32
	cuEventRecord       func(event, stream uintptr) int32
	cuEventSynchronize  func(event uintptr) int32
	cuEventElapsedTime  func(milliseconds *float32, start, end uintptr) int32
	cuEventDestroy      func(event uintptr) int32 // cuEventDestroy_v2

	cuModuleLoadDataEx  func(module *uintptr, image unsafe.Pointer, numOptions uint32, options *int32, values *uintptr) int32
	cuModuleGetFunction func(function *uintptr, module uintptr, name *byte) int32
	cuModuleUnload      func(module uintptr) int32
	cuFuncSetAttribute  func(function uintptr, attribute int32, value int32) int32
	cuFuncGetParamInfo  func(function uintptr, index uintptr, offset, size *uintptr) int32 // CUDA 12.4 and later; nil before
	cuFuncGetParamCount func(function uintptr, count *uintptr) int32                       // newer than cuFuncGetParamInfo; may be nil
	cuLaunchKernel      func(function uintptr, gridX, gridY, gridZ, blockX, blockY, blockZ, sharedBytes uint32, stream uintptr, params, extra *unsafe.Pointer) int32
}

// CUDA driver constants, from cuda.h (CUDA 11.2 to 13).
const (
	cudaSuccess                             = 0
	cuDeviceAttributeMultiprocessorCount    = 16  // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	cuDeviceAttributeComputeCapabilityMajor = 75  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	cuDeviceAttributeComputeCapabilityMinor = 76  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	cuDeviceAttributeMaxSharedPerBlockOptin = 97  // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
	cuFuncAttributeMaxDynamicSharedBytes    = 8   // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	cuStreamNonBlocking                     = 0x1 // CU_STREAM_NON_BLOCKING
	cuEventDisableTiming                    = 0x2 // CU_EVENT_DISABLE_TIMING
	cuMemHostAllocPortable                  = 0x1 // CU_MEMHOSTALLOC_PORTABLE
	cuJitErrorLogBuffer                     = 5   // CU_JIT_ERROR_LOG_BUFFER
	cuJitErrorLogBufferSizeBytes            = 6   // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
)

// loadDriver opens libcuda at path and resolves the entry points above.
func loadDriver(path string) (*driverAPI, error) {
	handle, err := dlopen(DriverLibrary, path)
	if err != nil {
		return nil, err
	}
	d := &driverAPI{path: path}
	syms := []symbol{
		{name: "cuInit", fptr: &d.cuInit},
		{name: "cuDriverGetVersion", fptr: &d.cuDriverGetVersion},
		{name: "cuGetErrorName", fptr: &d.cuGetErrorName},
		{name: "cuGetErrorString", fptr: &d.cuGetErrorString},
		{name: "cuDeviceGetCount", fptr: &d.cuDeviceGetCount},
		{name: "cuDeviceGet", fptr: &d.cuDeviceGet},
		{name: "cuDeviceGetAttribute", fptr: &d.cuDeviceGetAttribute},
		{name: "cuDeviceGetName", fptr: &d.cuDeviceGetName},
		{name: "cuDeviceTotalMem_v2", fptr: &d.cuDeviceTotalMem},
		{name: "cuDevicePrimaryCtxRetain", fptr: &d.cuDevicePrimaryCtxRetain},
		{name: "cuDevicePrimaryCtxRelease_v2", fptr: &d.cuDevicePrimaryCtxRelease},
		{name: "cuCtxSetCurrent", fptr: &d.cuCtxSetCurrent},
		{name: "cuMemAlloc_v2", fptr: &d.cuMemAlloc},
		{name: "cuMemFree_v2", fptr: &d.cuMemFree},
		{name: "cuMemGetInfo_v2", fptr: &d.cuMemGetInfo},
		{name: "cuMemHostAlloc", fptr: &d.cuMemHostAlloc},
		{name: "cuMemFreeHost", fptr: &d.cuMemFreeHost},
		{name: "cuMemsetD32Async", fptr: &d.cuMemsetD32Async},
		{name: "cuMemcpyHtoDAsync_v2", fptr: &d.cuMemcpyHtoDAsync},
		{name: "cuMemcpyDtoHAsync_v2", fptr: &d.cuMemcpyDtoHAsync},
		{name: "cuMemcpyDtoDAsync_v2", fptr: &d.cuMemcpyDtoDAsync},
		{name: "cuStreamCreate", fptr: &d.cuStreamCreate},
		{name: "cuStreamDestroy_v2", fptr: &d.cuStreamDestroy},
		{name: "cuStreamSynchronize", fptr: &d.cuStreamSynchronize},
		{name: "cuStreamWaitEvent", fptr: &d.cuStreamWaitEvent},
		{name: "cuEventCreate", fptr: &d.cuEventCreate},
		{name: "cuEventRecord", fptr: &d.cuEventRecord},
		{name: "cuEventSynchronize", fptr: &d.cuEventSynchronize},
		{name: "cuEventElapsedTime", fptr: &d.cuEventElapsedTime},
		{name: "cuEventDestroy_v2", fptr: &d.cuEventDestroy},
		{name: "cuModuleLoadDataEx", fptr: &d.cuModuleLoadDataEx},
		{name: "cuModuleGetFunction", fptr: &d.cuModuleGetFunction},
		{name: "cuModuleUnload", fptr: &d.cuModuleUnload},
		{name: "cuFuncSetAttribute", fptr: &d.cuFuncSetAttribute},
		{name: "cuFuncGetParamInfo", fptr: &d.cuFuncGetParamInfo, optional: true},
		{name: "cuFuncGetParamCount", fptr: &d.cuFuncGetParamCount, optional: true},
		{name: "cuLaunchKernel", fptr: &d.cuLaunchKernel},
	}
	if err := bind(handle, DriverLibrary, path, syms); err != nil {
		return nil, err
	}
	return d, nil
}

// check returns nil for CUDA_SUCCESS, and otherwise an *Error that names call, the
// error and detail, a format for the arguments that matter.
func (d *driverAPI) check(call string, rc int32, detail string, args ...any) error {
	if rc == cudaSuccess {
		return nil
	}
	e := &Error{Call: call, Code: int(rc), Name: fmt.Sprintf("CUresult(%d)", rc)}
	if detail != "" {
		e.Detail = fmt.Sprintf(detail, args...)
	}
	var name, message *byte
	if d.cuGetErrorName(rc, &name) == cudaSuccess && name != nil {
		e.Name = goString(name)
	}
	if d.cuGetErrorString(rc, &message) == cudaSuccess && message != nil {
		e.Message = goString(message)
	}
	return e
}

// Libs holds the loaded libraries.
type Libs struct {
	Paths  Paths
	driver *driverAPI
	cublas *cublasAPI
	nvrtc  *NVRTC
}

// Load opens the three libraries of paths with dlopen, in the order of Libraries,
// and resolves their entry points. It fails with the library and the file or
// symbol that could not be loaded. Loading needs no GPU: the driver is
// initialized by Devices and Open.
func Load(paths Paths) (*Libs, error) {
	l := &Libs{Paths: paths}
	for _, lib := range Libraries {
		if _, ok := paths[lib.Name]; !ok {
			return nil, fmt.Errorf("load CUDA: no file for %s", lib.Name)
		}
	}
	var err error
	if l.driver, err = loadDriver(paths[DriverLibrary.Name]); err != nil {
		return nil, err
	}
	if l.nvrtc, err = LoadNVRTC(paths); err != nil {
		return nil, err
	}
	if l.cublas, err = loadCuBLAS(paths[CuBLASLibrary.Name]); err != nil {
		return nil, err
	}
	return l, nil
}

// LoadAll finds the three libraries in SearchDirs(os.Getenv) and loads them.
func LoadAll() (*Libs, error) {
	paths, err := Find(Libraries, SearchDirs(os.Getenv))
	if err != nil {
		return nil, err
	}
	return Load(paths)
}

// NVRTC returns the loaded NVRTC.
func (l *Libs) NVRTC() *NVRTC { return l.nvrtc }

// initDriver calls cuInit, with a hint when it fails.
func (l *Libs) initDriver() error {
	if rc := l.driver.cuInit(0); rc != cudaSuccess {
		err := l.driver.check("cuInit", rc, "")
		return fmt.Errorf("%w; check that the NVIDIA driver is loaded and a GPU is visible (nvidia-smi, CUDA_VISIBLE_DEVICES=%q)", err, os.Getenv("CUDA_VISIBLE_DEVICES"))
	}
	return nil
}

// Devices initializes the driver and lists the devices with their compute
// capability. DriverVersion is the CUDA version the driver supports, such as
// 12040 for 12.4.
func (l *Libs) Devices() (driverVersion int, devices []Device, err error) {
	if err := l.initDriver(); err != nil {
		return 0, nil, err
	}
	var version, count int32
	if err := l.driver.check("cuDriverGetVersion", l.driver.cuDriverGetVersion(&version), ""); err != nil {
		return 0, nil, err
	}
	if err := l.driver.check("cuDeviceGetCount", l.driver.cuDeviceGetCount(&count), ""); err != nil {
		return 0, nil, err
	}
	for i := range count {
		var dev, major, minor int32
		if err := l.driver.check("cuDeviceGet", l.driver.cuDeviceGet(&dev, i), "ordinal %d", i); err != nil {
			return 0, nil, err
		}
		if err := l.driver.check("cuDeviceGetAttribute", l.driver.cuDeviceGetAttribute(&major, cuDeviceAttributeComputeCapabilityMajor, dev), "compute capability of device %d", i); err != nil {
			return 0, nil, err
		}
		if err := l.driver.check("cuDeviceGetAttribute", l.driver.cuDeviceGetAttribute(&minor, cuDeviceAttributeComputeCapabilityMinor, dev), "compute capability of device %d", i); err != nil {
			return 0, nil, err
		}
		devices = append(devices, Device{Ordinal: int(i), Major: int(major), Minor: int(minor)})
	}
	return int(version), devices, nil
}
