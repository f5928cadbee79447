package kernels

import (
	"fmt"
	"math"
)

// DType is the element type of a Buffer.
type DType uint8

// The element types. The zero DType is invalid, so an unset field is caught.
const (
	F32  DType = iota + 1 // IEEE 754 binary32
	BF16                  // bfloat16: the upper 16 bits of a binary32, stored as uint16
	I32                   // two's complement int32, for token ids, targets and positions
)

// String returns the safetensors spelling of d: "F32", "BF16" or "I32".
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case I32:
		return "I32"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size returns the size of one element in bytes, or 0 for an invalid DType.
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case BF16:
		return 2
	}
	return 0
}

// Valid reports whether d is one of F32, BF16 and I32.
func (d DType) Valid() bool { return d.Size() != 0 }

// BF16FromFloat32 rounds f to the nearest bfloat16, ties to even, as PyTorch's
// tensor.to(torch.bfloat16) does. NaN stays NaN (quiet, sign kept), and values
// beyond the bfloat16 range round to ±Inf.
func BF16FromFloat32(f float32) uint16 {
	bits := math.Float32bits(f)
	if bits&0x7fffffff > 0x7f800000 {
		return uint16(bits>>16) | 0x0040
	}
	roundingBias := uint32(0x7fff) + (bits>>16)&1
	return uint16((bits + roundingBias) >> 16)
}

// Float32FromBF16 widens a bfloat16 to float32 exactly.
func Float32FromBF16(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}
