package cpu

import "golang.org/x/sys/cpu"

func detectWidenBF16() widenBF16Func {
	switch {
	case cpu.X86.HasAVX512F:
		return widenBF16WithAVX512
	case cpu.X86.HasAVX2:
		return widenBF16WithAVX2
	default:
		return widenBF16Generic
	}
}

// widenBF16WithAVX512 widens whole vectors of 16 values in assembly and the
// rest in Go.
func widenBF16WithAVX512(dst []float32, src []uint16) {
	src = src[:len(dst)]
	vectorized := len(dst) &^ 15
	if vectorized > 0 {
		widenBF16AVX512(&dst[0], &src[0], vectorized)
	}
	widenBF16Generic(dst[vectorized:], src[vectorized:])
}

// widenBF16WithAVX2 widens whole vectors of 8 values in assembly and the
// rest in Go.
func widenBF16WithAVX2(dst []float32, src []uint16) {
	src = src[:len(dst)]
	vectorized := len(dst) &^ 7
	if vectorized > 0 {
		widenBF16AVX2(&dst[0], &src[0], vectorized)
	}
	widenBF16Generic(dst[vectorized:], src[vectorized:])
}
