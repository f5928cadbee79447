package checkpoint

import (
	"errors"
	"math/bits"
	"strings"
)

// DType is a safetensors element type, spelled as in the "dtype" field of the header.
type DType string

// The dtypes of safetensors, in the order of the Dtype enum in huggingface/safetensors
// (safetensors/src/tensor.rs at commit 24b0b28): increasing alignment, then declaration order.
const (
	Bool       DType = "BOOL"
	F4         DType = "F4"
	F6E2M3     DType = "F6_E2M3"
	F6E3M2     DType = "F6_E3M2"
	U8         DType = "U8"
	I8         DType = "I8"
	F8E5M2     DType = "F8_E5M2"
	F8E4M3     DType = "F8_E4M3"
	F8E8M0     DType = "F8_E8M0"
	F8E4M3FNUZ DType = "F8_E4M3FNUZ"
	F8E5M2FNUZ DType = "F8_E5M2FNUZ"
	I16        DType = "I16"
	U16        DType = "U16"
	F16        DType = "F16"
	BF16       DType = "BF16"
	I32        DType = "I32"
	U32        DType = "U32"
	F32        DType = "F32"
	C64        DType = "C64"
	F64        DType = "F64"
	I64        DType = "I64"
	U64        DType = "U64"
)

// dtypeOrder lists every dtype in the Rust enum's order. Write sorts tensors by
// descending position in this list, as safetensors' serializer does.
var dtypeOrder = []DType{
	Bool, F4, F6E2M3, F6E3M2, U8, I8, F8E5M2, F8E4M3, F8E8M0, F8E4M3FNUZ, F8E5M2FNUZ,
	I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
}

var dtypeRank = func() map[DType]int {
	ranks := make(map[DType]int, len(dtypeOrder))
	for i, d := range dtypeOrder {
		ranks[d] = i
	}
	return ranks
}()

// Valid reports whether d is one of the dtypes that safetensors defines.
func (d DType) Valid() bool {
	_, ok := dtypeRank[d]
	return ok
}

// Bits returns the size of one element in bits, or 0 for an unknown dtype. F4 and the
// F6 types are smaller than a byte, so a tensor of them must fill a whole number of bytes.
func (d DType) Bits() int {
	switch d {
	case F4:
		return 4
	case F6E2M3, F6E3M2:
		return 6
	case Bool, U8, I8, F8E5M2, F8E4M3, F8E8M0, F8E4M3FNUZ, F8E5M2FNUZ:
		return 8
	case I16, U16, F16, BF16:
		return 16
	case I32, U32, F32:
		return 32
	case C64, F64, I64, U64:
		return 64
	}
	return 0
}

// isFloat reports whether ReadFloat32 and ReadBF16 can convert d.
func (d DType) isFloat() bool {
	return d == F32 || d == F16 || d == BF16
}

// knownDTypes returns the valid dtype names for error messages.
func knownDTypes() string {
	names := make([]string, len(dtypeOrder))
	for i, d := range dtypeOrder {
		names[i] = string(d)
	}
	return strings.Join(names, ", ")
}

// numElements returns the product of shape. ok is false when a dimension is negative or
// the product overflows int64.
func numElements(shape []int) (n int64, ok bool) {
	n = 1
	for _, dim := range shape {
		if dim < 0 {
			return 0, false
		}
		hi, lo := bits.Mul64(uint64(n), uint64(dim))
		if hi != 0 || lo > uint64(maxInt64) {
			return 0, false
		}
		n = int64(lo)
	}
	return n, true
}

const maxInt64 = 1<<63 - 1

// byteSize returns the number of bytes that n elements of d occupy, or an error that
// completes the sentence "n elements of d ...".
func byteSize(d DType, n int64) (int64, error) {
	hi, lo := bits.Mul64(uint64(n), uint64(d.Bits()))
	if hi >= 8 {
		return 0, errTooManyBytes
	}
	size, rem := bits.Div64(hi, lo, 8)
	switch {
	case rem != 0:
		return 0, errNotWholeBytes
	case size > maxInt64:
		return 0, errTooManyBytes
	}
	return int64(size), nil
}

var (
	errNotWholeBytes = errors.New("do not fill a whole number of bytes")
	errTooManyBytes  = errors.New("need more than 2^63-1 bytes")
)
