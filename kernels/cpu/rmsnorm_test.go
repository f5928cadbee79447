package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// rmsNormReference computes y = x / sqrt(mean(x²) + eps) · w in float64 over
// rows of c.
func rmsNormReference(x, w []float64, c int, eps float64) []float64 {
	y := make([]float64, len(x))
	for n := 0; n < len(x)/c; n++ {
		row := x[n*c : (n+1)*c]
		var ss float64
		for _, v := range row {
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(c)+eps)
		for i, v := range row {
			y[n*c+i] = v * r * w[i]
		}
	}
	return y
}

func TestRMSNormForwardMatchesReference(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	const n, c, eps = 13, 70, 1e-6
	xHost := randomValues(rng, n*c, 2)
	wHost := randomValues(rng, c, 1)
	x := newF32(t, be, xHost, n, c)
	w := newF32(t, be, wHost, c)
	out := newF32(t, be, nil, n, c)
	rstd := newF32(t, be, nil, n)

	be.RMSNormForward(out, rstd, x, w, eps)

	// Tolerance 1e-6 relative: one float32 rounding of r and two products.
	want := rmsNormReference(widen(xHost), widen(wHost), c, eps)
	requireClose(t, "out", toHost(t, be, out), want, 1e-7, 1e-6)
	r := toHost(t, be, rstd)
	for i := range n {
		var ss float64
		for _, v := range xHost[i*c : (i+1)*c] {
			ss += float64(v) * float64(v)
		}
		// Tolerance 1e-6 relative: r is rounded to float32 once.
		requireClose(t, "rstd", r[i:i+1], []float64{1 / math.Sqrt(ss/c+eps)}, 0, 1e-6)
	}
}

func TestRMSNormBackwardFiniteDifferences(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(3, 4))
	const n, c, eps = 9, 40, 1e-5
	xHost := randomValues(rng, n*c, 2)
	wHost := randomValues(rng, c, 1.5)
	rHost := randomValues(rng, n*c, 1)
	x := newF32(t, be, xHost, n, c)
	w := newF32(t, be, wHost, c)
	out := newF32(t, be, nil, n, c)
	rstd := newF32(t, be, nil, n)
	be.RMSNormForward(out, rstd, x, w, eps)

	// dWeight starts non-zero to check that the backward accumulates.
	initial := randomValues(rng, c, 1)
	dWeight := newF32(t, be, initial, c)
	dOut := newF32(t, be, rHost, n, c)
	dx := newF32(t, be, nil, n, c)
	be.RMSNormBackward(dx, dWeight, dOut, x, w, rstd)

	x64, w64, r64 := widen(xHost), widen(wHost), widen(rHost)
	loss := func() float64 { return dot64(rmsNormReference(x64, w64, c, eps), r64) }
	checkGradient(t, "x", x64, toHost(t, be, dx), loss, rng)

	accumulated := toHost(t, be, dWeight)
	gradWeight := make([]float32, c)
	for i := range gradWeight {
		gradWeight[i] = accumulated[i] - initial[i]
	}
	checkGradient(t, "weight", w64, gradWeight, loss, rng)
}

func TestRMSNormBackwardInPlaceAndFrozenWeight(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(5, 6))
	const n, c = 6, 33
	xHost := randomValues(rng, n*c, 1)
	wHost := randomValues(rng, c, 1)
	gHost := randomValues(rng, n*c, 1)
	x := newF32(t, be, xHost, n, c)
	w := newF32(t, be, wHost, c)
	out := newF32(t, be, nil, n, c)
	rstd := newF32(t, be, nil, n)
	be.RMSNormForward(out, rstd, x, w, 1e-6)

	separate := newF32(t, be, nil, n, c)
	dWeight := newF32(t, be, nil, c)
	be.RMSNormBackward(separate, dWeight, newF32(t, be, gHost, n, c), x, w, rstd)

	// dx written over dOut, and an absent dWeight for a frozen weight.
	inPlace := newF32(t, be, gHost, n, c)
	be.RMSNormBackward(inPlace, kernels.Tensor{}, inPlace, x, w, rstd)
	require.Equal(t, toHost(t, be, separate), toHost(t, be, inPlace))

	// The weight gradient computed before dx overwrote dOut.
	inPlaceWeight := newF32(t, be, nil, c)
	again := newF32(t, be, gHost, n, c)
	be.RMSNormBackward(again, inPlaceWeight, again, x, w, rstd)
	require.Equal(t, toHost(t, be, dWeight), toHost(t, be, inPlaceWeight))
}

func TestRMSNormPerHead(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(7, 8))
	const batch, seqLen, heads, headSize = 2, 3, 4, 8
	xHost := randomValues(rng, batch*seqLen*heads*headSize, 1)
	wHost := randomValues(rng, headSize, 1)
	x := newF32(t, be, xHost, batch, seqLen, heads, headSize)
	out := newF32(t, be, nil, batch, seqLen, heads, headSize)
	be.RMSNormForward(out, kernels.Tensor{}, x, newF32(t, be, wHost, headSize), 1e-6)

	// Each head of each token is one row of HS. Tolerance as for rows of C.
	want := rmsNormReference(widen(xHost), widen(wHost), headSize, 1e-6)
	requireClose(t, "out", toHost(t, be, out), want, 1e-7, 1e-6)
}

func TestRMSNormRejectsMismatchedWeight(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	x := newF32(t, be, nil, 4, 8)
	requirePanicsWith(t, func() {
		be.RMSNormForward(newF32(t, be, nil, 4, 8), kernels.Tensor{}, x, newF32(t, be, nil, 16), 1e-6)
	}, "RMSNormForward", "weight is F32 (16)", "want 8")
}
