package cpu

import (
	"math"
	"testing"

	"github.com/ringtune/ringtune/kernels"
)

// requireWidensAllBF16 checks widen against kernels.Float32FromBF16 bit for
// bit on all 65536 bfloat16 bit patterns, NaNs and subnormals included. It
// also widens every length up to 100 at every start offset up to 16, which
// covers each split between the vector loops and the scalar rest, and checks
// that widen writes nothing past len(dst).
func requireWidensAllBF16(t *testing.T, widen widenBF16Func) {
	t.Helper()
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	dst := make([]float32, len(src))
	widen(dst, src)
	for i, got := range dst {
		want := kernels.Float32FromBF16(src[i])
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("bits %#04x widen to %#08x, want %#08x", src[i], math.Float32bits(got), math.Float32bits(want))
		}
	}

	const sentinel = 0x7fc0dead
	for offset := range 17 {
		for n := range 101 {
			in := src[0x3f80+offset*7:][:n+offset]
			out := make([]float32, n+offset+1)
			for i := range out {
				out[i] = math.Float32frombits(sentinel)
			}
			widen(out[offset:offset+n], in[offset:])
			for i := range n {
				want := kernels.Float32FromBF16(in[offset+i])
				if math.Float32bits(out[offset+i]) != math.Float32bits(want) {
					t.Fatalf("offset %d, length %d: element %d is %#08x, want %#08x", offset, n, i, math.Float32bits(out[offset+i]), math.Float32bits(want))
				}
			}
			for i := range offset {
				if math.Float32bits(out[i]) != sentinel {
					t.Fatalf("offset %d, length %d: element %d before dst was written", offset, n, i)
				}
			}
			if math.Float32bits(out[offset+n]) != sentinel {
				t.Fatalf("offset %d, length %d: the element after dst was written", offset, n)
			}
		}
	}
}

func TestWidenBF16Generic(t *testing.T) {
	requireWidensAllBF16(t, widenBF16Generic)
}

func TestWidenBF16Fast(t *testing.T) {
	requireWidensAllBF16(t, widenBF16Fast)
}

func BenchmarkWidenBF16(b *testing.B) {
	src := make([]uint16, 1<<18)
	for i := range src {
		src[i] = uint16(i * 31)
	}
	dst := make([]float32, len(src))
	for _, impl := range []struct {
		name  string
		widen widenBF16Func
	}{{"generic", widenBF16Generic}, {"fast", widenBF16Fast}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(src) * 6))
			for b.Loop() {
				impl.widen(dst, src)
			}
		})
	}
}
