package collective

import (
	"encoding/binary"
	"math"
)

// The kernels below read wire payloads that arrive as several byte slices whose
// boundaries may fall inside an element. A carry of at most 3 bytes bridges them.

// wireCombine selects what to do with each decoded element.
type wireCombine int

const (
	combineAdd  wireCombine = iota // dst[i] += v
	combineCopy                    // dst[i] = v
)

// applyWire decodes the elements in src (dtype elemBytes wide) and adds them to, or
// copies them into, dst. The total length of src must be len(dst)·elemBytes.
func applyWire(dst []float32, src [][]byte, dtype WireDType, combine wireCombine) {
	elem := elemBytes(dtype)
	var carry [4]byte
	nCarry := 0
	i := 0
	for _, b := range src {
		if nCarry > 0 {
			k := copy(carry[nCarry:elem], b)
			nCarry += k
			b = b[k:]
			if nCarry < elem {
				continue
			}
			v := decodeElem(carry[:elem], dtype)
			if combine == combineAdd {
				dst[i] += v
			} else {
				dst[i] = v
			}
			i++
			nCarry = 0
		}
		whole := len(b) / elem
		if whole > 0 {
			d := dst[i : i+whole]
			if dtype == Float32 {
				if combine == combineAdd {
					addF32(d, b[:whole*4])
				} else {
					copyF32(d, b[:whole*4])
				}
			} else {
				if combine == combineAdd {
					addBF16(d, b[:whole*2])
				} else {
					copyBF16(d, b[:whole*2])
				}
			}
			i += whole
		}
		nCarry = copy(carry[:], b[whole*elem:])
	}
}

func elemBytes(d WireDType) int {
	if d == BFloat16 {
		return 2
	}
	return 4
}

func decodeElem(b []byte, d WireDType) float32 {
	if d == BFloat16 {
		return math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16)
	}
	return math.Float32frombits(binary.LittleEndian.Uint32(b))
}

// addF32Generic: dst (n) += little-endian float32 src (4n bytes), one element at a time.
func addF32Generic(dst []float32, src []byte) {
	src = src[:len(dst)*4]
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// copyF32: dst (n) = little-endian float32 src (4n bytes). On little-endian targets
// that is a plain memory copy.
func copyF32(dst []float32, src []byte) {
	copy(float32Bytes(dst), src[:len(dst)*4])
}

// addBF16Generic: dst (n) += little-endian bfloat16 src (2n bytes), one element at a time.
func addBF16Generic(dst []float32, src []byte) {
	in := uint16View(src[:len(dst)*2])
	for i, h := range in {
		dst[i] += math.Float32frombits(uint32(h) << 16)
	}
}

func copyBF16Generic(dst []float32, src []byte) {
	in := uint16View(src[:len(dst)*2])
	for i, h := range in {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
}

// toBF16 rounds a float32 to bfloat16 bits, to nearest with ties to even. NaN stays a
// quiet NaN with its sign; infinities and overflow to infinity behave as in IEEE 754.
func toBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x0040
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// encodeBF16Generic writes src as little-endian bfloat16 into dst (2·len(src) bytes).
func encodeBF16Generic(dst []byte, src []float32) {
	out := uint16View(dst[:len(src)*2])
	bits := uint32View(src)
	for i, u := range bits {
		out[i] = bf16Bits(u)
	}
}

// roundBF16Generic rounds every element of x to the nearest bfloat16 value in place.
func roundBF16Generic(x []float32) {
	bits := uint32View(x)
	for i, u := range bits {
		bits[i] = uint32(bf16Bits(u)) << 16
	}
}

// bf16Bits is toBF16 on the bits of a float32, written so that the compiler emits no
// branch: NaN inputs select the quieted truncation, all others round to nearest even.
func bf16Bits(u uint32) uint16 {
	rounded := (u + 0x7fff + (u>>16)&1) >> 16
	quiet := u>>16 | 0x0040
	if u&0x7fffffff > 0x7f800000 {
		rounded = quiet
	}
	return uint16(rounded)
}

// float32Bytes views x as its little-endian bytes. ringtune only builds for
// little-endian targets (see endian.go).
func float32Bytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafeBytes(x)
}
