package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cpu"
)

// ropeReference rotates x, (N, heads, HS), in float64. The angles follow
// Hugging Face's Qwen3RotaryEmbedding, which rounds inv_freq =
// 1/theta^(2i/HS) and angle = float32(pos)·inv_freq to float32, so this
// reference rounds them too. cos, sin and the rotation run in float64.
func ropeReference(x []float64, positions []int32, heads, hs int, theta float64, sinSign float64) []float64 {
	half := hs / 2
	out := make([]float64, len(x))
	for n, p := range positions {
		for i := range half {
			exponent := float32(2*i) / float32(hs)
			invFreq := 1 / float32(math.Pow(theta, float64(exponent)))
			angle := float64(float32(p) * invFreq)
			c, s := math.Cos(angle), sinSign*math.Sin(angle)
			for h := range heads {
				base := (n*heads + h) * hs
				lo, hi := x[base+i], x[base+i+half]
				out[base+i] = lo*c - hi*s
				out[base+i+half] = hi*c + lo*s
			}
		}
	}
	return out
}

func TestRoPEForwardMatchesReference(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(31, 32))
	const batch, seqLen, heads, hs, theta = 2, 7, 3, 16, 1e6
	// Row 1 holds two examples whose positions restart, and position 70000
	// lies past the cached table, where the angles are computed per token.
	positions := []int32{0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 1, 2, 70000}
	xHost := randomValues(rng, batch*seqLen*heads*hs, 1)
	x := newF32(t, be, xHost, batch, seqLen, heads, hs)
	pos := newI32(t, be, positions, batch, seqLen)
	out := newF32(t, be, nil, batch, seqLen, heads, hs)

	be.RoPEForward(out, x, pos, theta)

	// Tolerance 3e-7 relative to the values of order 1: the float32 rounding
	// of cos, sin and two products.
	want := ropeReference(widen(xHost), positions, heads, hs, theta, 1)
	requireClose(t, "out", toHost(t, be, out), want, 3e-7, 3e-7)

	// In place gives the same result.
	be.RoPEForward(x, x, pos, theta)
	require.Equal(t, toHost(t, be, out), toHost(t, be, x))
}

func TestRoPEBackwardFiniteDifferences(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(33, 34))
	const batch, seqLen, heads, hs, theta = 1, 5, 2, 8, 10000
	positions := []int32{3, 4, 0, 1, 2}
	xHost := randomValues(rng, batch*seqLen*heads*hs, 1)
	rHost := randomValues(rng, len(xHost), 1)
	pos := newI32(t, be, positions, batch, seqLen)
	dOut := newF32(t, be, rHost, batch, seqLen, heads, hs)
	dx := newF32(t, be, nil, batch, seqLen, heads, hs)

	be.RoPEBackward(dx, dOut, pos, theta)

	x64, r64 := widen(xHost), widen(rHost)
	loss := func() float64 { return dot64(ropeReference(x64, positions, heads, hs, theta, 1), r64) }
	checkGradient(t, "x", x64, toHost(t, be, dx), loss, rng)
}

func TestRoPERejectsNegativePosition(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	x := newF32(t, be, nil, 1, 2, 1, 4)
	requirePanicsWith(t, func() {
		be.RoPEForward(x, x, newI32(t, be, []int32{0, -1}, 1, 2), 1e6)
	}, "RoPEForward", "position -1 of token 1")
}

func TestRoPERejectsOddHeadSize(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	x := newF32(t, be, nil, 1, 2, 1, 5)
	requirePanicsWith(t, func() {
		be.RoPEForward(x, x, newI32(t, be, []int32{0, 1}, 1, 2), 1e6)
	}, "head size 5 must be even")
}
