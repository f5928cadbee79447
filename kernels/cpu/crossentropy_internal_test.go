package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestMaxOrNaNMatchesSequentialMax(t *testing.T) {
	rng := rand.New(rand.NewPCG(93, 94))
	for n := 1; n <= 40; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		want := x[0]
		for _, v := range x {
			want = max(want, v)
		}
		if got := maxOrNaN(x); got != want {
			t.Fatalf("length %d: maxOrNaN is %v, want %v", n, got, want)
		}
	}
}

func TestMaxOrNaNReturnsNaN(t *testing.T) {
	for n := 1; n <= 40; n++ {
		for at := range n {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(i)
			}
			x[at] = float32(math.NaN())
			if got := maxOrNaN(x); !math.IsNaN(float64(got)) {
				t.Fatalf("length %d, NaN at %d: maxOrNaN is %v, want NaN", n, at, got)
			}
		}
	}
}

func TestExpShiftedSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(95, 96))
	for n := 1; n <= 40; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(4 * rng.NormFloat64())
		}
		shift := maxOrNaN(x)
		var want float64
		for _, v := range x {
			want += math.Exp(float64(v - shift))
		}

		got := expShiftedSum(x, shift)
		if math.Abs(got-want) > 1e-6*want {
			t.Fatalf("length %d: expShiftedSum is %v, want %v", n, got, want)
		}

		inPlace := append([]float32(nil), x...)
		if gotInPlace := expShiftedSumInPlace(inPlace, shift); gotInPlace != got {
			t.Fatalf("length %d: expShiftedSumInPlace is %v, but expShiftedSum is %v", n, gotInPlace, got)
		}
		for i, v := range x {
			if want := expf(v - shift); inPlace[i] != want {
				t.Fatalf("length %d: element %d is %v after expShiftedSumInPlace, want %v", n, i, inPlace[i], want)
			}
		}
	}
}
