package cudalib

import "fmt"

// Device describes one CUDA device.
type Device struct {
	Ordinal      int
	Major, Minor int // compute capability, such as 9.0 on an H100 or H200
	// The fields below are set by Context.Device and left zero by Libs.Devices.
	Name                   string // such as "NVIDIA H100 80GB HBM3"
	TotalMemory            int    // bytes of device memory
	Multiprocessors        int    // streaming multiprocessors (SMs)
	MaxSharedPerBlockOptin int    // bytes of shared memory a block may use after FuncSetMaxDynamicShared
}

// Arch returns the NVRTC architecture name of the device, such as "sm_90".
func (d Device) Arch() string { return fmt.Sprintf("sm_%d%d", d.Major, d.Minor) }

// DevicePtr is an address in device memory (CUdeviceptr).
type DevicePtr uintptr

// Stream is a CUDA stream (CUstream). The zero Stream is the legacy default stream,
// which synchronizes with every blocking stream of the context.
type Stream uintptr

// Event is a CUDA event (CUevent).
type Event uintptr

// Function is a kernel of a loaded Module.
type Function struct {
	handle uintptr // CUfunction
	name   string
	params int     // the kernel's parameter count, or -1 when the driver cannot tell
	module *Module // checked before each use, because a kernel of an unloaded module is a dangling handle
}

// Name returns the kernel's name as passed to Module.Function.
func (f Function) Name() string { return f.name }

// DataType is a cudaDataType_t from library_types.h: the element type of a matrix.
type DataType int32

// Element types of GemmEx's matrices, from library_types.h (CUDA 11 to 13).
const (
	R32F  DataType = 0  // CUDA_R_32F: float
	R16F  DataType = 2  // CUDA_R_16F: IEEE half
	R16BF DataType = 14 // CUDA_R_16BF: bfloat16
)

func (t DataType) String() string {
	switch t {
	case R32F:
		return "CUDA_R_32F"
	case R16F:
		return "CUDA_R_16F"
	case R16BF:
		return "CUDA_R_16BF"
	}
	return fmt.Sprintf("cudaDataType(%d)", int32(t))
}

// ComputeType is a cublasComputeType_t from cublas_api.h: the precision GemmEx
// multiplies and accumulates in. GemmEx accepts only the float compute types, whose
// alpha and beta are float.
type ComputeType int32

// Compute types of GemmEx, from cublas_api.h (cuBLAS 11 to 13).
const (
	Compute32F         ComputeType = 68 // CUBLAS_COMPUTE_32F: float, no tensor-core down-conversion of float inputs
	Compute32FPedantic ComputeType = 69 // CUBLAS_COMPUTE_32F_PEDANTIC: float, no reduced-precision reductions either
	Compute32FFast16F  ComputeType = 74 // CUBLAS_COMPUTE_32F_FAST_16F: float inputs may be rounded to half
	Compute32FFast16BF ComputeType = 75 // CUBLAS_COMPUTE_32F_FAST_16BF: float inputs may be rounded to bfloat16
	Compute32FFastTF32 ComputeType = 77 // CUBLAS_COMPUTE_32F_FAST_TF32: float inputs may be rounded to TF32 on tensor cores
)

func (t ComputeType) String() string {
	switch t {
	case Compute32F:
		return "CUBLAS_COMPUTE_32F"
	case Compute32FPedantic:
		return "CUBLAS_COMPUTE_32F_PEDANTIC"
	case Compute32FFast16F:
		return "CUBLAS_COMPUTE_32F_FAST_16F"
	case Compute32FFast16BF:
		return "CUBLAS_COMPUTE_32F_FAST_16BF"
	case Compute32FFastTF32:
		return "CUBLAS_COMPUTE_32F_FAST_TF32"
	}
	return fmt.Sprintf("cublasComputeType(%d)", int32(t))
}

// isFloatScaled reports whether cuBLAS reads alpha and beta as float for t.
func (t ComputeType) isFloatScaled() bool {
	switch t {
	case Compute32F, Compute32FPedantic, Compute32FFast16F, Compute32FFast16BF, Compute32FFastTF32:
		return true
	}
	return false
}
