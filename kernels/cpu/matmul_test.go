package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// matmulReference computes alpha·op(a)·op(b) + beta·c in float64 and, per
// element, the bound alpha·Σ|a||b| + |beta·c| that scales its rounding error.
func matmulReference(transA, transB bool, m, n, k int, alpha float64, a, b []float64, beta float64, c []float64) (want, bound []float64) {
	want = make([]float64, m*n)
	bound = make([]float64, m*n)
	for i := range m {
		for j := range n {
			var sum, abs float64
			for p := range k {
				av := a[i*k+p]
				if transA {
					av = a[p*m+i]
				}
				bv := b[p*n+j]
				if transB {
					bv = b[j*k+p]
				}
				sum += av * bv
				abs += math.Abs(av * bv)
			}
			want[i*n+j] = alpha*sum + beta*c[i*n+j]
			bound[i*n+j] = math.Abs(alpha)*abs + math.Abs(beta*c[i*n+j])
		}
	}
	return want, bound
}

// requireMatmulClose checks |got − want| ≤ 2·(K+2)·2⁻²⁴·bound: the standard
// rounding error bound of a float32 dot product of K terms, K·2⁻²⁴·Σ|a||b|,
// with room for the alpha and beta steps, doubled.
func requireMatmulClose(t *testing.T, got []float32, want, bound []float64, k int) {
	t.Helper()
	const u = 1.0 / (1 << 24)
	for i := range want {
		tol := 2 * float64(k+2) * u * bound[i]
		if diff := math.Abs(float64(got[i]) - want[i]); diff > tol {
			require.Failf(t, "values differ", "c[%d] = %.9g, want %.9g (difference %.3g, bound %.3g)", i, got[i], want[i], diff, tol)
		}
	}
}

func TestMatmulMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	for _, bf16 := range []bool{false, true} {
		for _, transA := range []bool{false, true} {
			for _, transB := range []bool{false, true} {
				name := map[bool]string{false: "F32", true: "BF16"}[bf16] + map[bool]string{false: " N", true: " T"}[transA] + map[bool]string{false: "N", true: "T"}[transB]
				t.Run(name, func(t *testing.T) {
					be := newBackend(t, cpu.Options{})
					// Blocks of 64 rows of b, so a BF16 b of 150 or 90
					// rows is widened in three or two blocks.
					cpu.SetTileSizes(be, 64, 128, 64)
					const m, n, k = 37, 150, 90
					aShape, bShape := []int{m, k}, []int{k, n}
					if transA {
						aShape = []int{k, m}
					}
					if transB {
						bShape = []int{n, k}
					}
					aHost := randomValues(rng, m*k, 1)
					bHost := randomValues(rng, k*n, 1)
					cHost := randomValues(rng, m*n, 1)
					a := newF32(t, be, aHost, aShape...)
					var b kernels.Tensor
					if bf16 {
						bits := toBF16(bHost)
						bHost = fromBF16(bits)
						b = newBF16(t, be, bits, bShape...)
					} else {
						b = newF32(t, be, bHost, bShape...)
					}
					c := newF32(t, be, cHost, m, n)

					be.Matmul(c, a, b, transA, transB, 0.5, 0.75)

					want, bound := matmulReference(transA, transB, m, n, k, 0.5, widen(aHost), widen(bHost), 0.75, widen(cHost))
					requireMatmulClose(t, toHost(t, be, c), want, bound, k)
				})
			}
		}
	}
}

func TestMatmulFlattensLeadingDimensions(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(63, 64))
	// x: (B, T, C) times wᵀ with w: (OUT, C), as a linear layer.
	const batch, seqLen, channels, outputs = 2, 3, 8, 5
	xHost := randomValues(rng, batch*seqLen*channels, 1)
	wHost := randomValues(rng, outputs*channels, 1)
	cHost := constant(batch*seqLen*outputs, float32(math.NaN()))
	y := newF32(t, be, cHost, batch, seqLen, outputs)

	// With beta 0 the NaN in c is not read.
	be.Matmul(y, newF32(t, be, xHost, batch, seqLen, channels), newF32(t, be, wHost, outputs, channels), false, true, 1, 0)

	want, bound := matmulReference(false, true, batch*seqLen, outputs, channels, 1, widen(xHost), widen(wHost), 0, make([]float64, batch*seqLen*outputs))
	requireMatmulClose(t, toHost(t, be, y), want, bound, channels)
}

func TestMatmulRejectsMismatchedShapes(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	a := newF32(t, be, nil, 4, 3)
	b := newF32(t, be, nil, 5, 2)
	c := newF32(t, be, nil, 4, 2)
	requirePanicsWith(t, func() { be.Matmul(c, a, b, false, false, 1, 0) },
		"Matmul", "inner dimensions differ", "op(a) is 4×3", "F32 (4, 3)", "op(b) is 5×2", "F32 (5, 2)")
	requirePanicsWith(t, func() { be.Matmul(a, a, newF32(t, be, nil, 3, 3), false, false, 1, 0) },
		"Matmul", "c (F32 (4, 3) at offset 0) overlaps a")
	requirePanicsWith(t, func() {
		be.Matmul(c, newBF16(t, be, make([]uint16, 12), 4, 3), newF32(t, be, nil, 3, 2), false, false, 1, 0)
	},
		"Matmul", "a is BF16 (4, 3), want dtype F32")
}
