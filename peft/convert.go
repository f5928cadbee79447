package peft

import (
	"encoding/binary"
	"math"

	"github.com/ringtune/ringtune/checkpoint"
)

// isFloatDType reports whether merge can read and write weights of dtype d.
func isFloatDType(d checkpoint.DType) bool {
	switch d {
	case checkpoint.F64, checkpoint.F32, checkpoint.BF16, checkpoint.F16:
		return true
	}
	return false
}

// decodeFloat returns element j of little-endian data of dtype d as float64, exactly.
func decodeFloat(data []byte, j int, d checkpoint.DType) float64 {
	switch d {
	case checkpoint.F64:
		return math.Float64frombits(binary.LittleEndian.Uint64(data[8*j:]))
	case checkpoint.F32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(data[4*j:])))
	case checkpoint.BF16:
		return float64(checkpoint.BF16ToFloat32(binary.LittleEndian.Uint16(data[2*j:])))
	case checkpoint.F16:
		return float64(checkpoint.F16ToFloat32(binary.LittleEndian.Uint16(data[2*j:])))
	}
	panic("peft: decodeFloat of dtype " + string(d))
}

// encodeFloat rounds x once to dtype d, to nearest even, and stores it as element j.
func encodeFloat(data []byte, j int, d checkpoint.DType, x float64) {
	switch d {
	case checkpoint.F64:
		binary.LittleEndian.PutUint64(data[8*j:], math.Float64bits(x))
	case checkpoint.F32:
		binary.LittleEndian.PutUint32(data[4*j:], math.Float32bits(float32(x)))
	case checkpoint.BF16:
		binary.LittleEndian.PutUint16(data[2*j:], checkpoint.Float32ToBF16(roundToOdd32(x)))
	case checkpoint.F16:
		binary.LittleEndian.PutUint16(data[2*j:], checkpoint.Float32ToF16(roundToOdd32(x)))
	default:
		panic("peft: encodeFloat of dtype " + string(d))
	}
}

// roundToOdd32 rounds x to float32 toward zero and sets the lowest significand bit when
// the result is inexact. Rounding that result to nearest even in a format with at most
// 22 significand bits (bfloat16 has 8, binary16 11) equals rounding x directly. Rounding
// x to the nearest float32 first can go wrong: 1 + 2^-8 + 2^-30 becomes the bfloat16
// tie 1 + 2^-8, which then rounds to 1.0 instead of 1 + 2^-7.
func roundToOdd32(x float64) float32 {
	f := float32(x)
	if float64(f) == x || math.IsNaN(x) || math.IsInf(float64(f), 0) {
		// Exact, NaN, or beyond the float32 range, where bfloat16 and binary16 overflow
		// to infinity as well.
		return f
	}
	bits := math.Float32bits(f)
	if math.Abs(float64(f)) > math.Abs(x) {
		bits-- // one unit toward zero: the truncated value
	}
	return math.Float32frombits(bits | 1)
}
