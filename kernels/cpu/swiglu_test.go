package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cpu"
)

func swiGLUReference(gate, up []float64) []float64 {
	out := make([]float64, len(gate))
	for i, x := range gate {
		out[i] = x / (1 + math.Exp(-x)) * up[i]
	}
	return out
}

func TestSwiGLUForwardMatchesReference(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(41, 42))
	const n, inter = 5, 37
	gateHost := randomValues(rng, n*inter, 6)
	// The extremes check that the sigmoid saturates without NaN.
	gateHost[0], gateHost[1], gateHost[2] = -120, 120, 0
	upHost := randomValues(rng, n*inter, 2)
	gate := newF32(t, be, gateHost, n, inter)
	up := newF32(t, be, upHost, n, inter)
	out := newF32(t, be, nil, n, inter)

	be.SwiGLUForward(out, gate, up)

	// Tolerance 1e-6 relative: the fast exp is within 2 ulp, plus three
	// float32 roundings.
	want := swiGLUReference(widen(gateHost), widen(upHost))
	requireClose(t, "out", toHost(t, be, out), want, 1e-7, 1e-6)

	be.SwiGLUForward(gate, gate, up)
	require.Equal(t, toHost(t, be, out), toHost(t, be, gate))
}

func TestSwiGLUBackwardFiniteDifferences(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(43, 44))
	const n = 300
	gateHost := randomValues(rng, n, 5)
	upHost := randomValues(rng, n, 2)
	rHost := randomValues(rng, n, 1)
	gate := newF32(t, be, gateHost, n)
	up := newF32(t, be, upHost, n)
	dOut := newF32(t, be, rHost, n)
	dGate := newF32(t, be, nil, n)
	dUp := newF32(t, be, nil, n)

	be.SwiGLUBackward(dGate, dUp, dOut, gate, up)

	g64, u64, r64 := widen(gateHost), widen(upHost), widen(rHost)
	loss := func() float64 { return dot64(swiGLUReference(g64, u64), r64) }
	checkGradient(t, "gate", g64, toHost(t, be, dGate), loss, rng)
	checkGradient(t, "up", u64, toHost(t, be, dUp), loss, rng)

	// dGate written over dOut gives the same gradients.
	inPlaceUp := newF32(t, be, nil, n)
	be.SwiGLUBackward(dOut, inPlaceUp, dOut, gate, up)
	require.Equal(t, toHost(t, be, dGate), toHost(t, be, dOut))
	require.Equal(t, toHost(t, be, dUp), toHost(t, be, inPlaceUp))
}

func TestSwiGLURejectsSharedGradients(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	x := newF32(t, be, nil, 4)
	requirePanicsWith(t, func() {
		be.SwiGLUBackward(x, x, newF32(t, be, nil, 4), newF32(t, be, nil, 4), newF32(t, be, nil, 4))
	}, "SwiGLUBackward", "dGate", "overlaps dUp")
}
