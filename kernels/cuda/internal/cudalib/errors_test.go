package cudalib

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestErrorMessage(t *testing.T) {
	err := &Error{Call: "cuMemAlloc_v2", Code: 2, Name: "CUDA_ERROR_OUT_OF_MEMORY", Message: "out of memory", Detail: "1024 bytes"}
	assert.Equal(t, "cuMemAlloc_v2 (1024 bytes) failed: CUDA_ERROR_OUT_OF_MEMORY: out of memory", err.Error())

	err = &Error{Call: "nvrtcCompileProgram", Code: 6, Name: "NVRTC_ERROR_COMPILATION"}
	assert.Equal(t, "nvrtcCompileProgram failed: NVRTC_ERROR_COMPILATION", err.Error())
}

func TestIsOutOfMemory(t *testing.T) {
	assert.True(t, IsOutOfMemory(&Error{Call: "cuMemAlloc_v2", Code: 2}))
	assert.True(t, IsOutOfMemory(fmt.Errorf("alloc weights: %w", &Error{Call: "cuMemAlloc_v2", Code: 2})), "a wrapped error")
	assert.True(t, IsOutOfMemory(&Error{Call: "cublasGemmEx", Code: 3}))
	assert.False(t, IsOutOfMemory(&Error{Call: "cublasGemmEx", Code: 2}), "2 is not a cuBLAS allocation failure")
	assert.False(t, IsOutOfMemory(&Error{Call: "cuMemAlloc_v2", Code: 1}))
	assert.False(t, IsOutOfMemory(&Error{Call: "nvrtcCompileProgram", Code: 2}))
	assert.False(t, IsOutOfMemory(fmt.Errorf("plain error")))
	assert.False(t, IsOutOfMemory(nil))
}

func TestCublasStatusName(t *testing.T) {
	assert.Equal(t, "CUBLAS_STATUS_INVALID_VALUE", cublasStatusName(7))
	assert.Equal(t, "cublasStatus(99)", cublasStatusName(99))
}
