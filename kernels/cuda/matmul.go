package cuda

import (
	"fmt"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// Matmul computes c = alpha·op(a)·op(b) + beta·c with cuBLAS. Its precision
// follows the package documentation: TF32 for an F32 b (fp32 with
// StrictFP32), bf16×bf16 with fp32 accumulation for a BF16 b (b widened to
// fp32 with StrictFP32).
func (b *Backend) Matmul(c, a, bm kernels.Tensor, transA, transB bool, alpha, beta float32) {
	d, err := kernels.CheckMatmul(c, a, bm, transA, transB)
	if err != nil {
		panic(err)
	}
	_, lda := a.Matrix()
	_, ldb := bm.Matrix()
	cPtr, aPtr, bPtr := b.ptr(c), b.ptr(a), b.ptr(bm)

	if d.M == 0 || d.N == 0 {
		return
	}
	if d.K == 0 {
		// The product is empty, so c = beta·c, and beta 0 does not read c.
		switch beta {
		case 0:
			b.Zero(c)
		case 1:
		default:
			b.scaleRaw(cPtr, c.Len(), beta)
		}
		return
	}

	if bm.DType() == kernels.F32 {
		b.gemm(transA, transB, d, alpha, aPtr, cudalib.R32F, lda, bPtr, cudalib.R32F, ldb, beta, cPtr, b.f32Compute())
		return
	}
	if b.strictFP32 {
		wide := b.scratchBytes(scratchOperand, 4*bm.Len())
		if wide == 0 {
			return
		}
		b.convert(b.fn.convertBF16ToF32, wide, bPtr, bm.Len())
		b.gemm(transA, transB, d, alpha, aPtr, cudalib.R32F, lda, wide, cudalib.R32F, ldb, beta, cPtr, cudalib.Compute32F)
		return
	}

	narrow := b.scratchBytes(scratchOperand, 2*a.Len())
	if narrow == 0 {
		return
	}
	b.convert(b.fn.convertF32ToBF16, narrow, aPtr, a.Len())
	b.gemm(transA, transB, d, alpha, narrow, cudalib.R16BF, lda, bPtr, cudalib.R16BF, ldb, beta, cPtr, cudalib.Compute32F)
}

// f32Compute returns the compute type of products of F32 operands.
func (b *Backend) f32Compute() cudalib.ComputeType {
	if b.strictFP32 {
		return cudalib.Compute32F
	}
	return cudalib.Compute32FFastTF32
}

// gemm computes the row-major product c (M×N, F32) = alpha·op(a)·op(b) +
// beta·c, where lda and ldb are the row lengths of a and b as stored. cuBLAS
// is column-major, and a row-major matrix read column-major is its
// transpose, so it computes cᵀ = op(b)ᵀ·op(a)ᵀ: the operands swap places,
// each keeps its transpose flag, and M and N swap.
func (b *Backend) gemm(transA, transB bool, d kernels.MatmulDims, alpha float32,
	a cudalib.DevicePtr, aType cudalib.DataType, lda int,
	bm cudalib.DevicePtr, bType cudalib.DataType, ldb int,
	beta float32, c cudalib.DevicePtr, compute cudalib.ComputeType) {
	if b.err != nil {
		return
	}
	err := b.ctx.GemmEx(transB, transA, d.N, d.M, d.K, alpha,
		bm, bType, max(1, ldb),
		a, aType, max(1, lda),
		beta, c, cudalib.R32F, max(1, d.N), compute)
	if err != nil {
		b.fail(fmt.Errorf("kernels/cuda: Matmul of %d×%d by %d×%d (%s, %s, %s): %w", d.M, d.K, d.K, d.N, aType, bType, compute, err))
	}
}
