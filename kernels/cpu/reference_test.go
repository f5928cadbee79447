package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// unitRoundoff is u = 2⁻²⁴, the relative rounding error of one float32 operation.
const unitRoundoff = 1.0 / (1 << 24)

// gemmCase is one Sgemm call with its own operands.
type gemmCase struct {
	transA, transB bool
	m, n, k        int
	lda, ldb, ldc  int
	alpha, beta    float32
	a, b, c        []float32
}

// gapValue fills the stride gaps of C (the elements between one row's last
// column and the next row's first); Sgemm must leave it unchanged. The gaps
// of A and B hold NaN, so a result that reads them turns NaN.
const gapValue = -12345.5

// newGemmCase builds random operands for op(A) m×k and op(B) k×n, with each
// stride extended by the matching pad. The slices have the minimum length
// that Sgemm accepts, so reads and writes past the last element panic.
func newGemmCase(rng *rand.Rand, transA, transB bool, m, n, k, padA, padB, padC int, alpha, beta float32) *gemmCase {
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	tc := &gemmCase{
		transA: transA, transB: transB, m: m, n: n, k: k,
		lda: max(1, colsA) + padA, ldb: max(1, colsB) + padB, ldc: max(1, n) + padC,
		alpha: alpha, beta: beta,
	}
	nan := float32(math.NaN())
	tc.a = randomStridedMatrix(rng, rowsA, colsA, tc.lda, nan)
	tc.b = randomStridedMatrix(rng, rowsB, colsB, tc.ldb, nan)
	tc.c = randomStridedMatrix(rng, m, n, tc.ldc, gapValue)
	return tc
}

// randomStridedMatrix returns a rows×cols matrix with row stride ld and values
// uniform in [-1, 1), with gap in the elements between rows.
func randomStridedMatrix(rng *rand.Rand, rows, cols, ld int, gap float32) []float32 {
	if rows == 0 || cols == 0 {
		return nil
	}
	x := make([]float32, (rows-1)*ld+cols)
	for i := range x {
		if i%ld < cols {
			x[i] = 2*rng.Float32() - 1
		} else {
			x[i] = gap
		}
	}
	return x
}

func (tc *gemmCase) opA(i, p int) float32 {
	if tc.transA {
		return tc.a[p*tc.lda+i]
	}
	return tc.a[i*tc.lda+p]
}

func (tc *gemmCase) opB(p, j int) float32 {
	if tc.transB {
		return tc.b[j*tc.ldb+p]
	}
	return tc.b[p*tc.ldb+j]
}

func (tc *gemmCase) run() {
	Sgemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, tc.a, tc.lda, tc.b, tc.ldb, tc.beta, tc.c, tc.ldc)
}

// reference returns C after the call, computed in float64, and for each
// element the bound |alpha|·Σ_p |op(A)[i][p]·op(B)[p][j]| + |beta·C[i][j]| that
// scales its rounding error. Like BLAS, it reads neither C when beta is zero
// nor A and B when alpha is zero.
func (tc *gemmCase) reference() (want, scale []float64) {
	want = make([]float64, tc.m*tc.n)
	scale = make([]float64, tc.m*tc.n)
	for i := range tc.m {
		for j := range tc.n {
			var sum, abs float64
			if tc.alpha != 0 {
				for p := range tc.k {
					x := float64(tc.opA(i, p)) * float64(tc.opB(p, j))
					sum += x
					abs += math.Abs(x)
				}
			}
			v := float64(tc.alpha) * sum
			s := math.Abs(float64(tc.alpha)) * abs
			if tc.beta != 0 {
				old := float64(tc.beta) * float64(tc.c[i*tc.ldc+j])
				v += old
				s += math.Abs(old)
			}
			want[i*tc.n+j] = v
			scale[i*tc.n+j] = s
		}
	}
	return want, scale
}

// roundingTolerance returns the relative error bound for C computed with
// kernel: each element of the result is off by at most
// roundingTolerance·scale, with scale from reference.
//
// Each product op(A)[i][p]·op(B)[p][j] passes through at most kc roundings in
// the micro-kernel's chain of fused multiply-adds. Then it passes through one
// rounding for the scaling by alpha, one for the addition to beta·C, and one
// for each later block of kc k steps that adds to the same element of C. The
// term beta·C[i][j] passes through at most as many. So every term is
// multiplied by at most n = k + ⌈k/kc⌉ + 1 factors (1+δ) with |δ| ≤ u, and
// the product of such factors differs from 1 by at most
// γₙ = n·u/(1-n·u), so |error| ≤ γₙ·scale. The float64 reference adds an
// error near k·2⁻⁵³·scale, which this bound ignores.
func roundingTolerance(kernel *microKernel, k int) float64 {
	steps := float64(k + ceilDiv(max(k, 1), kernel.kc) + 1)
	return steps * unitRoundoff / (1 - steps*unitRoundoff)
}

// checkResult compares tc.c after the call with want and checks that the
// stride gaps of C are unchanged.
func checkResult(t *testing.T, kernel *microKernel, tc *gemmCase, want, scale []float64) {
	t.Helper()
	tol := roundingTolerance(kernel, tc.k)
	failures := 0
	for i := range tc.m {
		for j := range tc.n {
			got := float64(tc.c[i*tc.ldc+j])
			w, s := want[i*tc.n+j], scale[i*tc.n+j]
			if math.IsNaN(got) || math.Abs(got-w) > tol*s {
				failures++
				if failures <= 5 {
					t.Errorf("C[%d][%d] = %g, want %g ± %.3g", i, j, got, w, tol*s)
				}
			}
		}
		if i == tc.m-1 || tc.n == 0 {
			break
		}
		for j := tc.n; j < tc.ldc; j++ {
			if got := tc.c[i*tc.ldc+j]; got != gapValue {
				failures++
				if failures <= 5 {
					t.Errorf("stride gap C[%d][%d] = %g, want it unchanged at %g", i, j, got, float32(gapValue))
				}
			}
		}
	}
	if failures > 5 {
		t.Errorf("%d elements wrong in all", failures)
	}
}

// useKernel makes Sgemm use kernel until the test ends.
func useKernel(t testing.TB, kernel *microKernel) {
	t.Helper()
	saved := activeKernel
	activeKernel = kernel
	t.Cleanup(func() { activeKernel = saved })
}
