#include "textflag.h"

// Constants of bfloat16 rounding, broadcast into ymm registers.
DATA bf16const<>+0(SB)/4, $0x00007fff  // rounding bias below one half
DATA bf16const<>+4(SB)/4, $0x00000001  // mask of the lowest kept bit
DATA bf16const<>+8(SB)/4, $0x7fffffff  // absolute value mask
DATA bf16const<>+12(SB)/4, $0x7f800000 // bits of +Inf; larger magnitudes are NaN
DATA bf16const<>+16(SB)/4, $0x00000040 // quiet bit of a bfloat16 NaN
GLOBL bf16const<>(SB), RODATA|NOPTR, $20

// func addBF16AVX2(dst *float32, src *byte, n int)
// dst[i] += float32(src[i]) for i < n rounded down to a multiple of 8.
TEXT ·addBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   adddone

addloop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VADDPS    (DI), Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       addloop
	VZEROUPPER

adddone:
	RET

// func copyBF16AVX2(dst *float32, src *byte, n int)
// dst[i] = float32(src[i]) for i < n rounded down to a multiple of 8.
TEXT ·copyBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   copydone

copyloop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       copyloop
	VZEROUPPER

copydone:
	RET

// ROUND16 turns the float32 bits in Y0 into bfloat16 bits, zero-extended to 32 bits,
// in Y3: round to nearest even, NaN quieted. Clobbers Y1, Y2 and Y4.
#define ROUND16 \
	VPSRLD    $16, Y0, Y1     \ // hi = u >> 16
	VPAND     Y9, Y1, Y2      \ // lowest kept bit
	VPADDD    Y8, Y2, Y2      \ // bias = 0x7fff + lsb
	VPADDD    Y0, Y2, Y3      \
	VPSRLD    $16, Y3, Y3     \ // (u + bias) >> 16
	VPAND     Y10, Y0, Y4     \ // |u|
	VPCMPGTD  Y11, Y4, Y4     \ // |u| > Inf: NaN
	VPOR      Y12, Y1, Y1     \ // hi | quiet bit
	VPBLENDVB Y4, Y1, Y3, Y3

#define LOADCONST \
	VPBROADCASTD bf16const<>+0(SB), Y8  \
	VPBROADCASTD bf16const<>+4(SB), Y9  \
	VPBROADCASTD bf16const<>+8(SB), Y10 \
	VPBROADCASTD bf16const<>+12(SB), Y11 \
	VPBROADCASTD bf16const<>+16(SB), Y12

// func encodeBF16AVX2(dst *byte, src *float32, n int)
// Writes bfloat16(src[i]) for i < n rounded down to a multiple of 16.
TEXT ·encodeBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $4, CX
	JZ   encdone
	LOADCONST

encloop:
	VMOVDQU   (SI), Y0
	ROUND16
	VMOVDQA   Y3, Y5
	VMOVDQU   32(SI), Y0
	ROUND16
	VPACKUSDW Y3, Y5, Y5       // per lane: 4 words of the first half, then 4 of the second
	VPERMQ    $0xD8, Y5, Y5    // restore element order across lanes
	VMOVDQU   Y5, (DI)
	ADDQ      $64, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       encloop
	VZEROUPPER

encdone:
	RET

// func roundBF16AVX2(x *float32, n int)
// Rounds x[i] to the nearest bfloat16 value in place for i < n rounded down to a
// multiple of 8.
TEXT ·roundBF16AVX2(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX
	SHRQ $3, CX
	JZ   rounddone
	LOADCONST

roundloop:
	VMOVDQU (DI), Y0
	ROUND16
	VPSLLD  $16, Y3, Y3
	VMOVDQU Y3, (DI)
	ADDQ    $32, DI
	DECQ    CX
	JNZ     roundloop
	VZEROUPPER

rounddone:
	RET
