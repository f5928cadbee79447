package cpu

import "golang.org/x/sys/cpu"

//go:generate go run ./internal/asmgen -out sgemm_amd64.s -stubs sgemm_stubs_amd64.go -pkg cpu

// avx512Kernel keeps a 12×384 A micro-panel (18 KiB) in L1 and a 384×480 B
// block (720 KiB) in L2. The package documentation explains the block sizes.
var avx512Kernel = &microKernel{
	name: "avx512", mr: 12, nr: 32, tile: tileAVX512,
	kc: 384, aBlockRows: 1536, bPanelCols: 3840, bBlockCols: 480,
}

// avx2Kernel keeps a 6×256 A micro-panel (6 KiB) in L1 and a 256×192 B block
// (192 KiB) in L2, which fits the 256 KiB L2 of Haswell, the first Intel CPU
// with AVX2 and FMA.
var avx2Kernel = &microKernel{
	name: "avx2", mr: 6, nr: 16, tile: tileAVX2,
	kc: 256, aBlockRows: 1536, bPanelCols: 3840, bBlockCols: 192,
}

func detectKernels() []*microKernel {
	var kernels []*microKernel
	if cpu.X86.HasAVX512F {
		kernels = append(kernels, avx512Kernel)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		kernels = append(kernels, avx2Kernel)
	}
	return append(kernels, genericKernel)
}

// tileAVX512 checks the slice bounds that the assembly relies on, so that a
// driver bug panics instead of corrupting memory.
func tileAVX512(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	_ = a[12*kc-1]
	_ = b[32*kc-1]
	_ = c[11*ldc+31]
	sgemmKernel12x32AVX512(kc, &a[0], &b[0], &c[0], ldc, alpha, beta)
}

func tileAVX2(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	_ = a[6*kc-1]
	_ = b[16*kc-1]
	_ = c[5*ldc+15]
	sgemmKernel6x16AVX2(kc, &a[0], &b[0], &c[0], ldc, alpha, beta)
}
