//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package collective

import "unsafe"

// unsafeBytes views x's memory as bytes; on little-endian targets that is the wire
// encoding of float32, so fp32 payloads are sent without a copy.
func unsafeBytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(x)*4)
}

// uint16View views little-endian bfloat16 bytes as uint16 values; b may be unaligned,
// which x86 and arm64 loads allow.
func uint16View(b []byte) []uint16 {
	if len(b) < 2 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// uint32View views float32 values as their IEEE 754 bits.
func uint32View(x []float32) []uint32 {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&x[0])), len(x))
}
