// Command widengen writes the amd64 bfloat16-to-float32 widening routines of
// package cpu with avo.
//
// Run it through go generate in kernels/cpu, which passes the output paths:
//
//	go run ./internal/widengen -out widen_amd64.s -stubs widen_stubs_amd64.go -pkg cpu
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// widenSpec describes one widening routine. Each vector register takes lanes
// bfloat16 values (2·lanes bytes of src) and holds lanes float32 values.
type widenSpec struct {
	name  string
	doc   []string
	lanes int
	regs  []VecPhysical // vector registers used per loop iteration
}

func main() {
	generateWiden(widenSpec{
		name: "widenBF16AVX512",
		doc: []string{
			"widenBF16AVX512 sets dst[i] to the float32 with the bits src[i]<<16 for",
			"i < n. n must be a multiple of 16. Requires AVX512F.",
		},
		lanes: 16,
		regs:  []VecPhysical{Z0, Z1, Z2, Z3},
	})
	generateWiden(widenSpec{
		name: "widenBF16AVX2",
		doc: []string{
			"widenBF16AVX2 sets dst[i] to the float32 with the bits src[i]<<16 for",
			"i < n. n must be a multiple of 8. Requires AVX2.",
		},
		lanes: 8,
		regs:  []VecPhysical{Y0, Y1, Y2, Y3},
	})
	Generate()
}

// generateWiden emits a loop that widens len(s.regs) vectors per iteration,
// then one vector at a time. Each vector is a zero extension of the 16-bit
// values to 32 bits (VPMOVZXWD) and a left shift by 16 (VPSLLD).
func generateWiden(s widenSpec) {
	TEXT(s.name, NOSPLIT, "func(dst *float32, src *uint16, n int)")
	Pragma("noescape")
	Doc(s.doc...)

	dst, src, n := RDI, RSI, RCX
	Load(Param("dst"), dst)
	Load(Param("src"), src)
	Load(Param("n"), n)

	const srcSize, dstSize = 2, 4
	unrolled := len(s.regs) * s.lanes
	Comment(fmt.Sprintf("Main loop: %d values per iteration.", unrolled))
	CMPQ(n, U32(unrolled))
	JB(LabelRef(s.name + "_single"))
	Label(s.name + "_loop")
	for v, r := range s.regs {
		VPMOVZXWD(Mem{Base: src, Disp: v * s.lanes * srcSize}, r)
	}
	for _, r := range s.regs {
		VPSLLD(U8(16), r, r)
	}
	for v, r := range s.regs {
		VMOVUPS(r, Mem{Base: dst, Disp: v * s.lanes * dstSize})
	}
	ADDQ(U32(unrolled*srcSize), src)
	ADDQ(U32(unrolled*dstSize), dst)
	SUBQ(U32(unrolled), n)
	CMPQ(n, U32(unrolled))
	JAE(LabelRef(s.name + "_loop"))

	Label(s.name + "_single")
	Comment(fmt.Sprintf("Remaining values, %d at a time.", s.lanes))
	TESTQ(n, n)
	JZ(LabelRef(s.name + "_done"))
	Label(s.name + "_singleloop")
	r := s.regs[0]
	VPMOVZXWD(Mem{Base: src}, r)
	VPSLLD(U8(16), r, r)
	VMOVUPS(r, Mem{Base: dst})
	ADDQ(U32(s.lanes*srcSize), src)
	ADDQ(U32(s.lanes*dstSize), dst)
	SUBQ(U32(s.lanes), n)
	JNZ(LabelRef(s.name + "_singleloop"))

	Label(s.name + "_done")
	VZEROUPPER()
	RET()
}
