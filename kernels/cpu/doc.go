// Package cpu contains the CPU compute kernels of the trainer. Its main entry
// point is Sgemm, a BLAS-style single-precision matrix multiply on row-major
// matrices.
//
// # Structure
//
// Sgemm follows the GotoBLAS/BLIS design. Each call splits C into rectangles
// on tile boundaries, one or, for large products, two per goroutine, with up
// to GOMAXPROCS goroutines (the caller and persistent workers). The goroutines
// take the rectangles in turn, and each runs the blocked loops below on its
// rectangle with its own packing buffers:
//
//	for each panel of bPanelCols columns of op(B)
//	  for each block of kc k steps
//	    pack the kc×bPanelCols panel of op(B) into micro-panels of nr columns
//	    for each block of aBlockRows rows of op(A)
//	      pack the aBlockRows×kc block of op(A) into micro-panels of mr rows
//	      for each block of bBlockCols columns of the B panel      (stays in L2)
//	        for each mr×kc micro-panel of the A block              (stays in L1)
//	          for each kc×nr micro-panel of the B block            (read from L2)
//	            micro-kernel: mr×nr tile of C += A micro-panel · B micro-panel
//
// Packing copies each block into a contiguous, 64-byte aligned buffer in the
// order in which the micro-kernel reads it. Every transpose combination is
// handled by the packing routines, so the micro-kernel reads one layout. Tiles
// at the right and bottom edges are zero-padded in the packed buffers,
// computed into a scratch tile and merged into C, so any m, n and k work.
//
// The micro-kernel vectorizes along the columns of C, which are contiguous in
// row-major storage. Per k step it loads nr values of the B micro-panel into
// vector registers, broadcasts each of the mr values of the A micro-panel and
// executes mr·nr/lanes fused multiply-adds into an mr×nr accumulator tile. The
// tile stays in registers for the whole k loop, and C is read and written once
// per block of kc k steps.
//
// # Block sizes
//
// The avx512 kernel uses kc = 384, bBlockCols = 480, aBlockRows = 1536 and
// bPanelCols = 3840:
//
//   - L1: the 12×384 A micro-panel takes 18 KiB of the 32 or 48 KiB L1 data
//     cache and is reused for each of the 15 B micro-panels of a B block.
//   - L2: the 384×480 B block takes 720 KiB, which fits the L2 of AVX-512
//     Xeons (1 MiB from Skylake-SP, 2 MiB from Sapphire Rapids), and is
//     reused for every A micro-panel of the A block. BLIS uses the same kc
//     and 480 for the L2-resident block of its Skylake-X sgemm
//     (config/skx/bli_cntx_init_skx.c).
//   - L3: the 1536×384 A block (2.25 MiB) and the 384×3840 B panel (5.6 MiB)
//     may spill from a small L3 at little cost. Each value loaded from them is
//     used for up to 480 (A) or 1536 (B) multiply-adds before it is loaded
//     again.
//
// kc also sets how often C is read and written: once per 384 k steps, which
// moves 2·4·12·32 bytes of C per 2·12·32·384 floating-point operations. The
// avx2 and generic kernels use kc = 256 and B blocks of 192 and 128 columns
// (192 and 128 KiB), which fit the 256 KiB L2 of Haswell, the first Intel CPU
// with AVX2 and FMA.
//
// # Kernels
//
// On amd64 the micro-kernels are Go assembly generated with avo by
// internal/asmgen (run go generate in this directory after changing it):
//
//   - avx512: a 12×32 tile in 24 ZMM accumulators (AVX512F).
//   - avx2: a 6×16 tile in 12 YMM accumulators (AVX2 and FMA).
//
// Other architectures, and amd64 CPUs without AVX2 and FMA, use generic, a
// 4×4 tile in pure Go. Sgemm picks the first kernel in that order that the CPU
// supports, as detected by golang.org/x/sys/cpu. The environment variable
// RINGTUNE_SGEMM_KERNEL, read once at program start, forces one of the names
// above, for example RINGTUNE_SGEMM_KERNEL=generic to test the fallback. A
// name that the CPU does not support makes the program panic at start. Kernel
// returns the name of the kernel in use.
package cpu
