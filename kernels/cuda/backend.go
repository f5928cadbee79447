package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// Options configures a CUDA Backend. The zero value picks the defaults.
type Options struct {
	// Device is the CUDA device ordinal, as nvidia-smi numbers them.
	Device int
	// CacheDir is the folder of compiled kernel images. Empty means
	// $RINGTUNE_CACHE/cuda-kernels, or ringtune/cuda-kernels in the user's
	// cache folder (~/.cache/ringtune/cuda-kernels) when RINGTUNE_CACHE is unset.
	CacheDir string
	// StrictFP32 makes Matmul multiply F32 operands in fp32 instead of TF32,
	// and widen a BF16 b to fp32 instead of rounding a to bf16.
	StrictFP32 bool
	// CrossEntropyChunkRows is the number of rows of LinearCrossEntropy whose
	// logits are held at a time, in 4·rows·V bytes (6·rows·V with a BF16
	// weight): 622 MB for the default 1024 rows and Qwen3's V = 151936.
	CrossEntropyChunkRows int
}

const defaultCrossEntropyChunkRows = 1024

// Backend implements kernels.Backend and kernels.HostStager on one CUDA
// device. Like every Backend it is not safe for concurrent use.
type Backend struct {
	ctx     *cudalib.Context
	device  cudalib.Device
	compute cudalib.Stream // every op runs here
	copy    cudalib.Stream // CopyToHostAsyncF32 runs here

	strictFP32  bool
	ceChunkRows int

	fn        functions
	modules   []*cudalib.Module
	maxShared map[string]int // the dynamic shared memory each kernel was opted into

	// errFlag is one int32 on the device that kernels set bits of when they
	// meet an element value out of range (see kernels/common.cuh).
	errFlag cudalib.DevicePtr
	// err is the first failed call since the last Sync.
	err error

	// memStats counts the device memory of Alloc and the scratch buffers.
	memStats kernels.MemoryCounter

	scratch  map[scratchSlot]*deviceScratch
	invFreqs map[ropeKey]cudalib.DevicePtr
	closed   bool
}

var (
	_ kernels.Backend    = (*Backend)(nil)
	_ kernels.HostStager = (*Backend)(nil)
)

// openContext opens a device. The tests replace it to run the backend on an
// emulated device when no GPU is present.
var openContext = cudalib.Open

// New opens device opts.Device, compiles the kernels for it (or loads them
// from the cache) and returns the backend. It fails when CUDA, NVRTC or
// cuBLAS is missing, naming what to install.
func New(opts Options) (*Backend, error) {
	if opts.Device < 0 {
		return nil, fmt.Errorf("kernels/cuda: invalid Device %d: device ordinals start at 0", opts.Device)
	}
	if opts.CrossEntropyChunkRows < 0 {
		return nil, fmt.Errorf("kernels/cuda: invalid CrossEntropyChunkRows %d: must be 0 (default %d) or positive",
			opts.CrossEntropyChunkRows, defaultCrossEntropyChunkRows)
	}
	ceRows := opts.CrossEntropyChunkRows
	if ceRows == 0 {
		ceRows = defaultCrossEntropyChunkRows
	}

	ctx, err := openContext(opts.Device)
	if err != nil {
		return nil, fmt.Errorf("kernels/cuda: open device %d: %w", opts.Device, err)
	}
	b := newBackend(ctx, opts.StrictFP32, ceRows)
	if err := b.init(opts.CacheDir); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

// newBackend returns a backend on ctx without streams, kernels or memory of
// its own yet.
func newBackend(ctx *cudalib.Context, strictFP32 bool, ceChunkRows int) *Backend {
	return &Backend{
		ctx:         ctx,
		device:      ctx.Device(),
		compute:     ctx.Stream(),
		strictFP32:  strictFP32,
		ceChunkRows: ceChunkRows,
		maxShared:   map[string]int{},
		scratch:     map[scratchSlot]*deviceScratch{},
		invFreqs:    map[ropeKey]cudalib.DevicePtr{},
	}
}

// init checks the device, creates the copy stream and the error flag, and
// loads the kernels.
func (b *Backend) init(cacheDir string) error {
	if b.device.Major < 8 {
		return fmt.Errorf("kernels/cuda: device %d (%s) has compute capability %d.%d, but the kernels need 8.0 or later (A100, H100 and newer)",
			b.device.Ordinal, b.device.Name, b.device.Major, b.device.Minor)
	}
	if err := b.initStreamAndFlag(); err != nil {
		return err
	}
	return b.loadKernels(cacheDir)
}

// initStreamAndFlag creates the copy stream and the device error flag.
func (b *Backend) initStreamAndFlag() error {
	copyStream, err := b.ctx.NewStream()
	if err != nil {
		return fmt.Errorf("kernels/cuda: create the copy stream: %w", err)
	}
	b.copy = copyStream
	flag, err := b.ctx.MemAlloc(4)
	if err != nil {
		return fmt.Errorf("kernels/cuda: allocate the device error flag: %w", err)
	}
	b.errFlag = flag
	if err := b.ctx.MemsetD32Async(flag, 0, 1, b.compute); err != nil {
		return fmt.Errorf("kernels/cuda: clear the device error flag: %w", err)
	}
	return b.ctx.StreamSynchronize(b.compute)
}

// Name returns "cuda".
func (b *Backend) Name() string { return "cuda" }

// Device returns the device the backend runs on.
func (b *Backend) Device() cudalib.Device { return b.device }

// Close waits for the queued ops and releases the backend's scratch memory,
// copy stream and context. Buffers and pinned memory of the backend become
// invalid. The driver destroys the context with them unless another Backend
// uses the same device.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	errs := []error{b.err, b.ctx.StreamSynchronize(b.compute)}
	for _, s := range b.scratch {
		if s.ptr != 0 {
			errs = append(errs, b.ctx.MemFree(s.ptr))
		}
	}
	for _, p := range b.invFreqs {
		errs = append(errs, b.ctx.MemFree(p))
	}
	if b.errFlag != 0 {
		errs = append(errs, b.ctx.MemFree(b.errFlag))
	}
	if b.copy != 0 {
		errs = append(errs, b.ctx.DestroyStream(b.copy))
	}
	for _, m := range b.modules {
		errs = append(errs, m.Unload())
	}
	errs = append(errs, b.ctx.Close())
	return errors.Join(errs...)
}

// fail keeps err as the backend's pending error unless one is pending.
func (b *Backend) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// Sync waits for the compute stream, then returns and clears the first error
// since the last Sync: a failed call or an element value out of range.
func (b *Backend) Sync() error {
	err := b.err
	b.err = nil
	if syncErr := b.ctx.StreamSynchronize(b.compute); syncErr != nil && err == nil {
		err = fmt.Errorf("kernels/cuda: %w", syncErr)
	}
	if flagErr := b.readErrorFlag(); flagErr != nil && err == nil {
		err = flagErr
	}
	return err
}

// readErrorFlag reads and clears the device error flag.
func (b *Backend) readErrorFlag() error {
	var flag int32
	if err := b.ctx.MemcpyDtoH(unsafe.Pointer(&flag), b.errFlag, 4); err != nil {
		return fmt.Errorf("kernels/cuda: read the device error flag: %w", err)
	}
	if flag == 0 {
		return nil
	}
	if err := b.ctx.MemsetD32Async(b.errFlag, 0, 1, b.compute); err != nil {
		return fmt.Errorf("kernels/cuda: clear the device error flag: %w", err)
	}
	var problems []error
	if flag&errIDRange != 0 {
		problems = append(problems, errors.New("an embedding id was out of range [0, V), so its row was skipped"))
	}
	if flag&errPosition != 0 {
		problems = append(problems, errors.New("a RoPE position was negative, so its token was left unrotated"))
	}
	if flag&errSegment != 0 {
		problems = append(problems, errors.New("a segment start was outside [0, token], so it was clamped"))
	}
	return fmt.Errorf("kernels/cuda: invalid element values since the last Sync (validate ids, positions and segment starts on the host): %w",
		errors.Join(problems...))
}

// Bits of the device error flag, as defined in kernels/common.cuh.
const (
	errIDRange  = 1
	errPosition = 2
	errSegment  = 4
)
