package cpu

import (
	"github.com/ringtune/ringtune/kernels"
)

// Matmul computes c = alpha·op(a)·op(b) + beta·c with Sgemm. A BF16 b is
// converted to fp32 one block of rows at a time (see gemmMixed), so a frozen
// bfloat16 weight never needs a full fp32 copy.
func (b *Backend) Matmul(c, a, bm kernels.Tensor, transA, transB bool, alpha, beta float32) {
	d, err := kernels.CheckMatmul(c, a, bm, transA, transB)
	if err != nil {
		panic(err)
	}
	_, lda := a.Matrix()
	_, ldb := bm.Matrix()
	operand := matrixOperand{ld: max(1, ldb)}
	if bm.DType() == kernels.BF16 {
		operand.bf16 = BF16s(bm)
	} else {
		operand.f32 = Float32s(bm)
	}
	b.gemmMixed(transA, transB, d.M, d.N, d.K, alpha, Float32s(a), max(1, lda), operand, beta, Float32s(c), max(1, d.N))
}

// matrixOperand is a row-major B operand of a product in F32 or BF16: exactly
// one of f32 and bf16 is set, and ld is its row stride.
type matrixOperand struct {
	f32  []float32
	bf16 []uint16
	ld   int
}

// gemmMixed is Sgemm with a B operand that may be BF16. A BF16 operand is
// widened to fp32 in blocks of whole rows of at most b.bf16BlockFloats
// elements (at least 64 rows), each followed by one Sgemm:
//   - transB, b is (N, K): a block of rows of b is a block of columns of c,
//     c[:, n0:n1] = alpha·op(a)·b[n0:n1]ᵀ + beta·c[:, n0:n1];
//   - otherwise b is (K, N): a block of rows of b is a slice of the inner
//     dimension, and the blocks after the first accumulate with beta 1.
//
// The widening repeats on every call, which costs K·N conversions against
// M·N·K multiply-adds, negligible unless M is a handful of rows.
func (b *Backend) gemmMixed(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, bm matrixOperand, beta float32, c []float32, ldc int) {
	if bm.bf16 == nil || m == 0 || n == 0 || k == 0 {
		Sgemm(transA, transB, m, n, k, alpha, a, lda, bm.f32, bm.ld, beta, c, ldc)
		return
	}
	rowLen := k
	rows := n
	if !transB {
		rowLen, rows = n, k
	}
	blockRows := min(rows, max(64, b.bf16BlockFloats/rowLen))
	if cap(b.shadow) < blockRows*rowLen {
		b.shadow = make([]float32, blockRows*rowLen)
	}
	for r0 := 0; r0 < rows; r0 += blockRows {
		r1 := min(rows, r0+blockRows)
		shadow := b.shadow[:(r1-r0)*rowLen]
		widenRows(b, shadow, bm.bf16, bm.ld, r0, r1, rowLen)
		if transB {
			Sgemm(transA, true, m, r1-r0, k, alpha, a, lda, shadow, rowLen, beta, c[r0:], ldc)
			continue
		}
		aBlock := a[r0:]
		if transA {
			aBlock = a[r0*lda:]
		}
		blockBeta := beta
		if r0 > 0 {
			blockBeta = 1
		}
		Sgemm(transA, false, m, n, r1-r0, alpha, aBlock, lda, shadow, rowLen, blockBeta, c, ldc)
	}
}

// widenRows converts rows [r0, r1) of the row-major BF16 matrix src (row
// stride ld, rowLen used columns) into the packed fp32 rows of dst.
func widenRows(b *Backend, dst []float32, src []uint16, ld, r0, r1, rowLen int) {
	if ld == rowLen {
		b.widenBF16(dst, src[r0*ld:r1*ld])
		return
	}
	for r := r0; r < r1; r++ {
		b.widenBF16(dst[(r-r0)*rowLen:(r-r0+1)*rowLen], src[r*ld:r*ld+rowLen])
	}
}
