package cpu

import (
	"fmt"
	"runtime"

	"github.com/ringtune/ringtune/kernels"
)

// Options configures a CPU Backend. The zero value picks the defaults.
type Options struct {
	// Workers is the number of goroutines, the caller included, that run the
	// ops other than Sgemm, which splits its own work. 0 means
	// runtime.GOMAXPROCS(0) at New.
	Workers int
	// CrossEntropyChunkRows is the number of rows of LinearCrossEntropy whose
	// logits are held at a time. The logits buffer takes 4·rows·V bytes:
	// 156 MB for the default 256 rows and Qwen3's V = 151936. Fewer rows save
	// memory, and more rows make the head's matrix products larger. 0 means
	// 256.
	CrossEntropyChunkRows int
}

const defaultCrossEntropyChunkRows = 256

// Backend implements kernels.Backend with Go slices in host memory. Ops run
// on the calling goroutine and Options.Workers−1 helper goroutines, which
// live until Close. Scratch memory grows to the largest call and is then
// reused, so a training loop with fixed shapes allocates nothing per step.
type Backend struct {
	pool *taskPool
	// scratch[w] is the scratch memory of worker w. Only worker w touches it.
	scratch [][]float32

	ceChunkRows int
	// bf16BlockFloats bounds the fp32 copy of a BF16 matrix operand that a
	// product converts at a time.
	bf16BlockFloats int
	// attentionQueryBlock and attentionKeyBlock are the tile sizes of the
	// attention kernels, in tokens.
	attentionQueryBlock int
	attentionKeyBlock   int

	shadow   []float32 // fp32 copy of one block of a BF16 operand
	rope     ropeTable
	partials []float64 // per-chunk sums of SumSquares
	crossEnt crossEntropyScratch
	tasks    opTasks

	memory kernels.MemoryCounter // the buffers of Alloc (see memstats.go)
}

var _ kernels.Backend = (*Backend)(nil)

// New returns a CPU backend.
func New(opts Options) (*Backend, error) {
	if opts.Workers < 0 {
		return nil, fmt.Errorf("kernels/cpu: invalid Workers %d: must be 0 (GOMAXPROCS) or positive", opts.Workers)
	}
	if opts.CrossEntropyChunkRows < 0 {
		return nil, fmt.Errorf("kernels/cpu: invalid CrossEntropyChunkRows %d: must be 0 (default %d) or positive",
			opts.CrossEntropyChunkRows, defaultCrossEntropyChunkRows)
	}
	workers := opts.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ceRows := opts.CrossEntropyChunkRows
	if ceRows == 0 {
		ceRows = defaultCrossEntropyChunkRows
	}
	return &Backend{
		pool:                newTaskPool(workers),
		scratch:             make([][]float32, workers),
		ceChunkRows:         ceRows,
		bf16BlockFloats:     1 << 20,
		attentionQueryBlock: 64,
		attentionKeyBlock:   128,
	}, nil
}

// Name returns "cpu".
func (b *Backend) Name() string { return "cpu" }

// Close stops the helper goroutines. Ops still work afterwards, on the calling
// goroutine alone.
func (b *Backend) Close() error {
	b.pool.close()
	return nil
}

// Sync returns nil: every op has finished when it returns.
func (b *Backend) Sync() error { return nil }

// workerScratch returns n float32 of worker w's scratch, growing it when
// needed. The contents are left from earlier calls.
func (b *Backend) workerScratch(w, n int) []float32 {
	if cap(b.scratch[w]) < n {
		b.scratch[w] = make([]float32, n)
	}
	return b.scratch[w][:n]
}

// buffer is a CPU buffer. Exactly one of the slices is set, by dtype, until
// Free clears it.
type buffer struct {
	dtype kernels.DType
	n     int
	freed bool
	f32   []float32
	bf16  []uint16
	i32   []int32
}

func (buf *buffer) Len() int             { return buf.n }
func (buf *buffer) DType() kernels.DType { return buf.dtype }
func (buf *buffer) String() string {
	return fmt.Sprintf("cpu %s buffer of %d elements", buf.dtype, buf.n)
}

// Alloc returns a zeroed buffer of n elements.
func (b *Backend) Alloc(dtype kernels.DType, n int) (kernels.Buffer, error) {
	if !dtype.Valid() {
		return nil, fmt.Errorf("kernels/cpu: cannot allocate a buffer of invalid dtype %s", dtype)
	}
	if n < 0 {
		return nil, fmt.Errorf("kernels/cpu: cannot allocate a %s buffer of %d elements: the length must not be negative", dtype, n)
	}
	buf := &buffer{dtype: dtype, n: n}
	switch dtype {
	case kernels.F32:
		buf.f32 = make([]float32, n)
	case kernels.BF16:
		buf.bf16 = make([]uint16, n)
	case kernels.I32:
		buf.i32 = make([]int32, n)
	}
	b.memory.Add(bufferBytes(buf))
	return buf, nil
}

// Free drops the buffer's memory, so the garbage collector can reclaim it
// once no slice returned by Float32s and the like refers to it. Using the
// buffer afterwards panics.
func (b *Backend) Free(kb kernels.Buffer) {
	buf := hostBuffer(kb)
	buf.freed = true
	buf.f32, buf.bf16, buf.i32 = nil, nil, nil
	b.memory.Sub(bufferBytes(buf))
}

func hostBuffer(kb kernels.Buffer) *buffer {
	buf, ok := kb.(*buffer)
	if !ok {
		panic(fmt.Errorf("kernels/cpu: a %T buffer belongs to another backend", kb))
	}
	if buf.freed {
		panic(fmt.Errorf("kernels/cpu: use of a freed %s buffer of %d elements", buf.dtype, buf.n))
	}
	return buf
}

// Float32s returns the elements of the F32 tensor t as a slice of its buffer,
// without copying. It panics when t is not an F32 tensor of a CPU buffer.
func Float32s(t kernels.Tensor) []float32 {
	buf := tensorBuffer(t, kernels.F32)
	return buf.f32[t.Offset() : t.Offset()+t.Len() : t.Offset()+t.Len()]
}

// BF16s returns the bfloat16 bits of the BF16 tensor t without copying.
func BF16s(t kernels.Tensor) []uint16 {
	buf := tensorBuffer(t, kernels.BF16)
	return buf.bf16[t.Offset() : t.Offset()+t.Len() : t.Offset()+t.Len()]
}

// Int32s returns the elements of the I32 tensor t without copying.
func Int32s(t kernels.Tensor) []int32 {
	buf := tensorBuffer(t, kernels.I32)
	return buf.i32[t.Offset() : t.Offset()+t.Len() : t.Offset()+t.Len()]
}

func tensorBuffer(t kernels.Tensor, dtype kernels.DType) *buffer {
	if t.IsAbsent() {
		panic(fmt.Errorf("kernels/cpu: want a %s tensor, got the absent tensor", dtype))
	}
	buf := hostBuffer(t.Buffer())
	if buf.dtype != dtype {
		panic(fmt.Errorf("kernels/cpu: want a %s tensor, got %s", dtype, t))
	}
	return buf
}

func checkHostLen(op string, hostLen int, t kernels.Tensor, dtype kernels.DType) error {
	if t.IsAbsent() {
		return fmt.Errorf("kernels/cpu: %s: the tensor is absent", op)
	}
	if t.DType() != dtype {
		return fmt.Errorf("kernels/cpu: %s: the tensor is %s, want dtype %s", op, t, dtype)
	}
	if hostLen != t.Len() {
		return fmt.Errorf("kernels/cpu: %s: the host slice has %d elements but the tensor %s has %d", op, hostLen, t, t.Len())
	}
	return nil
}

// CopyFromHostF32 copies src into dst.
func (b *Backend) CopyFromHostF32(dst kernels.Tensor, src []float32) error {
	if err := checkHostLen("CopyFromHostF32", len(src), dst, kernels.F32); err != nil {
		return err
	}
	copy(Float32s(dst), src)
	return nil
}

// CopyFromHostBF16 copies src into dst.
func (b *Backend) CopyFromHostBF16(dst kernels.Tensor, src []uint16) error {
	if err := checkHostLen("CopyFromHostBF16", len(src), dst, kernels.BF16); err != nil {
		return err
	}
	copy(BF16s(dst), src)
	return nil
}

// CopyFromHostI32 copies src into dst.
func (b *Backend) CopyFromHostI32(dst kernels.Tensor, src []int32) error {
	if err := checkHostLen("CopyFromHostI32", len(src), dst, kernels.I32); err != nil {
		return err
	}
	copy(Int32s(dst), src)
	return nil
}

// CopyToHostF32 copies src into dst.
func (b *Backend) CopyToHostF32(dst []float32, src kernels.Tensor) error {
	if err := checkHostLen("CopyToHostF32", len(dst), src, kernels.F32); err != nil {
		return err
	}
	copy(dst, Float32s(src))
	return nil
}

// CopyToHostBF16 copies src into dst.
func (b *Backend) CopyToHostBF16(dst []uint16, src kernels.Tensor) error {
	if err := checkHostLen("CopyToHostBF16", len(dst), src, kernels.BF16); err != nil {
		return err
	}
	copy(dst, BF16s(src))
	return nil
}

// CopyToHostI32 copies src into dst.
func (b *Backend) CopyToHostI32(dst []int32, src kernels.Tensor) error {
	if err := checkHostLen("CopyToHostI32", len(dst), src, kernels.I32); err != nil {
		return err
	}
	copy(dst, Int32s(src))
	return nil
}

// Copy copies src into dst, converting between F32 and BF16.
func (b *Backend) Copy(dst, src kernels.Tensor) {
	if dst.IsAbsent() || src.IsAbsent() || dst.Len() != src.Len() {
		panic(fmt.Errorf("kernels: Copy: dst is %s and src is %s, but both must be present with equal element counts", dst, src))
	}
	if kernels.Overlaps(dst, src) {
		panic(fmt.Errorf("kernels: Copy: dst %s at offset %d overlaps src %s at offset %d", dst, dst.Offset(), src, src.Offset()))
	}
	switch {
	case dst.DType() == src.DType() && dst.DType() == kernels.F32:
		copy(Float32s(dst), Float32s(src))
	case dst.DType() == src.DType() && dst.DType() == kernels.BF16:
		copy(BF16s(dst), BF16s(src))
	case dst.DType() == src.DType() && dst.DType() == kernels.I32:
		copy(Int32s(dst), Int32s(src))
	case dst.DType() == kernels.F32 && src.DType() == kernels.BF16:
		b.widenBF16(Float32s(dst), BF16s(src))
	case dst.DType() == kernels.BF16 && src.DType() == kernels.F32:
		t := &b.tasks.narrow
		*t = narrowTask{dst: BF16s(dst), src: Float32s(src)}
		b.pool.run(t, len(t.dst), elementGrain)
		*t = narrowTask{}
	default:
		panic(fmt.Errorf("kernels: Copy: cannot convert %s to %s. The conversions are F32 to BF16 and BF16 to F32", src, dst))
	}
}

// Zero sets every element of t to zero.
func (b *Backend) Zero(t kernels.Tensor) {
	switch t.DType() {
	case kernels.F32:
		clear(Float32s(t))
	case kernels.BF16:
		clear(BF16s(t))
	case kernels.I32:
		clear(Int32s(t))
	default:
		panic(fmt.Errorf("kernels: Zero: the tensor is %s", t))
	}
}

// elementGrain is the number of elements per chunk of an elementwise parallel
// loop: enough work (tens of microseconds) to hide the hand-off to a helper.
const elementGrain = 1 << 15

// widenBF16 converts src to fp32 in dst, in parallel.
func (b *Backend) widenBF16(dst []float32, src []uint16) {
	t := &b.tasks.widen
	*t = widenTask{dst: dst, src: src}
	b.pool.run(t, len(dst), elementGrain)
	*t = widenTask{}
}

type widenTask struct {
	dst []float32
	src []uint16
}

func (t *widenTask) run(_, start, end int) {
	widenBF16Fast(t.dst[start:end], t.src[start:end])
}

type narrowTask struct {
	dst []uint16
	src []float32
}

func (t *narrowTask) run(_, start, end int) {
	dst, src := t.dst[start:end], t.src[start:end]
	for i := range dst {
		dst[i] = kernels.BF16FromFloat32(src[i])
	}
}

// opTasks holds one task struct per parallel loop. An op fills its struct,
// runs it and clears it, so no closure escapes to the heap per call.
type opTasks struct {
	widen             widenTask
	narrow            narrowTask
	embeddingForward  embeddingForwardTask
	embeddingBackward embeddingBackwardTask
	rmsNormForward    rmsNormForwardTask
	rmsNormBackward   rmsNormBackwardTask
	rmsNormWeightGrad rmsNormWeightGradTask
	rope              ropeTask
	attentionForward  attentionForwardTask
	attentionBackward attentionBackwardTask
	swiGLUForward     swiGLUForwardTask
	swiGLUBackward    swiGLUBackwardTask
	add               addTask
	scale             scaleTask
	sumSquares        sumSquaresTask
	crossEntropyRows  crossEntropyRowsTask
	adamW             adamWTask
}
