package cpu

import "github.com/ringtune/ringtune/kernels"

//go:generate go run ./internal/widengen -out widen_amd64.s -stubs widen_stubs_amd64.go -pkg cpu

// widenBF16Func sets dst[i] to the float32 value of the bfloat16 src[i] for
// every i < len(dst). src must be at least as long as dst.
type widenBF16Func func(dst []float32, src []uint16)

// widenBF16Generic is the pure-Go widening. A bfloat16 is the upper half of a
// float32, so widening is exact and keeps NaN payloads.
func widenBF16Generic(dst []float32, src []uint16) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = kernels.Float32FromBF16(src[i])
	}
}

// widenBF16Fast is the fastest widening that this CPU supports.
var widenBF16Fast = detectWidenBF16()
