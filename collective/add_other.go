//go:build !amd64

package collective

func addF32(dst []float32, src []byte)     { addF32Generic(dst, src) }
func addBF16(dst []float32, src []byte)    { addBF16Generic(dst, src) }
func copyBF16(dst []float32, src []byte)   { copyBF16Generic(dst, src) }
func encodeBF16(dst []byte, src []float32) { encodeBF16Generic(dst, src) }
func roundBF16(x []float32)                { roundBF16Generic(x) }
