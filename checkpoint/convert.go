package checkpoint

import (
	"encoding/binary"
	"math"
)

// BF16ToFloat32 widens a bfloat16 bit pattern to float32. The conversion is exact
// because bfloat16 is the upper half of a float32.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBF16 rounds f to the nearest bfloat16, ties to even, and returns its bit
// pattern. Values beyond the largest bfloat16 become infinities. A NaN stays a NaN with
// its sign and top payload bits and the quiet bit set. PyTorch 1.13 on x86 turned both
// NaNs of testdata/torch_fixture.json into 0xFFFF, so NaN bit patterns can differ from
// its output.
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToFloat32 widens an IEEE 754 binary16 bit pattern to float32. The conversion is
// exact, including subnormals, infinities and NaN payloads.
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)

	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0:
		// A subnormal is mant·2^-24. Shift the leading 1 into the implicit bit and
		// lower the float32 exponent by one per shift, starting from 2^-14 (bias 113).
		e := uint32(113)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	default:
		// Rebias the exponent from 15 to 127.
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	}
}

// Float32ToF16 rounds f to the nearest IEEE 754 binary16, ties to even, and returns its
// bit pattern. Results below the smallest normal become subnormals or signed zeros,
// values from 65520 up become infinities, and a NaN keeps its sign and top payload bits
// with the quiet bit set.
func Float32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	abs := b & 0x7fffffff

	switch {
	case abs > 0x7f800000:
		return sign | 0x7e00 | uint16(abs>>13)&0x3ff
	case abs >= 0x477ff000:
		// 65520 is halfway between 65504, the largest binary16, and 65536. The tie goes to
		// the even neighbour, 65536, which overflows to infinity.
		return sign | 0x7c00
	case abs >= 0x38800000:
		// Normal in binary16 (at least 2^-14). Rebias the exponent by 112 and round the
		// 23-bit mantissa to 10 bits. A carry out of the mantissa raises the exponent.
		h := abs - 0x38000000
		h += 0xfff + (h>>13)&1
		return sign | uint16(h>>13)
	case abs < 0x33000000:
		// Below 2^-25, half the smallest subnormal, including float32 subnormals.
		// 2^-25 itself is a tie that goes to the even zero.
		return sign
	default:
		// Subnormal in binary16: the result is m·2^-24 with the 24-bit significand
		// shifted right by 126 - exponent (14 to 24 places), rounded to even. A carry
		// to m = 1024 yields the smallest normal, 2^-14.
		e := abs >> 23
		sig := abs&0x7fffff | 0x800000
		shift := 126 - e
		m := sig >> shift
		rem := sig & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
}

// decodeFloat32 converts little-endian elements of d (F32, F16 or BF16) in src to dst.
// len(src) must be len(dst) times the element size.
func decodeFloat32(d DType, dst []float32, src []byte) {
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	}
}

// decodeBF16 converts little-endian elements of d (F32, F16 or BF16) in src to bfloat16
// bit patterns, rounding F32 and F16 values to nearest even.
func decodeBF16(d DType, dst []uint16, src []byte) {
	switch d {
	case BF16:
		for i := range dst {
			dst[i] = binary.LittleEndian.Uint16(src[2*i:])
		}
	case F32:
		for i := range dst {
			dst[i] = Float32ToBF16(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
		}
	case F16:
		for i := range dst {
			dst[i] = Float32ToBF16(F16ToFloat32(binary.LittleEndian.Uint16(src[2*i:])))
		}
	}
}

// encodeFloat32 writes src as little-endian elements of d (F32, F16 or BF16) to dst,
// rounding to nearest even. len(dst) must be len(src) times the element size.
func encodeFloat32(d DType, dst []byte, src []float32) {
	switch d {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], Float32ToBF16(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], Float32ToF16(v))
		}
	}
}

// encodeBF16 writes bfloat16 bit patterns in src as little-endian elements of d (F32,
// F16 or BF16) to dst. BF16 and F32 are exact, and F16 rounds to nearest even.
func encodeBF16(d DType, dst []byte, src []uint16) {
	switch d {
	case BF16:
		for i, h := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], h)
		}
	case F32:
		for i, h := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], uint32(h)<<16)
		}
	case F16:
		for i, h := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], Float32ToF16(BF16ToFloat32(h)))
		}
	}
}
