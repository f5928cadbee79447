//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package collective

import "unsafe"

// unsafeBytes views x's memory as bytes; on little-endian targets that is the wire
// encoding of float32, so fp32 payloads are sent without a copy.
func unsafeBytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(x)*4)
}
