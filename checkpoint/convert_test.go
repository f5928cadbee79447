package checkpoint_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ringtune/ringtune/checkpoint"
)

func TestBF16ToFloat32KnownBits(t *testing.T) {
	cases := []struct {
		bf16 uint16
		f32  uint32
	}{
		{0x0000, 0x00000000},
		{0x8000, 0x80000000},
		{0x3f80, 0x3f800000}, // 1
		{0xc000, 0xc0000000}, // -2
		{0x0001, 0x00010000}, // subnormal
		{0x7f7f, 0x7f7f0000}, // largest finite
		{0x7f80, 0x7f800000}, // +inf
		{0xff80, 0xff800000}, // -inf
		{0x7fc1, 0x7fc10000}, // NaN with payload
	}
	for _, c := range cases {
		assert.Equal(t, c.f32, math.Float32bits(checkpoint.BF16ToFloat32(c.bf16)), "bf16 %#04x", c.bf16)
	}
}

func TestFloat32ToBF16KnownBits(t *testing.T) {
	cases := []struct {
		f32    uint32
		bf16   uint16
		reason string
	}{
		{0x3f800000, 0x3f80, "1 is exact"},
		{0x3f808000, 0x3f80, "tie rounds to even (down)"},
		{0x3f818000, 0x3f82, "tie rounds to even (up)"},
		{0x3f808001, 0x3f81, "above the tie rounds up"},
		{0x3f807fff, 0x3f80, "below the tie rounds down"},
		{0xbf808001, 0xbf81, "negative rounds by magnitude"},
		{0x7f7fffff, 0x7f80, "largest float32 overflows to inf"},
		{0x7f7f7fff, 0x7f7f, "just below the overflow tie stays finite"},
		{0x00000001, 0x0000, "smallest subnormal rounds to zero"},
		{0x00008000, 0x0000, "subnormal tie rounds to even zero"},
		{0x00018000, 0x0002, "subnormal tie rounds to even"},
		{0x80000000, 0x8000, "negative zero"},
		{0x7f800000, 0x7f80, "inf"},
		{0xff800000, 0xff80, "-inf"},
		{0x7fc00000, 0x7fc0, "quiet NaN"},
		{0xffc00000, 0xffc0, "negative NaN keeps its sign"},
		{0x7f800001, 0x7fc0, "NaN with low payload stays NaN, not inf"},
		{0x7fa00000, 0x7fe0, "signalling NaN becomes quiet, top payload kept"},
	}
	for _, c := range cases {
		got := checkpoint.Float32ToBF16(math.Float32frombits(c.f32))
		assert.Equal(t, c.bf16, got, "%s: f32 %#08x gave %#04x", c.reason, c.f32, got)
	}
}

func TestF16ToFloat32KnownBits(t *testing.T) {
	cases := []struct {
		f16 uint16
		f32 uint32
	}{
		{0x0000, 0x00000000},
		{0x8000, 0x80000000},
		{0x3c00, 0x3f800000}, // 1
		{0xc000, 0xc0000000}, // -2
		{0x0001, 0x33800000}, // 2^-24, smallest subnormal
		{0x0002, 0x34000000}, // 2^-23
		{0x03ff, 0x387fc000}, // largest subnormal, 1023·2^-24
		{0x8001, 0xb3800000}, // negative subnormal
		{0x0400, 0x38800000}, // 2^-14, smallest normal
		{0x7bff, 0x477fe000}, // 65504, largest finite
		{0x7c00, 0x7f800000}, // +inf
		{0xfc00, 0xff800000}, // -inf
		{0x7e00, 0x7fc00000}, // quiet NaN
		{0x7c01, 0x7f802000}, // signalling NaN keeps its payload
		{0xfe00, 0xffc00000}, // negative NaN
	}
	for _, c := range cases {
		assert.Equal(t, c.f32, math.Float32bits(checkpoint.F16ToFloat32(c.f16)), "f16 %#04x", c.f16)
	}
}

func TestFloat32ToF16KnownBits(t *testing.T) {
	cases := []struct {
		f32    float32
		f16    uint16
		reason string
	}{
		{65504, 0x7bff, "largest finite"},
		{65519.996, 0x7bff, "just below the overflow tie"},
		{65520, 0x7c00, "overflow tie rounds to even, which is inf"},
		{1e10, 0x7c00, "overflow"},
		{float32(math.Inf(-1)), 0xfc00, "-inf"},
		{0x1p-25, 0x0000, "half the smallest subnormal ties to zero"},
		{0x1.8p-25, 0x0001, "above the tie rounds up to the smallest subnormal"},
		{0x3p-25, 0x0002, "subnormal tie rounds to even"},
		{-0x1p-24, 0x8001, "negative subnormal"},
		{0x1p-14, 0x0400, "smallest normal"},
		{0x1p-14 - 0x1p-25, 0x0400, "tie between the largest subnormal and smallest normal rounds to even"},
		{1 + 0x1p-11, 0x3c00, "tie rounds down to even"},
		{1 + 0x3p-11, 0x3c02, "tie rounds up to even"},
		{1e-40, 0x0000, "float32 subnormal underflows"},
		{float32(math.Copysign(0, -1)), 0x8000, "negative zero"},
		{math.Float32frombits(0x7fc00000), 0x7e00, "quiet NaN"},
		{math.Float32frombits(0xff800001), 0xfe00, "NaN with low payload stays NaN, not inf"},
		{math.Float32frombits(0x7fa02000), 0x7f01, "signalling NaN becomes quiet, top payload kept"},
	}
	for _, c := range cases {
		got := checkpoint.Float32ToF16(c.f32)
		assert.Equal(t, c.f16, got, "%s: %g gave %#04x", c.reason, c.f32, got)
	}
}

// Every float16 value widens exactly, so narrowing it again must give it back.
func TestF16RoundTripAllPatterns(t *testing.T) {
	for h := 0; h <= 0xffff; h++ {
		want := uint16(h)
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			want |= 0x0200 // NaNs come back quiet
		}
		got := checkpoint.Float32ToF16(checkpoint.F16ToFloat32(uint16(h)))
		if got != want {
			t.Fatalf("f16 %#04x came back as %#04x", h, got)
		}
	}
}

// Rounding at, just above and just below the midpoint of every pair of neighbouring
// float16 values, both signs, checks round-to-nearest-even over the whole range.
func TestFloat32ToF16Midpoints(t *testing.T) {
	for h := uint16(0); h < 0x7c00; h++ {
		lo := float64(checkpoint.F16ToFloat32(h))
		hi := 65536.0 // the value one step past the largest finite, which rounds to inf
		if h < 0x7bff {
			hi = float64(checkpoint.F16ToFloat32(h + 1))
		}
		mid := float32((lo + hi) / 2) // exact: it needs 12 significant bits
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		for _, sign := range []uint16{0, 0x8000} {
			m := mid
			if sign != 0 {
				m = -mid
			}
			above := math.Nextafter32(m, float32(math.Copysign(math.Inf(1), float64(m))))
			below := math.Nextafter32(m, 0)
			if got := checkpoint.Float32ToF16(m); got != even|sign {
				t.Fatalf("midpoint %g after %#04x gave %#04x, want %#04x", m, h|sign, got, even|sign)
			}
			if got := checkpoint.Float32ToF16(above); got != (h+1)|sign {
				t.Fatalf("%g above the midpoint after %#04x gave %#04x", above, h|sign, got)
			}
			if got := checkpoint.Float32ToF16(below); got != h|sign {
				t.Fatalf("%g below the midpoint after %#04x gave %#04x", below, h|sign, got)
			}
		}
	}
}

// The same midpoint check for bfloat16, whose neighbours' midpoint has the float32
// bits of the lower value plus 0x8000.
func TestFloat32ToBF16Midpoints(t *testing.T) {
	for h := uint32(0); h < 0x7f80; h++ {
		even := uint16(h)
		if h&1 == 1 {
			even = uint16(h + 1)
		}
		for _, sign := range []uint32{0, 0x80000000} {
			mid := h<<16 | 0x8000 | sign
			s16 := uint16(sign >> 16)
			if got := checkpoint.Float32ToBF16(math.Float32frombits(mid)); got != even|s16 {
				t.Fatalf("midpoint %#08x gave %#04x, want %#04x", mid, got, even|s16)
			}
			if got := checkpoint.Float32ToBF16(math.Float32frombits(mid + 1)); got != uint16(h+1)|s16 {
				t.Fatalf("%#08x above the midpoint gave %#04x", mid+1, got)
			}
			if got := checkpoint.Float32ToBF16(math.Float32frombits(mid - 1)); got != uint16(h)|s16 {
				t.Fatalf("%#08x below the midpoint gave %#04x", mid-1, got)
			}
		}
	}
}
