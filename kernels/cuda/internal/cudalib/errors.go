package cudalib

import (
	"errors"
	"fmt"
	"strings"
)

// Error is a failed call into the CUDA driver, NVRTC or cuBLAS.
type Error struct {
	Call    string // the C function, such as "cuMemAlloc_v2"
	Code    int    // the CUresult, nvrtcResult or cublasStatus_t
	Name    string // such as "CUDA_ERROR_OUT_OF_MEMORY"
	Message string // the library's description, such as "out of memory"; may be empty
	Detail  string // the arguments that matter, such as "1073741824 bytes"; may be empty
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Call)
	if e.Detail != "" {
		fmt.Fprintf(&b, " (%s)", e.Detail)
	}
	fmt.Fprintf(&b, " failed: %s", e.Name)
	if e.Message != "" && e.Message != e.Name {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

// Codes that callers may want to tell apart, from cuda.h and cublas_api.h.
const (
	cudaErrorOutOfMemory  = 2 // CUDA_ERROR_OUT_OF_MEMORY
	cudaErrorInvalidValue = 1 // CUDA_ERROR_INVALID_VALUE
	cublasAllocFailed     = 3 // CUBLAS_STATUS_ALLOC_FAILED
)

// IsOutOfMemory reports whether err is a failed device allocation of the driver
// (CUDA_ERROR_OUT_OF_MEMORY) or of cuBLAS (CUBLAS_STATUS_ALLOC_FAILED).
func IsOutOfMemory(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if strings.HasPrefix(e.Call, "cublas") {
		return e.Code == cublasAllocFailed
	}
	return strings.HasPrefix(e.Call, "cu") && e.Code == cudaErrorOutOfMemory
}

// ErrClosed is returned by the methods of a Context after Close, and of a Module
// after Unload.
var ErrClosed = errors.New("cudalib: use of a closed CUDA context or unloaded module")

// errNoNVRTC is returned for calls on a nil *NVRTC.
var errNoNVRTC = errors.New("cudalib: NVRTC is not loaded (nil *NVRTC)")

// cublasStatusNames are the names of cublasStatus_t in cublas_api.h, for cuBLAS
// releases without cublasGetStatusName (before 11.4.2).
var cublasStatusNames = map[int]string{
	0:  "CUBLAS_STATUS_SUCCESS",
	1:  "CUBLAS_STATUS_NOT_INITIALIZED",
	3:  "CUBLAS_STATUS_ALLOC_FAILED",
	7:  "CUBLAS_STATUS_INVALID_VALUE",
	8:  "CUBLAS_STATUS_ARCH_MISMATCH",
	11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR",
	15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// cublasStatusName returns the name of a cublasStatus_t from the table above.
func cublasStatusName(code int) string {
	if name, ok := cublasStatusNames[code]; ok {
		return name
	}
	return fmt.Sprintf("cublasStatus(%d)", code)
}

// CompileError is a failed NVRTC compilation, with the compiler's log.
type CompileError struct {
	Program string // the program name passed to Compile
	Arch    string // the architecture passed to Compile
	Log     string // NVRTC's log, with the file:line of each error
	Err     error  // the failed NVRTC call
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("compile CUDA program %q for %s: %v\n%s", e.Program, e.Arch, e.Err, strings.TrimSpace(e.Log))
}

func (e *CompileError) Unwrap() error { return e.Err }
