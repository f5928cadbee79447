// Command asmgen writes the amd64 micro-kernels of package cpu with avo.
//
// Run it through go generate in kernels/cpu, which passes the output paths:
//
//	go run ./internal/asmgen -out sgemm_amd64.s -stubs sgemm_stubs_amd64.go -pkg cpu
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// kernelSpec describes one register-tiled micro-kernel. The kernel computes a
// rows × (vecs·lanes) tile of C from a packed A micro-panel (rows values per
// k step) and a packed B micro-panel (vecs·lanes values per k step).
type kernelSpec struct {
	name  string
	doc   []string
	rows  int // MR: rows of C in the tile, one broadcast of A each per k step
	vecs  int // vector registers per row of the tile
	lanes int // float32 lanes per vector register

	acc   []VecPhysical // rows·vecs accumulators, row-major
	bvec  []VecPhysical // vecs registers for one k step of the B micro-panel
	bcast []VecPhysical // broadcast registers, used in turn
	zero  func(r VecPhysical)

	unroll int // k steps per iteration of the main loop
	// prefetchDistance is how many bytes ahead of the current k step the main
	// loop prefetches the B micro-panel into L1, or 0 for no software prefetch.
	prefetchDistance int
}

func main() {
	zmm := []VecPhysical{
		Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15,
		Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31,
	}
	ymm := []VecPhysical{
		Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15,
	}

	generateKernel(kernelSpec{
		name: "sgemmKernel12x32AVX512",
		doc: []string{
			"sgemmKernel12x32AVX512 computes the 12×32 tile c = alpha·(a·b) + beta·c,",
			"where a is a packed 12×kc micro-panel (12 values per k step), b is a packed",
			"kc×32 micro-panel (32 values per k step) and c has a row stride of ldc",
			"elements. kc must be at least 1. When beta is ±0, c is only written, so NaN",
			"and Inf in c do not propagate. Requires AVX512F.",
		},
		rows: 12, vecs: 2, lanes: 16,
		acc:              zmm[0:24],
		bvec:             zmm[24:26],
		bcast:            zmm[26:30],
		zero:             func(r VecPhysical) { VPXORD(r, r, r) },
		unroll:           4,
		prefetchDistance: 1024,
	})

	generateKernel(kernelSpec{
		name: "sgemmKernel6x16AVX2",
		doc: []string{
			"sgemmKernel6x16AVX2 computes the 6×16 tile c = alpha·(a·b) + beta·c,",
			"where a is a packed 6×kc micro-panel (6 values per k step), b is a packed",
			"kc×16 micro-panel (16 values per k step) and c has a row stride of ldc",
			"elements. kc must be at least 1. When beta is ±0, c is only written, so NaN",
			"and Inf in c do not propagate. Requires AVX2 and FMA.",
		},
		rows: 6, vecs: 2, lanes: 8,
		acc:              ymm[0:12],
		bvec:             ymm[12:14],
		bcast:            ymm[14:16],
		zero:             func(r VecPhysical) { VXORPS(r, r, r) },
		unroll:           4,
		prefetchDistance: 512,
	})

	Generate()
}

func generateKernel(s kernelSpec) {
	if len(s.acc) != s.rows*s.vecs || len(s.bvec) != s.vecs {
		panic(fmt.Sprintf("%s: register counts do not match the tile", s.name))
	}
	const floatSize = 4
	rowBytes := s.vecs * s.lanes * floatSize // one row of the tile, one k step of B
	aStep := s.rows * floatSize              // one k step of A

	TEXT(s.name, NOSPLIT, "func(kc int, a *float32, b *float32, c *float32, ldc int, alpha float32, beta float32)")
	Pragma("noescape")
	Doc(s.doc...)

	kc, a, b, c, ldc := RCX, RSI, RDI, RDX, R8
	rowPtr, iterations, betaBits := R9, R10, EAX
	Load(Param("kc"), kc)
	Load(Param("a"), a)
	Load(Param("b"), b)
	Load(Param("c"), c)
	Load(Param("ldc"), ldc)
	SHLQ(U8(2), ldc) // ldc in bytes from here on

	Comment("Zero the accumulators and prefetch the C tile, which is read after the k loop.")
	for _, r := range s.acc {
		s.zero(r)
	}
	MOVQ(c, rowPtr)
	for range s.rows {
		for off := 0; off < rowBytes; off += 64 {
			PREFETCHT0(Mem{Base: rowPtr, Disp: off})
		}
		ADDQ(ldc, rowPtr)
	}

	Comment(fmt.Sprintf("Main loop: %d k steps per iteration.", s.unroll))
	MOVQ(kc, iterations)
	SHRQ(U8(bitsFor(s.unroll)), iterations)
	JZ(LabelRef(s.name + "_tail"))
	Label(s.name + "_loop")
	s.unrolledSteps(a, b)
	DECQ(iterations)
	JNZ(LabelRef(s.name + "_loop"))

	Label(s.name + "_tail")
	Comment("Remaining k steps, one at a time.")
	ANDQ(U32(s.unroll-1), kc)
	JZ(LabelRef(s.name + "_update"))
	Label(s.name + "_tailloop")
	s.step(a, b, 0, 0)
	ADDQ(U32(aStep), a)
	ADDQ(U32(rowBytes), b)
	DECQ(kc)
	JNZ(LabelRef(s.name + "_tailloop"))

	Label(s.name + "_update")
	Comment("Scale by alpha, then add beta·c unless beta is ±0.")
	alpha, err := Param("alpha").Resolve()
	if err != nil {
		panic(err)
	}
	beta, err := Param("beta").Resolve()
	if err != nil {
		panic(err)
	}
	scale := s.bvec[0]
	VBROADCASTSS(alpha.Addr, scale)
	for _, r := range s.acc {
		VMULPS(scale, r, r)
	}
	MOVL(beta.Addr, betaBits)
	ANDL(U32(0x7fffffff), betaBits)
	JZ(LabelRef(s.name + "_store"))

	VBROADCASTSS(beta.Addr, scale)
	for row := range s.rows {
		for v := range s.vecs {
			acc := s.acc[row*s.vecs+v]
			VFMADD231PS(Mem{Base: c, Disp: v * s.lanes * floatSize}, scale, acc)
			VMOVUPS(acc, Mem{Base: c, Disp: v * s.lanes * floatSize})
		}
		ADDQ(ldc, c)
	}
	VZEROUPPER()
	RET()

	Label(s.name + "_store")
	for row := range s.rows {
		for v := range s.vecs {
			VMOVUPS(s.acc[row*s.vecs+v], Mem{Base: c, Disp: v * s.lanes * floatSize})
		}
		ADDQ(ldc, c)
	}
	VZEROUPPER()
	RET()
}

// unrolledSteps emits one iteration of the main loop: s.unroll k steps, the
// software prefetch of the B micro-panel and the pointer updates.
func (s kernelSpec) unrolledSteps(a, b GPPhysical) {
	rowBytes := s.vecs * s.lanes * 4
	for u := range s.unroll {
		s.step(a, b, u*s.rows*4, u*rowBytes)
	}
	if s.prefetchDistance > 0 {
		for off := 0; off < s.unroll*rowBytes; off += 64 {
			PREFETCHT0(Mem{Base: b, Disp: s.prefetchDistance + off})
		}
	}
	ADDQ(U32(s.unroll*s.rows*4), a)
	ADDQ(U32(s.unroll*rowBytes), b)
}

// step emits one k step: load a row of the B micro-panel, then for each row of
// the tile broadcast one value of A and multiply-add it into the accumulators.
func (s kernelSpec) step(a, b GPPhysical, aOffset, bOffset int) {
	for v := range s.vecs {
		VMOVUPS(Mem{Base: b, Disp: bOffset + v*s.lanes*4}, s.bvec[v])
	}
	for row := range s.rows {
		t := s.bcast[row%len(s.bcast)]
		VBROADCASTSS(Mem{Base: a, Disp: aOffset + row*4}, t)
		for v := range s.vecs {
			VFMADD231PS(s.bvec[v], t, s.acc[row*s.vecs+v])
		}
	}
}

// bitsFor returns log2(n) for a power of two n.
func bitsFor(n int) int {
	bits := 0
	for 1<<bits < n {
		bits++
	}
	if 1<<bits != n {
		panic(fmt.Sprintf("unroll factor %d is not a power of two", n))
	}
	return bits
}
