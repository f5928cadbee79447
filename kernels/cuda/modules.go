package cuda

import (
	"embed"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"unsafe"

	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

//go:embed kernels/*.cu kernels/*.cuh
var kernelFiles embed.FS

// commonHeader is prepended to every .cu file, because NVRTC compiles each
// source alone and the kernels include no header.
const commonHeader = "kernels/common.cuh"

// kernelSource is one compilation unit: a .cu file with the common header.
type kernelSource struct {
	Name   string // the .cu file's name, such as "attention.cu"
	Source string
}

// kernelSources returns every .cu file with the common header prepended, in
// name order.
func kernelSources() ([]kernelSource, error) {
	header, err := kernelFiles.ReadFile(commonHeader)
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: read the embedded %s: %w", commonHeader, err)
	}
	entries, err := kernelFiles.ReadDir("kernels")
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: list the embedded kernels: %w", err)
	}
	var sources []kernelSource
	for _, entry := range entries {
		if !strings.HasSuffix(entry.Name(), ".cu") {
			continue
		}
		body, err := kernelFiles.ReadFile(path.Join("kernels", entry.Name()))
		if err != nil {
			return nil, fmt.Errorf("kernels/cuda: read the embedded %s: %w", entry.Name(), err)
		}
		// The #line directive makes NVRTC's messages name the .cu file and
		// its own line numbers.
		src := string(header) + "\n#line 1 \"" + entry.Name() + "\"\n" + string(body)
		sources = append(sources, kernelSource{Name: entry.Name(), Source: src})
	}
	slices.SortFunc(sources, func(a, b kernelSource) int { return strings.Compare(a.Name, b.Name) })
	return sources, nil
}

// compileOptions are the NVRTC options of every kernel besides the
// architecture. NVRTC's defaults, IEEE division and square root without
// flushing denormals, stay in force.
var compileOptions = []string{"--std=c++17"}

// functions holds every kernel the backend launches.
type functions struct {
	convertF32ToBF16, convertBF16ToF32, fillU16 cudalib.Function
	add, scale                                  cudalib.Function
	swigluForward, swigluBackward               cudalib.Function
	adamw, sumSquares                           cudalib.Function
	embeddingForwardF32, embeddingForwardBF16   cudalib.Function
	embeddingBackward                           cudalib.Function
	rmsNormForward, rmsNormBackwardDX           cudalib.Function
	rmsNormDWeightPartial, rmsNormDWeightFinish cudalib.Function
	rope                                        cudalib.Function
	attentionRowDot                             cudalib.Function
	// Indexed by attentionBuild: head sizes up to 64, 128 and 256.
	attentionForward, attentionBackwardDQ, attentionBackwardDKDV [len(attentionBuilds)]cudalib.Function
	ceGatherRowsF32, ceGatherRowsBF16, ceScatterRows             cudalib.Function
	ceSoftmaxRows                                                cudalib.Function
}

// attentionBuilds are the maximum head sizes the attention kernels are built
// for, smallest first.
var attentionBuilds = [...]int{64, 128, 256}

// loadKernels compiles every source for the device (or reads the image from
// cacheDir) and resolves the kernels.
func (b *Backend) loadKernels(cacheDir string) error {
	nvrtc := b.ctx.NVRTC()
	sources, err := kernelSources()
	if err != nil {
		return err
	}
	arch := b.device.Arch()
	modules := map[string]*cudalib.Module{}
	for _, src := range sources {
		image, err := cudalib.CompileCached(nvrtc, cacheDir, src.Source, src.Name, arch, compileOptions)
		if err != nil {
			return fmt.Errorf("kernels/cuda: compile %s for %s: %w", src.Name, arch, err)
		}
		module, err := b.ctx.LoadModule(image)
		if err != nil {
			return fmt.Errorf("kernels/cuda: load the module of %s: %w", src.Name, err)
		}
		modules[src.Name] = module
		b.modules = append(b.modules, module)
	}

	for _, k := range b.fn.table() {
		f, err := modules[k.file].Function(k.name)
		if err != nil {
			return fmt.Errorf("kernels/cuda: kernel %s of %s: %w", k.name, k.file, err)
		}
		*k.function = f
	}
	return nil
}

// kernelRef names a kernel and the field of functions that holds it.
type kernelRef struct {
	file, name string
	function   *cudalib.Function
}

// table lists every kernel of fn with its source file.
func (fn *functions) table() []kernelRef {
	refs := []kernelRef{
		{"elementwise.cu", "convert_f32_to_bf16", &fn.convertF32ToBF16},
		{"elementwise.cu", "convert_bf16_to_f32", &fn.convertBF16ToF32},
		{"elementwise.cu", "fill_u16", &fn.fillU16},
		{"elementwise.cu", "add_f32", &fn.add},
		{"elementwise.cu", "scale_f32", &fn.scale},
		{"elementwise.cu", "swiglu_forward", &fn.swigluForward},
		{"elementwise.cu", "swiglu_backward", &fn.swigluBackward},
		{"elementwise.cu", "adamw", &fn.adamw},
		{"elementwise.cu", "sum_squares", &fn.sumSquares},
		{"elementwise.cu", "embedding_forward_f32", &fn.embeddingForwardF32},
		{"elementwise.cu", "embedding_forward_bf16", &fn.embeddingForwardBF16},
		{"elementwise.cu", "embedding_backward", &fn.embeddingBackward},
		{"rmsnorm.cu", "rmsnorm_forward", &fn.rmsNormForward},
		{"rmsnorm.cu", "rmsnorm_backward_dx", &fn.rmsNormBackwardDX},
		{"rmsnorm.cu", "rmsnorm_dweight_partial", &fn.rmsNormDWeightPartial},
		{"rmsnorm.cu", "rmsnorm_dweight_finish", &fn.rmsNormDWeightFinish},
		{"rope.cu", "rope", &fn.rope},
		{"attention.cu", "attention_row_dot", &fn.attentionRowDot},
		{"crossentropy.cu", "ce_gather_rows_f32", &fn.ceGatherRowsF32},
		{"crossentropy.cu", "ce_gather_rows_bf16", &fn.ceGatherRowsBF16},
		{"crossentropy.cu", "ce_scatter_rows", &fn.ceScatterRows},
		{"crossentropy.cu", "ce_softmax_rows", &fn.ceSoftmaxRows},
	}
	for i, hs := range attentionBuilds {
		refs = append(refs,
			kernelRef{"attention.cu", fmt.Sprintf("attention_forward_hs%d", hs), &fn.attentionForward[i]},
			kernelRef{"attention.cu", fmt.Sprintf("attention_backward_dq_hs%d", hs), &fn.attentionBackwardDQ[i]},
			kernelRef{"attention.cu", fmt.Sprintf("attention_backward_dkdv_hs%d", hs), &fn.attentionBackwardDKDV[i]},
		)
	}
	return refs
}

// loadNVRTC finds and loads NVRTC alone, without the driver or a GPU: first
// in $RINGTUNE_NVRTC_PATH (a folder), then where the other CUDA libraries are
// sought. The compile tests use it.
func loadNVRTC() (*cudalib.NVRTC, error) {
	dirs := nvrtcSearchDirs()
	paths, err := cudalib.Find([]cudalib.Library{cudalib.NVRTCLibrary}, dirs)
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: %w", err)
	}
	nvrtc, err := cudalib.LoadNVRTC(paths)
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: %w", err)
	}
	return nvrtc, nil
}

// launch queues kernel f on the compute stream. args point to the kernel's
// arguments, in order and of the C types' sizes. A failure is kept for Sync.
func (b *Backend) launch(f cudalib.Function, grid, block [3]uint32, sharedBytes int, args ...unsafe.Pointer) {
	if b.err != nil {
		return
	}
	if sharedBytes > 48<<10 && b.maxShared[f.Name()] < sharedBytes {
		if err := b.ctx.FuncSetMaxDynamicShared(f, sharedBytes); err != nil {
			b.fail(fmt.Errorf("kernels/cuda: allow %s %d bytes of shared memory: %w", f.Name(), sharedBytes, err))
			return
		}
		b.maxShared[f.Name()] = sharedBytes
	}
	if err := b.ctx.Launch(f, grid, block, uint32(sharedBytes), b.compute, args...); err != nil {
		b.fail(fmt.Errorf("kernels/cuda: launch %s: %w", f.Name(), err))
	}
}

// elementGrid returns a grid of blocks of threads for a grid-stride loop over
// n elements: enough blocks to fill the device, and no more than needed.
func elementGrid(n, threads int) [3]uint32 {
	const maxBlocks = 4096
	blocks := min(maxBlocks, (n+threads-1)/threads)
	return [3]uint32{uint32(max(1, blocks)), 1, 1}
}

// nvrtcSearchDirs returns $RINGTUNE_NVRTC_PATH, where scripts/install-nvrtc.sh
// installs NVRTC, before the usual CUDA library folders.
func nvrtcSearchDirs() []string {
	dirs := cudalib.SearchDirs(os.Getenv)
	if dir := os.Getenv("RINGTUNE_NVRTC_PATH"); dir != "" {
		dirs = append([]string{dir}, dirs...)
	}
	return dirs
}
