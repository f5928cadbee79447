package cpu

import (
	"math"
	"testing"
)

// TestExpfAccuracy sweeps the normal range of float32 results and checks
// expf against math.Exp rounded to float32.
func TestExpfAccuracy(t *testing.T) {
	const points = 200_000
	worst := 0.0
	for i := range points {
		x := float32(-87.3 + 176.0*float64(i)/points)
		got := float64(expf(x))
		want := math.Exp(float64(x))
		relative := math.Abs(got-want) / want
		worst = max(worst, relative)
		// 2⁻²² relative: two units in the last place of a float32.
		if relative > 1.0/(1<<22) {
			t.Fatalf("expf(%g) = %g, want %g (relative error %.3g)", x, got, want, relative)
		}
	}
	t.Logf("largest relative error %.3g (2⁻²³ = %.3g)", worst, 1.0/(1<<23))
}

func TestExpfSpecialValues(t *testing.T) {
	if got := expf(0); got != 1 {
		t.Errorf("expf(0) = %g, want 1", got)
	}
	if got := expf(float32(math.Inf(-1))); got != 0 {
		t.Errorf("expf(-Inf) = %g, want 0", got)
	}
	if got := expf(-100); got != 0 {
		t.Errorf("expf(-100) = %g, want 0 (flushed below the smallest normal)", got)
	}
	if got := expf(89); !math.IsInf(float64(got), 1) {
		t.Errorf("expf(89) = %g, want +Inf", got)
	}
	if got := expf(88.7); math.IsInf(float64(got), 1) || got < 3e38 {
		t.Errorf("expf(88.7) = %g, want a finite value near 3.3e38", got)
	}
	if got := expf(float32(math.NaN())); !math.IsNaN(float64(got)) {
		t.Errorf("expf(NaN) = %g, want NaN", got)
	}
}

func BenchmarkExpf(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -20 + 20*float32(i)/float32(len(x))
	}
	b.Run("expf", func(b *testing.B) {
		var sum float32
		for b.Loop() {
			for _, v := range x {
				sum += expf(v)
			}
		}
		_ = sum
	})
	b.Run("math.Exp", func(b *testing.B) {
		var sum float32
		for b.Loop() {
			for _, v := range x {
				sum += float32(math.Exp(float64(v)))
			}
		}
		_ = sum
	})
}
