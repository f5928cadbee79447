//go:build linux

package cudalib

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests of this file run twice where they can: against the real CUDA libraries
// when a GPU is present (TestGPU), and against testdata/fakecuda.c, a host-memory
// stand-in for libcuda and libcublas, whenever a C compiler is present
// (TestFakeCUDA). The fake checks the binding itself: argument order and types
// through purego, the thread rule and the error paths.
//
// NOTE: the expectations on the real driver's errors (such as CUDA_ERROR_INVALID_PTX
// for broken PTX, or CUDA_ERROR_OUT_OF_MEMORY for 1 PiB) follow the CUDA
// documentation and have not yet run on a GPU.

// openRealContext opens device 0, or skips the test when the CUDA libraries or a
// device are missing. RINGTUNE_REQUIRE_GPU=1 turns the skip into a failure.
func openRealContext(t *testing.T) *Context {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		message := fmt.Sprintf(format, args...)
		if os.Getenv("RINGTUNE_REQUIRE_GPU") == "1" {
			t.Fatal(message)
		}
		t.Skip(message)
	}
	libs, err := LoadAll()
	if err != nil {
		skip("no CUDA libraries, so the GPU tests do not run: %v", err)
	}
	_, devices, err := libs.Devices()
	if err != nil || len(devices) == 0 {
		skip("the CUDA libraries load, but no device is usable, so the GPU tests do not run: devices %v, %v", devices, err)
	}
	c, err := libs.Open(0)
	require.NoError(t, err, "a device is present, so Open must succeed")
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return c
}

func TestGPU(t *testing.T) {
	c := openRealContext(t)
	t.Logf("device %+v", c.Device())
	runContextSuite(t, c)
}

// runContextSuite runs every Context check on c.
func runContextSuite(t *testing.T, c *Context) {
	t.Run("Device", func(t *testing.T) { checkDevice(t, c) })
	t.Run("MemoryRoundTrip", func(t *testing.T) { checkMemoryRoundTrip(t, c) })
	t.Run("MemoryErrors", func(t *testing.T) { checkMemoryErrors(t, c) })
	t.Run("PinnedAsyncCopy", func(t *testing.T) { checkPinnedAsyncCopy(t, c) })
	t.Run("Events", func(t *testing.T) { checkEvents(t, c) })
	t.Run("LaunchKernel", func(t *testing.T) { checkLaunchKernel(t, c) })
	t.Run("LaunchErrors", func(t *testing.T) { checkLaunchErrors(t, c) })
	t.Run("GemmEx", func(t *testing.T) { checkGemmEx(t, c) })
	t.Run("GemmExErrors", func(t *testing.T) { checkGemmExErrors(t, c) })
	t.Run("ConcurrentGoroutines", func(t *testing.T) { checkConcurrentGoroutines(t, c) })
}

func checkDevice(t *testing.T, c *Context) {
	d := c.Device()
	assert.Equal(t, 0, d.Ordinal)
	assert.GreaterOrEqual(t, d.Major, 7, "compute capability %d.%d", d.Major, d.Minor)
	assert.NotEmpty(t, d.Name)
	assert.Positive(t, d.TotalMemory)
	assert.Positive(t, d.Multiprocessors)
	assert.GreaterOrEqual(t, d.MaxSharedPerBlockOptin, 48<<10)
	assert.Equal(t, fmt.Sprintf("sm_%d%d", d.Major, d.Minor), d.Arch())

	free, total, err := c.MemGetInfo()
	require.NoError(t, err)
	assert.Positive(t, free)
	assert.LessOrEqual(t, free, total)
	assert.LessOrEqual(t, total, d.TotalMemory)
	assert.NotZero(t, c.Stream(), "the compute stream is not the legacy default stream")
}

// allocBytes allocates device memory and frees it when the test ends.
func allocBytes(t *testing.T, c *Context, bytes int) DevicePtr {
	t.Helper()
	p, err := c.MemAlloc(bytes)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.MemFree(p)) })
	return p
}

func uploadFloats(t *testing.T, c *Context, values []float32) DevicePtr {
	t.Helper()
	p := allocBytes(t, c, 4*len(values))
	require.NoError(t, c.MemcpyHtoD(p, unsafe.Pointer(&values[0]), 4*len(values)))
	return p
}

func downloadFloats(t *testing.T, c *Context, p DevicePtr, n int) []float32 {
	t.Helper()
	values := make([]float32, n)
	require.NoError(t, c.MemcpyDtoH(unsafe.Pointer(&values[0]), p, 4*n))
	return values
}

func checkMemoryRoundTrip(t *testing.T, c *Context) {
	const n = 1 << 18
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]float32, n)
	for i := range src {
		src[i] = rng.Float32()*2 - 1
	}
	a := uploadFloats(t, c, src)
	b := allocBytes(t, c, 4*n)
	require.NoError(t, c.MemcpyDtoDAsync(b, a, 4*n, c.Stream()))
	assert.Equal(t, src, downloadFloats(t, c, b, n), "HtoD, DtoD and DtoH keep every byte")

	// Fill the middle half with 1.0f, whose bit pattern is 0x3f800000.
	require.NoError(t, c.MemsetD32Async(b+DevicePtr(4*n/4), math.Float32bits(1), n/2, c.Stream()))
	got := downloadFloats(t, c, b, n)
	for i, v := range got {
		want := src[i]
		if i >= n/4 && i < 3*n/4 {
			want = 1
		}
		if v != want {
			t.Fatalf("after MemsetD32Async, element %d is %v, want %v", i, v, want)
		}
	}

	require.NoError(t, c.MemcpyHtoD(b, nil, 0), "a copy of 0 bytes does nothing")
	require.NoError(t, c.MemcpyDtoDAsync(b, a, 0, c.Stream()))
}

func checkMemoryErrors(t *testing.T, c *Context) {
	_, err := c.MemAlloc(0)
	assert.Error(t, err)
	_, err = c.MemAlloc(-1)
	assert.Error(t, err)
	assert.NoError(t, c.MemFree(0), "freeing 0 does nothing")
	assert.NoError(t, c.MemHostFree(nil), "freeing nil does nothing")

	_, err = c.MemAlloc(1 << 50)
	require.Error(t, err, "a petabyte does not fit")
	assert.True(t, IsOutOfMemory(err), "err = %v", err)
	assert.Contains(t, err.Error(), "cuMemAlloc_v2")
	assert.Contains(t, err.Error(), "CUDA_ERROR_OUT_OF_MEMORY")

	p := allocBytes(t, c, 64)
	assert.Error(t, c.MemcpyHtoD(p, nil, 4), "a nil host pointer")
	assert.Error(t, c.MemcpyDtoH(nil, p, 4), "a nil host pointer")
	assert.Error(t, c.MemcpyDtoDAsync(p, p, -1, c.Stream()), "a negative size")
	assert.Error(t, c.MemsetD32Async(p, 0, -1, c.Stream()), "a negative count")
	_, err = c.MemHostAlloc(0)
	assert.Error(t, err)

	assert.Error(t, c.DestroyStream(c.Stream()), "the compute stream belongs to the context")
	assert.Error(t, c.DestroyStream(0), "the legacy default stream is not destroyable")
}

func checkPinnedAsyncCopy(t *testing.T, c *Context) {
	const n = 4096
	host, err := c.MemHostAlloc(4 * n)
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.MemHostFree(host)) }()
	back, err := c.MemHostAlloc(4 * n)
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.MemHostFree(back)) }()

	in := unsafe.Slice((*float32)(host), n)
	out := unsafe.Slice((*float32)(back), n)
	for i := range in {
		in[i] = float32(i) * 0.25
	}
	copyStream, err := c.NewStream()
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.DestroyStream(copyStream)) }()
	uploaded, err := c.NewEvent()
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.DestroyEvent(uploaded)) }()
	done, err := c.NewEvent()
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.DestroyEvent(done)) }()

	// Upload on the copy stream, make the compute stream wait for it, download on
	// the compute stream, and wait for the download on the host through an event.
	p := allocBytes(t, c, 4*n)
	require.NoError(t, c.MemcpyHtoDAsync(p, host, 4*n, copyStream))
	require.NoError(t, c.EventRecord(uploaded, copyStream))
	require.NoError(t, c.StreamWaitEvent(c.Stream(), uploaded))
	require.NoError(t, c.MemcpyDtoHAsync(back, p, 4*n, c.Stream()))
	require.NoError(t, c.EventRecord(done, c.Stream()))
	require.NoError(t, c.EventSynchronize(done))
	assert.Equal(t, in, out)
	require.NoError(t, c.StreamSynchronize(copyStream))
}

func checkEvents(t *testing.T, c *Context) {
	start, err := c.NewTimingEvent()
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.DestroyEvent(start)) }()
	end, err := c.NewTimingEvent()
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.DestroyEvent(end)) }()

	p := allocBytes(t, c, 1<<20)
	require.NoError(t, c.EventRecord(start, c.Stream()))
	require.NoError(t, c.MemsetD32Async(p, 7, 1<<18, c.Stream()))
	require.NoError(t, c.EventRecord(end, c.Stream()))
	require.NoError(t, c.EventSynchronize(end))
	elapsed, err := c.EventElapsed(start, end)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, elapsed, time.Duration(0))

	untimed, err := c.NewEvent()
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.DestroyEvent(untimed)) }()
	require.NoError(t, c.EventRecord(untimed, c.Stream()))
	require.NoError(t, c.EventSynchronize(untimed))
	_, err = c.EventElapsed(untimed, untimed)
	assert.Error(t, err, "an event without timing has no elapsed time")
}

// float32ToBF16 rounds f to the nearest bfloat16, ties to even, as the test kernel does.
func float32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

func bf16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// loadTestKernel compiles testdata/block_sum_bf16.cu for the device and loads it.
func loadTestKernel(t *testing.T, c *Context, arch string) (*Module, Function) {
	t.Helper()
	n := c.NVRTC()
	image, err := CompileCached(n, t.TempDir(), readTestKernel(t), "block_sum_bf16.cu", arch, nil)
	require.NoError(t, err)
	module, err := c.LoadModule(image)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, module.Unload()) })
	f, err := module.Function("block_sum_bf16")
	require.NoError(t, err)
	assert.Equal(t, "block_sum_bf16", f.Name())
	return module, f
}

func checkLaunchKernel(t *testing.T, c *Context) {
	cubinArch := c.Device().Arch()
	ptxArch := fmt.Sprintf("compute_%d%d", c.Device().Major, c.Device().Minor)
	if archs := c.NVRTC().SupportedArchs(); archs != nil {
		// PTX for the newest architecture NVRTC supports, which the driver compiles for the device.
		newest := 0
		for _, a := range archs {
			if a <= c.Device().Major*10+c.Device().Minor {
				newest = a
			}
		}
		ptxArch = fmt.Sprintf("compute_%d", newest)
	}
	for _, arch := range []string{cubinArch, ptxArch} {
		t.Run(arch, func(t *testing.T) {
			_, f := loadTestKernel(t, c, arch)
			runBlockSum(t, c, f)
		})
	}
}

// runBlockSum launches block_sum_bf16 on random data and checks both outputs.
func runBlockSum(t *testing.T, c *Context, f Function) {
	const n, blockSize = 1000, 256
	blocks := (n + blockSize - 1) / blockSize
	rng := rand.New(rand.NewPCG(3, 4))
	in := make([]uint16, n)
	for i := range in {
		in[i] = float32ToBF16(rng.Float32()*8 - 4)
	}
	inPtr := allocBytes(t, c, 2*n)
	require.NoError(t, c.MemcpyHtoD(inPtr, unsafe.Pointer(&in[0]), 2*n))
	outPtr := allocBytes(t, c, 2*n)
	sumsPtr := allocBytes(t, c, 4*blocks)

	scale, count := float32(-2), int32(n)
	err := c.Launch(f, [3]uint32{uint32(blocks), 1, 1}, [3]uint32{blockSize, 1, 1}, 0, c.Stream(),
		unsafe.Pointer(&inPtr), unsafe.Pointer(&outPtr), unsafe.Pointer(&sumsPtr), unsafe.Pointer(&scale), unsafe.Pointer(&count))
	require.NoError(t, err)

	out := make([]uint16, n)
	require.NoError(t, c.MemcpyDtoH(unsafe.Pointer(&out[0]), outPtr, 2*n))
	for i := range in {
		want := float32ToBF16(-2 * bf16ToFloat32(in[i])) // exact: doubling a bfloat16 is exact
		if out[i] != want {
			t.Fatalf("out[%d] = %#04x, want %#04x (input %v)", i, out[i], want, bf16ToFloat32(in[i]))
		}
	}
	sums := downloadFloats(t, c, sumsPtr, blocks)
	for b := range blocks {
		var want float64
		for i := b * blockSize; i < min(n, (b+1)*blockSize); i++ {
			want += float64(bf16ToFloat32(in[i]))
		}
		assert.InDelta(t, want, float64(sums[b]), 1e-3, "sum of block %d", b)
	}
}

func checkLaunchErrors(t *testing.T, c *Context) {
	module, f := loadTestKernel(t, c, c.Device().Arch())
	p := allocBytes(t, c, 1024)
	one := int32(1)
	scale := float32(1)
	grid, block := [3]uint32{1, 1, 1}, [3]uint32{32, 1, 1}

	err := c.Launch(Function{}, grid, block, 0, c.Stream())
	assert.ErrorContains(t, err, "Function is zero")
	err = c.Launch(f, grid, block, 0, c.Stream(), unsafe.Pointer(&p), nil, unsafe.Pointer(&p), unsafe.Pointer(&scale), unsafe.Pointer(&one))
	assert.ErrorContains(t, err, "argument 1 is nil")
	err = c.Launch(f, [3]uint32{0, 1, 1}, block, 0, c.Stream(), unsafe.Pointer(&p), unsafe.Pointer(&p), unsafe.Pointer(&p), unsafe.Pointer(&scale), unsafe.Pointer(&one))
	assert.ErrorContains(t, err, "no zero dimension")
	if f.params >= 0 {
		assert.Equal(t, 5, f.params)
		err = c.Launch(f, grid, block, 0, c.Stream(), unsafe.Pointer(&p))
		assert.ErrorContains(t, err, "1 arguments for a kernel with 5 parameters")
	}
	err = c.Launch(f, grid, [3]uint32{4096, 1, 1}, 0, c.Stream(), unsafe.Pointer(&p), unsafe.Pointer(&p), unsafe.Pointer(&p), unsafe.Pointer(&scale), unsafe.Pointer(&one))
	assert.ErrorContains(t, err, "cuLaunchKernel", "a block of 4096 threads is too large")
	require.NoError(t, c.StreamSynchronize(c.Stream()), "a rejected launch leaves the context usable")

	_, err = module.Function("no_such_kernel")
	assert.ErrorContains(t, err, "no_such_kernel")
	assert.ErrorContains(t, err, "CUDA_ERROR_NOT_FOUND")

	_, err = c.LoadModule([]byte("garbage"))
	assert.ErrorContains(t, err, "not a cubin, fatbin or PTX")
	_, err = c.LoadModule(nil)
	assert.Error(t, err)
	_, err = c.LoadModule([]byte(".version 7.0\n.target sm_80\n.address_size 64\nthis is not PTX\n"))
	assert.ErrorContains(t, err, "cuModuleLoadDataEx")

	limit := c.Device().MaxSharedPerBlockOptin
	assert.NoError(t, c.FuncSetMaxDynamicShared(f, limit-4096))
	assert.ErrorContains(t, c.FuncSetMaxDynamicShared(f, limit+4096), "cuFuncSetAttribute")
	assert.Error(t, c.FuncSetMaxDynamicShared(f, -1))
}

// gemmCase is one GemmEx configuration and its tolerance.
type gemmCase struct {
	name           string
	transA, transB bool
	abType, cType  DataType
	compute        ComputeType
	alpha, beta    float32
	// relative tolerance against Σ|alpha·a·b| + |beta·c|, the size of the terms
	tolerance float64
}

func checkGemmEx(t *testing.T, c *Context) {
	cases := []gemmCase{
		{"f32", false, false, R32F, R32F, Compute32F, 1, 0, 1e-5},
		{"f32 transposed, alpha and beta", true, true, R32F, R32F, Compute32F, 0.5, -2, 1e-5},
		{"f32 as tf32", false, true, R32F, R32F, Compute32FFastTF32, 1, 0, 4e-3},
		{"bf16 to f32", true, false, R16BF, R32F, Compute32F, 1, 1, 1e-5},
		{"bf16 to bf16", false, false, R16BF, R16BF, Compute32F, 1, 0, 1e-2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runGemm(t, c, tc) })
	}
}

// deviceMatrix stores values (column-major) on the device as typ, and returns the
// pointer and the values as the device holds them.
func deviceMatrix(t *testing.T, c *Context, values []float64, typ DataType) (DevicePtr, []float64) {
	t.Helper()
	stored := make([]float64, len(values))
	switch typ {
	case R32F:
		f := make([]float32, len(values))
		for i, v := range values {
			f[i] = float32(v)
			stored[i] = float64(f[i])
		}
		return uploadFloats(t, c, f), stored
	case R16BF:
		h := make([]uint16, len(values))
		for i, v := range values {
			h[i] = float32ToBF16(float32(v))
			stored[i] = float64(bf16ToFloat32(h[i]))
		}
		p := allocBytes(t, c, 2*len(h))
		require.NoError(t, c.MemcpyHtoD(p, unsafe.Pointer(&h[0]), 2*len(h)))
		return p, stored
	}
	t.Fatalf("no test storage for %v", typ)
	return 0, nil
}

func readMatrix(t *testing.T, c *Context, p DevicePtr, n int, typ DataType) []float64 {
	t.Helper()
	values := make([]float64, n)
	switch typ {
	case R32F:
		for i, v := range downloadFloats(t, c, p, n) {
			values[i] = float64(v)
		}
	case R16BF:
		h := make([]uint16, n)
		require.NoError(t, c.MemcpyDtoH(unsafe.Pointer(&h[0]), p, 2*n))
		for i, v := range h {
			values[i] = float64(bf16ToFloat32(v))
		}
	}
	return values
}

func runGemm(t *testing.T, c *Context, tc gemmCase) {
	const m, n, k = 67, 45, 129 // odd sizes, so that the GEMM has partial tiles
	rng := rand.New(rand.NewPCG(5, 6))
	random := func(count int) []float64 {
		v := make([]float64, count)
		for i := range v {
			v[i] = rng.Float64()*2 - 1
		}
		return v
	}
	// Column-major storage: op(A) is m×k, so A is m×k (lda = m) or, transposed, k×m (lda = k).
	lda, ldb, ldc := m, k, m
	if tc.transA {
		lda = k
	}
	if tc.transB {
		ldb = n
	}
	aPtr, a := deviceMatrix(t, c, random(m*k), tc.abType)
	bPtr, b := deviceMatrix(t, c, random(k*n), tc.abType)
	cPtr, c0 := deviceMatrix(t, c, random(m*n), tc.cType)

	require.NoError(t, c.GemmEx(tc.transA, tc.transB, m, n, k, tc.alpha, aPtr, tc.abType, lda, bPtr, tc.abType, ldb,
		tc.beta, cPtr, tc.cType, ldc, tc.compute))
	got := readMatrix(t, c, cPtr, m*n, tc.cType)

	at := func(i, p int) float64 { // op(A)[i][p]
		if tc.transA {
			return a[p+i*lda]
		}
		return a[i+p*lda]
	}
	bt := func(p, j int) float64 { // op(B)[p][j]
		if tc.transB {
			return b[j+p*ldb]
		}
		return b[p+j*ldb]
	}
	alpha, beta := float64(tc.alpha), float64(tc.beta)
	for j := range n {
		for i := range m {
			var sum, size float64
			for p := range k {
				sum += at(i, p) * bt(p, j)
				size += math.Abs(at(i, p) * bt(p, j))
			}
			want := alpha*sum + beta*c0[i+j*ldc]
			bound := tc.tolerance * (math.Abs(alpha)*size + math.Abs(beta*c0[i+j*ldc]))
			if diff := math.Abs(got[i+j*ldc] - want); diff > bound {
				t.Fatalf("C[%d][%d] = %v, want %v (difference %.3g, bound %.3g)", i, j, got[i+j*ldc], want, diff, bound)
			}
		}
	}
}

func checkGemmExErrors(t *testing.T, c *Context) {
	p := allocBytes(t, c, 4096)
	err := c.GemmEx(false, false, 4, 4, 4, 1, p, R32F, 4, p, R32F, 4, 0, p, R32F, 4, ComputeType(64))
	assert.ErrorContains(t, err, "not a float compute type")
	err = c.GemmEx(false, false, -1, 4, 4, 1, p, R32F, 4, p, R32F, 4, 0, p, R32F, 4, Compute32F)
	assert.ErrorContains(t, err, "outside")
	err = c.GemmEx(false, false, 1<<31, 4, 4, 1, p, R32F, 1<<31, p, R32F, 4, 0, p, R32F, 1<<31, Compute32F)
	assert.ErrorContains(t, err, "outside")
	err = c.GemmEx(false, false, 4, 4, 4, 1, 0, R32F, 4, p, R32F, 4, 0, p, R32F, 4, Compute32F)
	assert.ErrorContains(t, err, "null A or B")

	err = c.GemmEx(false, false, 4, 4, 4, 1, p, R32F, 2, p, R32F, 4, 0, p, R32F, 4, Compute32F)
	var callErr *Error
	require.True(t, errors.As(err, &callErr), "lda < m is cuBLAS's to reject: %v", err)
	assert.Equal(t, "cublasGemmEx", callErr.Call)
	assert.Equal(t, "CUBLAS_STATUS_INVALID_VALUE", callErr.Name)
	assert.Contains(t, err.Error(), "lda=2")

	require.NoError(t, c.GemmEx(false, false, 0, 0, 0, 1, 0, R32F, 1, 0, R32F, 1, 0, 0, R32F, 1, Compute32F), "an empty product does nothing")
}

// checkConcurrentGoroutines calls the context from many goroutines at once, which
// Go runs on several OS threads; each call must find the context current.
func checkConcurrentGoroutines(t *testing.T, c *Context) {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				p, err := c.MemAlloc(4096)
				if err != nil {
					errs <- err
					return
				}
				if err := c.MemsetD32Async(p, 1, 1024, c.Stream()); err != nil {
					errs <- err
				}
				if err := c.StreamSynchronize(c.Stream()); err != nil {
					errs <- err
				}
				if err := c.MemFree(p); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOpenRejectsMissingDevice(t *testing.T) {
	c := openRealContext(t)
	_, err := c.libs.Open(-1)
	assert.ErrorContains(t, err, "not found")
	_, err = c.libs.Open(1 << 20)
	assert.ErrorContains(t, err, "not found")
}

func TestContextClosed(t *testing.T) {
	c := openRealContext(t)
	second, err := c.libs.Open(0)
	require.NoError(t, err, "a second Context on the same device shares its primary context")
	p, err := second.MemAlloc(64)
	require.NoError(t, err)
	require.NoError(t, second.MemFree(p))
	require.NoError(t, second.Close())
	require.NoError(t, second.Close(), "a second Close returns nil")

	_, err = second.MemAlloc(64)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, second.StreamSynchronize(0), ErrClosed)
	assert.ErrorIs(t, second.GemmEx(false, false, 1, 1, 1, 1, 1, R32F, 1, 1, R32F, 1, 0, 1, R32F, 1, Compute32F), ErrClosed)
	_, err = second.NewEvent()
	assert.ErrorIs(t, err, ErrClosed)

	q, err := c.MemAlloc(64)
	require.NoError(t, err, "closing one Context leaves the other usable")
	require.NoError(t, c.MemFree(q))
}
