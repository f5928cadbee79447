//go:build linux

package cudalib

import (
	"errors"
	"fmt"
	"math"
)

// cublasAPI holds cuBLAS's entry points. cublasHandle_t and cudaStream_t are
// uintptr, enums and int are int32, and every function returns a cublasStatus_t.
type cublasAPI struct {
	path string

	cublasCreate          func(handle *uintptr) int32        // cublasCreate_v2
	cublasDestroy         func(handle uintptr) int32         // cublasDestroy_v2
	cublasSetStream       func(handle, stream uintptr) int32 // cublasSetStream_v2
	cublasSetMathMode     func(handle uintptr, mode int32) int32
	cublasSetWorkspace    func(handle uintptr, workspace uintptr, bytes uintptr) int32 // cublasSetWorkspace_v2; nil in older cuBLAS 11 releases
	cublasGetProperty     func(property int32, value *int32) int32
	cublasGetStatusName   func(status int32) *byte // nil in older cuBLAS 11 releases
	cublasGetStatusString func(status int32) *byte // nil in older cuBLAS 11 releases
	// cublasGemmEx takes 19 arguments; purego v0.11 passes up to 32 on amd64 and arm64.
	cublasGemmEx func(handle uintptr, transA, transB int32, m, n, k int32,
		alpha *float32, a uintptr, aType DataType, lda int32,
		b uintptr, bType DataType, ldb int32,
		beta *float32, c uintptr, cType DataType, ldc int32,
		compute ComputeType, algo int32) int32
}

// cuBLAS constants, from cublas_api.h (cuBLAS 11 to 13).
const (
	cublasOpN         = 0  // CUBLAS_OP_N
	cublasOpT         = 1  // CUBLAS_OP_T
	cublasGemmDefault = -1 // CUBLAS_GEMM_DEFAULT
	// CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION: with a
	// bfloat16 output, partial sums (split-K) stay in float, the compute type.
	cublasMathMode = 0 | 16
)

// libraryPropertyType values of library_types.h, for cublasGetProperty.
const (
	propertyMajor = 0
	propertyMinor = 1
	propertyPatch = 2
)

// loadCuBLAS opens libcublas at path and resolves the entry points above.
func loadCuBLAS(path string) (*cublasAPI, error) {
	handle, err := dlopen(CuBLASLibrary, path)
	if err != nil {
		return nil, err
	}
	b := &cublasAPI{path: path}
	syms := []symbol{
		{name: "cublasCreate_v2", fptr: &b.cublasCreate},
		{name: "cublasDestroy_v2", fptr: &b.cublasDestroy},
		{name: "cublasSetStream_v2", fptr: &b.cublasSetStream},
		{name: "cublasSetMathMode", fptr: &b.cublasSetMathMode},
		{name: "cublasSetWorkspace_v2", fptr: &b.cublasSetWorkspace, optional: true},
		{name: "cublasGetProperty", fptr: &b.cublasGetProperty},
		{name: "cublasGetStatusName", fptr: &b.cublasGetStatusName, optional: true},
		{name: "cublasGetStatusString", fptr: &b.cublasGetStatusString, optional: true},
		{name: "cublasGemmEx", fptr: &b.cublasGemmEx},
	}
	if err := bind(handle, CuBLASLibrary, path, syms); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *cublasAPI) check(call string, status int32, detail string, args ...any) error {
	if status == 0 {
		return nil
	}
	e := &Error{Call: call, Code: int(status), Name: cublasStatusName(int(status))}
	if b.cublasGetStatusName != nil {
		if name := goString(b.cublasGetStatusName(status)); name != "" {
			e.Name = name
		}
	}
	if b.cublasGetStatusString != nil {
		e.Message = goString(b.cublasGetStatusString(status))
	}
	if detail != "" {
		e.Detail = fmt.Sprintf(detail, args...)
	}
	return e
}

// version returns cuBLAS's version, such as 12.4.5.
func (b *cublasAPI) version() (major, minor, patch int, err error) {
	var v [3]int32
	for i, property := range []int32{propertyMajor, propertyMinor, propertyPatch} {
		if err := b.check("cublasGetProperty", b.cublasGetProperty(property, &v[i]), "property %d", property); err != nil {
			return 0, 0, 0, err
		}
	}
	return int(v[0]), int(v[1]), int(v[2]), nil
}

// CuBLASVersion returns the version of the loaded cuBLAS, such as 12.4.5. It
// needs no GPU.
func (l *Libs) CuBLASVersion() (major, minor, patch int, err error) { return l.cublas.version() }

// openCuBLAS creates the context's cuBLAS handle on the compute stream, with a
// workspace of its own and the math mode above. The context must be current.
func (c *Context) openCuBLAS() error {
	b := c.libs.cublas
	var handle uintptr
	if err := b.check("cublasCreate_v2", b.cublasCreate(&handle), ""); err != nil {
		return err
	}
	c.blas = handle
	// cublasSetStream resets the workspace to cuBLAS's default, so it comes first.
	if err := b.check("cublasSetStream_v2", b.cublasSetStream(handle, uintptr(c.stream)), ""); err != nil {
		return err
	}
	if b.cublasSetWorkspace != nil {
		var workspace uintptr
		if err := c.d.check("cuMemAlloc_v2", c.d.cuMemAlloc(&workspace, cublasWorkspaceBytes), "cuBLAS workspace of %d bytes", cublasWorkspaceBytes); err != nil {
			return err
		}
		c.workspace = DevicePtr(workspace)
		if err := b.check("cublasSetWorkspace_v2", b.cublasSetWorkspace(handle, workspace, cublasWorkspaceBytes), "%d bytes", cublasWorkspaceBytes); err != nil {
			return err
		}
	}
	return b.check("cublasSetMathMode", b.cublasSetMathMode(handle, cublasMathMode), "mode %d", cublasMathMode)
}

// GemmEx computes C = alpha·op(A)·op(B) + beta·C on the compute stream with
// cublasGemmEx and CUBLAS_GEMM_DEFAULT. As in cuBLAS, the matrices are
// column-major: op(A) is m×k, op(B) is k×n and C is m×n, op(X) is X transposed
// when transX is true, and lda, ldb and ldc are the leading dimensions (the
// distance in elements between columns). Row-major callers compute Cᵀ = op(B)ᵀ·op(A)ᵀ
// by swapping A and B, and m and n.
//
// The supported type combinations are cuBLAS's; for float compute they include
// R32F×R32F→R32F, R16BF×R16BF→R16BF or R32F, and R16F×R16F→R16F or R32F.
// compute must be one of the float compute types (Compute32F, Compute32FFastTF32,
// and so on), whose alpha and beta are float. The call returns once the GEMM is
// queued, so its execution errors surface at the next synchronization.
func (c *Context) GemmEx(transA, transB bool, m, n, k int, alpha float32, a DevicePtr, aType DataType, lda int,
	b DevicePtr, bType DataType, ldb int, beta float32, cPtr DevicePtr, cType DataType, ldc int, compute ComputeType) error {
	detail := fmt.Sprintf("m=%d n=%d k=%d transA=%t transB=%t A %v lda=%d B %v ldb=%d C %v ldc=%d %v", m, n, k, transA, transB, aType, lda, bType, ldb, cType, ldc, compute)
	if err := checkGemm(m, n, k, lda, ldb, ldc, a, b, cPtr, compute); err != nil {
		return fmt.Errorf("cublasGemmEx (%s): %w", detail, err)
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	c.blasMu.Lock()
	defer c.blasMu.Unlock()
	if c.blas == 0 {
		return ErrClosed
	}
	op := func(transposed bool) int32 {
		if transposed {
			return cublasOpT
		}
		return cublasOpN
	}
	blas := c.libs.cublas
	status := blas.cublasGemmEx(c.blas, op(transA), op(transB), int32(m), int32(n), int32(k),
		&alpha, uintptr(a), aType, int32(lda),
		uintptr(b), bType, int32(ldb),
		&beta, uintptr(cPtr), cType, int32(ldc),
		compute, cublasGemmDefault)
	return blas.check("cublasGemmEx", status, "%s", detail)
}

// checkGemm rejects arguments that cuBLAS would misread: sizes beyond int32, a
// compute type with non-float scaling, and null matrices that a non-empty
// product would dereference. cuBLAS checks the rest, such as lda < m.
func checkGemm(m, n, k, lda, ldb, ldc int, a, b, c DevicePtr, compute ComputeType) error {
	for _, v := range []int{m, n, k, lda, ldb, ldc} {
		if v < 0 || v > math.MaxInt32 {
			return fmt.Errorf("dimension %d is outside 0 to %d", v, math.MaxInt32)
		}
	}
	if !compute.isFloatScaled() {
		return fmt.Errorf("compute type %v is not a float compute type", compute)
	}
	if m > 0 && n > 0 && c == 0 {
		return errors.New("null C")
	}
	if m > 0 && n > 0 && k > 0 && (a == 0 || b == 0) {
		return errors.New("null A or B")
	}
	return nil
}
