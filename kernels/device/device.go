// Package device opens the compute backend that a --device value names: the
// CPU backend of package kernels/cpu, or the CUDA backend of package
// kernels/cuda.
//
// The nocuda build tag leaves kernels/cuda out of the binary. kernels/cuda
// loads the CUDA libraries at run time through purego, which makes even a
// CGO_ENABLED=0 binary link libc dynamically, so only a binary built with
// -tags nocuda is statically linked. Such a binary rejects --device cuda.
package device

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// Kind is the kind of device a Spec names.
type Kind int

const (
	// CPU computes with the Go kernels of package kernels/cpu.
	CPU Kind = iota
	// CUDA computes on an NVIDIA GPU with package kernels/cuda.
	CUDA
)

// Spec is a parsed --device value. The zero Spec is the CPU.
type Spec struct {
	Kind Kind
	// Index is the CUDA device ordinal of "cuda:N", or -1 for "cuda" without an
	// ordinal, which Open reads as device 0. It is 0 for the CPU.
	Index int
}

// usage lists the values that Parse accepts, for error messages.
const usage = "use cpu, cuda or cuda:N, where N is the ordinal of the GPU (0 for the first, as nvidia-smi numbers them)"

// Parse parses a --device value: "cpu", "cuda" or "cuda:N" with N ≥ 0.
func Parse(value string) (Spec, error) {
	switch value {
	case "cpu":
		return Spec{Kind: CPU}, nil
	case "cuda":
		return Spec{Kind: CUDA, Index: -1}, nil
	}
	ordinal, ok := strings.CutPrefix(value, "cuda:")
	if !ok {
		return Spec{}, fmt.Errorf("invalid --device %q: %s", value, usage)
	}
	n, err := strconv.ParseUint(ordinal, 10, 31)
	if err != nil {
		return Spec{}, fmt.Errorf("invalid --device %q: the GPU ordinal after \"cuda:\" must be an integer from 0 to %d, such as cuda:0", value, 1<<31-1)
	}
	return Spec{Kind: CUDA, Index: int(n)}, nil
}

// String returns the spec in the form Parse reads: "cpu", "cuda" or "cuda:N".
func (s Spec) String() string {
	switch {
	case s.Kind == CPU:
		return "cpu"
	case s.Kind == CUDA && s.Index < 0:
		return "cuda"
	case s.Kind == CUDA:
		return "cuda:" + strconv.Itoa(s.Index)
	}
	return fmt.Sprintf("device kind %d", int(s.Kind))
}

// Ordinal returns the CUDA device ordinal that Open uses: Index, or 0 for
// "cuda" without an ordinal.
func (s Spec) Ordinal() int { return max(s.Index, 0) }

// Options configure the backend that Open returns. Each backend ignores the
// fields of the other.
type Options struct {
	// Workers is the number of goroutines of the CPU backend; 0 means
	// GOMAXPROCS (cpu.Options.Workers).
	Workers int
	// CrossEntropyChunkRows is the number of rows whose logits the loss holds
	// at a time, on either backend; 0 means the backend's default.
	CrossEntropyChunkRows int
	// CacheDir is the folder where the CUDA backend keeps the kernels that
	// NVRTC compiled, so that later runs skip the compilation. "" means the
	// backend's default, $RINGTUNE_CACHE/cuda-kernels or
	// ~/.cache/ringtune/cuda-kernels (cuda.Options.CacheDir).
	CacheDir string
	// StrictFP32 makes the CUDA backend multiply F32 operands in fp32 instead
	// of TF32 (cuda.Options.StrictFP32).
	StrictFP32 bool
}

// errNoCUDA is the error of --device cuda in a binary built with -tags nocuda.
var errNoCUDA = errors.New("this ringtune binary was built with -tags nocuda (the static CPU-only build): use a build without the tag, or --device cpu")

// CheckBuilt returns the error that Open returns for a spec that this binary
// cannot open on any host: CUDA in a binary built with -tags nocuda. It loads
// nothing, so a command can check its flags before it starts work.
func CheckBuilt(spec Spec) error {
	if spec.Kind == CUDA && !CUDABuilt {
		return fmt.Errorf("--device %s: %w", spec, errNoCUDA)
	}
	return nil
}

// Probe checks that this host can open spec, without building the backend: for
// CUDA that the libraries load and the device exists. The CPU always can.
func Probe(spec Spec) error {
	if spec.Kind != CUDA {
		return nil
	}
	if err := probeCUDA(spec.Ordinal()); err != nil {
		return fmt.Errorf("--device %s: %w", spec, err)
	}
	return nil
}

// Open returns the backend of spec. The CPU path loads no CUDA library. For
// CUDA it returns the error of kernels/cuda, such as a missing library or
// device, with the --device value added.
func Open(spec Spec, opts Options) (kernels.Backend, error) {
	switch spec.Kind {
	case CPU:
		backend, err := cpu.New(cpu.Options{Workers: opts.Workers, CrossEntropyChunkRows: opts.CrossEntropyChunkRows})
		if err != nil {
			return nil, err
		}
		return backend, nil
	case CUDA:
		backend, err := openCUDA(spec.Ordinal(), opts)
		if err != nil {
			return nil, fmt.Errorf("--device %s: %w", spec, err)
		}
		return backend, nil
	}
	return nil, fmt.Errorf("invalid device kind %d: %s", int(spec.Kind), usage)
}
