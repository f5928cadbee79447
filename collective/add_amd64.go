package collective

import "golang.org/x/sys/cpu"

// The AVX2 kernels handle whole blocks of 32, 8 or 16 elements; the generic Go loops
// take the rest.

//go:noescape
func addF32AVX2(dst *float32, src *byte, n int)

//go:noescape
func addBF16AVX2(dst *float32, src *byte, n int)

//go:noescape
func copyBF16AVX2(dst *float32, src *byte, n int)

//go:noescape
func encodeBF16AVX2(dst *byte, src *float32, n int)

//go:noescape
func roundBF16AVX2(x *float32, n int)

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

// addBF16: dst (n) += little-endian bfloat16 src (2n bytes).
func addBF16(dst []float32, src []byte) {
	n := len(dst)
	src = src[:n*2]
	done := 0
	if haveAVX2 && n >= 8 {
		addBF16AVX2(&dst[0], &src[0], n)
		done = n &^ 7
	}
	if done < n {
		addBF16Generic(dst[done:], src[done*2:])
	}
}

// copyBF16: dst (n) = little-endian bfloat16 src (2n bytes).
func copyBF16(dst []float32, src []byte) {
	n := len(dst)
	src = src[:n*2]
	done := 0
	if haveAVX2 && n >= 8 {
		copyBF16AVX2(&dst[0], &src[0], n)
		done = n &^ 7
	}
	if done < n {
		copyBF16Generic(dst[done:], src[done*2:])
	}
}

// encodeBF16 writes src as little-endian bfloat16 into dst (2·len(src) bytes).
func encodeBF16(dst []byte, src []float32) {
	n := len(src)
	dst = dst[:n*2]
	done := 0
	if haveAVX2 && n >= 16 {
		encodeBF16AVX2(&dst[0], &src[0], n)
		done = n &^ 15
	}
	if done < n {
		encodeBF16Generic(dst[done*2:], src[done:])
	}
}

// roundBF16 rounds every element of x to the nearest bfloat16 value in place.
func roundBF16(x []float32) {
	n := len(x)
	done := 0
	if haveAVX2 && n >= 8 {
		roundBF16AVX2(&x[0], n)
		done = n &^ 7
	}
	if done < n {
		roundBF16Generic(x[done:])
	}
}
