package cpu

import (
	"fmt"
	"os"
	"strings"
)

// kernelEnv is the environment variable that forces a micro-kernel by name.
const kernelEnv = "RINGTUNE_SGEMM_KERNEL"

// tileFunc computes the mr×nr tile c = alpha·(a·b) + beta·c from a packed
// mr×kc micro-panel a and a packed kc×nr micro-panel b. The tile c has row
// stride ldc, kc is at least 1, and c is only written when beta is ±0.
type tileFunc func(kc int, a, b, c []float32, ldc int, alpha, beta float32)

// microKernel is a register-tiled micro-kernel with the cache blocking sizes
// that the driver uses around it.
type microKernel struct {
	name   string
	mr, nr int // rows and columns of the C tile
	tile   tileFunc

	// kc is the depth of a packed block: how many columns of op(A) and rows
	// of op(B) one pass over a tile multiplies.
	kc int
	// aBlockRows is the number of rows of op(A) packed per block, a multiple of mr.
	aBlockRows int
	// bPanelCols is the number of columns of op(B) packed at once, a multiple
	// of nr. Packing whole rows of a wide panel reads op(B) in long
	// contiguous runs when B is not transposed.
	bPanelCols int
	// bBlockCols is the number of columns of the packed B panel that one pass
	// over an A block uses, a multiple of nr. The kc×bBlockCols block is
	// meant to stay in L2.
	bBlockCols int
}

// genericKernel is the pure-Go fallback. Its 4×256 A micro-panel takes 4 KiB
// of L1 and its 256×128 B block 128 KiB of L2.
var genericKernel = &microKernel{
	name: "generic", mr: 4, nr: 4, tile: tileGeneric4x4,
	kc: 256, aBlockRows: 1536, bPanelCols: 3840, bBlockCols: 128,
}

var (
	// supportedKernels lists the kernels this CPU can run, fastest first.
	supportedKernels = detectKernels()
	// activeKernel is the kernel that Sgemm uses.
	activeKernel = selectKernel(os.Getenv(kernelEnv))
)

// Kernel returns the name of the micro-kernel that Sgemm uses: "avx512",
// "avx2" or "generic".
func Kernel() string {
	return activeKernel.name
}

// selectKernel returns the kernel named by forced, or the fastest supported
// kernel when forced is empty. It panics when forced names no kernel this
// CPU supports, because running silently on another kernel would defeat the
// purpose of forcing one.
func selectKernel(forced string) *microKernel {
	if forced == "" {
		return supportedKernels[0]
	}
	if k := findKernel(forced); k != nil {
		return k
	}
	panic(fmt.Sprintf("kernels/cpu: %s=%q names no kernel supported by this CPU; use one of: %s",
		kernelEnv, forced, strings.Join(kernelNames(), ", ")))
}

func findKernel(name string) *microKernel {
	for _, k := range supportedKernels {
		if k.name == name {
			return k
		}
	}
	return nil
}

func kernelNames() []string {
	names := make([]string, len(supportedKernels))
	for i, k := range supportedKernels {
		names[i] = k.name
	}
	return names
}
