package cpu

import "fmt"

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32
// matrices, where op(X) is X, or Xᵀ when the matching trans flag is set. op(A)
// is m×k, op(B) is k×n and C is m×n. lda, ldb and ldc are the row strides
// (leading dimensions) of a, b and c as stored:
//
//   - a is m×k with lda ≥ k, or k×m with lda ≥ m when transA is set.
//   - b is k×n with ldb ≥ n, or n×k with ldb ≥ k when transB is set.
//   - c is m×n with ldc ≥ n.
//
// Every stride must be at least 1, even for an empty matrix.
//
// As in reference BLAS, C is not read when beta is zero, so NaN and Inf in C
// do not propagate, and A and B are not read when alpha is zero or k is zero.
// beta = 1 accumulates into C, as in a weight gradient dW += xᵀ·dy.
//
// Sgemm panics when a dimension is negative, a stride is too small or a slice
// is too short for the matrix it holds. C must not overlap A or B. Large
// products are split across GOMAXPROCS goroutines, and Sgemm returns when all
// of them are done. It is safe to call from several goroutines at once.
//
// NOTE: a product with m or n much smaller than the kernel's tile (12×32 with
// AVX-512), such as a matrix-vector product with n = 1, still computes whole
// tiles and so runs at a small fraction of the peak rate.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	checkDimension("m", m)
	checkDimension("n", n)
	checkDimension("k", k)
	checkStride("lda", lda, colsA)
	checkStride("ldb", ldb, colsB)
	checkStride("ldc", ldc, n)
	if m == 0 || n == 0 {
		return
	}
	checkLength("a", len(a), rowsA, colsA, lda)
	checkLength("b", len(b), rowsB, colsB, ldb)
	checkLength("c", len(c), m, n, ldc)

	if alpha == 0 || k == 0 {
		scaleMatrix(c, m, n, ldc, beta)
		return
	}
	g := gemmArgs{
		transA: transA, transB: transB,
		m: m, n: n, k: k,
		alpha: alpha, beta: beta,
		a: a, lda: lda,
		b: b, ldb: ldb,
		c: c, ldc: ldc,
	}
	sgemmParallel(activeKernel, &g)
}

// scaleMatrix multiplies the m×n matrix c by beta, writing zeros without
// reading c when beta is zero.
func scaleMatrix(c []float32, m, n, ldc int, beta float32) {
	if beta == 1 {
		return
	}
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

func checkDimension(name string, value int) {
	if value < 0 {
		panic(fmt.Sprintf("kernels/cpu: Sgemm: invalid %s %d: must not be negative", name, value))
	}
}

func checkStride(name string, stride, cols int) {
	if stride < max(1, cols) {
		panic(fmt.Sprintf("kernels/cpu: Sgemm: invalid %s %d: must be at least max(1, %d), the number of columns stored", name, stride, cols))
	}
}

// checkLength panics unless a slice of length n can hold a rows×cols matrix
// with row stride ld.
func checkLength(name string, n, rows, cols, ld int) {
	if rows == 0 || cols == 0 {
		return
	}
	if need := (rows-1)*ld + cols; n < need {
		panic(fmt.Sprintf("kernels/cpu: Sgemm: %s has length %d, but a %d×%d matrix with row stride %d needs at least %d", name, n, rows, cols, ld, need))
	}
}
