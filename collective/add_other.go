//go:build !amd64

package collective

// addF32: dst (n) += little-endian float32 src (4n bytes).
func addF32(dst []float32, src []byte) { addF32Generic(dst, src) }
