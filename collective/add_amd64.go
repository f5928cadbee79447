package collective

import (
	"golang.org/x/sys/cpu"
)

//go:noescape
func addF32AVX2(dst *float32, src *byte, n int)

var haveAVX2 = cpu.X86.HasAVX2

// addF32: dst (n) += little-endian float32 src (4n bytes).
func addF32(dst []float32, src []byte) {
	n := len(dst)
	src = src[:n*4]
	done := 0
	if haveAVX2 && n >= 32 {
		addF32AVX2(&dst[0], &src[0], n)
		done = n &^ 31
	}
	if done < n {
		addF32Generic(dst[done:], src[done*4:])
	}
}
