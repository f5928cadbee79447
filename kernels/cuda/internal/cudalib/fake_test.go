//go:build linux

package cudalib

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeCUDA is testdata/fakecuda.c, built once per test binary. Its state is
// process-wide, so the tests that use it run one at a time (none is parallel).
var fakeCUDA struct {
	once sync.Once
	dir  string // temporary folder of the library, removed by TestMain
	path string
	err  error
	// Controls exported by the fake.
	setDevices       func(n int32)
	failCuBLASCreate func(fail int32)
	primaryRefs      func() int32
}

// TestMain removes the folder of the fake's library after the tests. The tests
// need the file until then, because each of them loads the library by its path.
func TestMain(m *testing.M) {
	code := m.Run()
	if fakeCUDA.dir != "" {
		os.RemoveAll(fakeCUDA.dir)
	}
	os.Exit(code)
}

// buildFakeCUDA compiles the fake with the system's C compiler, or skips the test
// when there is none.
func buildFakeCUDA(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc), so the binding is not tested against testdata/fakecuda.c")
	}
	fakeCUDA.once.Do(func() {
		dir, err := os.MkdirTemp("", "fakecuda-")
		if err != nil {
			fakeCUDA.err = err
			return
		}
		fakeCUDA.dir = dir
		path := filepath.Join(dir, "libfakecuda.so")
		out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-o", path, filepath.Join("testdata", "fakecuda.c"), "-lm").CombinedOutput()
		if err != nil {
			fakeCUDA.err = fmt.Errorf("%w\n%s", err, out)
			return
		}
		handle, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			fakeCUDA.err = err
			return
		}
		purego.RegisterLibFunc(&fakeCUDA.setDevices, handle, "fakecuda_set_devices")
		purego.RegisterLibFunc(&fakeCUDA.failCuBLASCreate, handle, "fakecuda_fail_cublas_create")
		purego.RegisterLibFunc(&fakeCUDA.primaryRefs, handle, "fakecuda_primary_refs")
		fakeCUDA.path = path
	})
	require.NoError(t, fakeCUDA.err, "build testdata/fakecuda.c")
	return fakeCUDA.path
}

// loadFakeLibs loads the fake as the driver and cuBLAS, with the real NVRTC.
func loadFakeLibs(t *testing.T) *Libs {
	t.Helper()
	fake := buildFakeCUDA(t)
	n := loadTestNVRTC(t)
	libs, err := Load(Paths{DriverLibrary.Name: fake, NVRTCLibrary.Name: n.Path, CuBLASLibrary.Name: fake})
	require.NoError(t, err)
	return libs
}

func TestFakeCUDA(t *testing.T) {
	libs := loadFakeLibs(t)
	refs := fakeCUDA.primaryRefs()
	c, err := libs.Open(0)
	require.NoError(t, err)
	assert.Equal(t, "Fake CUDA Device", c.Device().Name)
	assert.Equal(t, "sm_90", c.Device().Arch())

	runContextSuite(t, c)

	require.NoError(t, c.Close())
	assert.Equal(t, refs, fakeCUDA.primaryRefs(), "Close releases the primary context")
}

func TestFakeCUDAVersions(t *testing.T) {
	libs := loadFakeLibs(t)
	version, devices, err := libs.Devices()
	require.NoError(t, err)
	assert.Equal(t, 12040, version)
	assert.Equal(t, []Device{{Ordinal: 0, Major: 9, Minor: 0}}, devices)

	major, minor, patch, err := libs.CuBLASVersion()
	require.NoError(t, err)
	assert.Equal(t, [3]int{12, 4, 5}, [3]int{major, minor, patch})
}

func TestFakeCUDANoDevice(t *testing.T) {
	libs := loadFakeLibs(t)
	fakeCUDA.setDevices(0)
	defer fakeCUDA.setDevices(1)

	_, err := libs.Open(0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cuInit")
	assert.Contains(t, err.Error(), "CUDA_ERROR_NO_DEVICE")
	assert.Contains(t, err.Error(), "nvidia-smi")
	_, _, err = libs.Devices()
	assert.ErrorContains(t, err, "CUDA_ERROR_NO_DEVICE")
}

func TestFakeCUDAMissingDevice(t *testing.T) {
	libs := loadFakeLibs(t)
	for _, ordinal := range []int{-1, 1, 1 << 40} {
		_, err := libs.Open(ordinal)
		assert.ErrorContains(t, err, "not found, the driver reports 1 devices", "ordinal %d", ordinal)
	}
}

func TestFakeCUDAOpenReleasesOnFailure(t *testing.T) {
	libs := loadFakeLibs(t)
	refs := fakeCUDA.primaryRefs()
	fakeCUDA.failCuBLASCreate(1)
	defer fakeCUDA.failCuBLASCreate(0)

	_, err := libs.Open(0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "open cuBLAS")
	assert.Contains(t, err.Error(), "cublasCreate_v2")
	assert.Contains(t, err.Error(), "CUBLAS_STATUS_NOT_INITIALIZED")
	assert.Equal(t, refs, fakeCUDA.primaryRefs(), "a failed Open releases the primary context")
}

func TestFakeCUDABrokenPTXCarriesLog(t *testing.T) {
	libs := loadFakeLibs(t)
	c, err := libs.Open(0)
	require.NoError(t, err)
	defer c.Close()

	_, err = c.LoadModule([]byte(".version 7.0\n.target sm_80\n.address_size 64\nthis is not PTX\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "CUDA_ERROR_INVALID_PTX")
	assert.Contains(t, err.Error(), "Parsing error near 'this'", "the driver's log follows the error")
}

func TestFakeCUDAClosed(t *testing.T) {
	libs := loadFakeLibs(t)
	c, err := libs.Open(0)
	require.NoError(t, err)
	image, err := CompileCached(c.NVRTC(), t.TempDir(), readTestKernel(t), "block_sum_bf16.cu", "sm_90", nil)
	require.NoError(t, err)
	module, err := c.LoadModule(image)
	require.NoError(t, err)
	f, err := module.Function("block_sum_bf16")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "a second Close returns nil")

	_, err = c.MemAlloc(64)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, c.StreamSynchronize(0), ErrClosed)
	assert.ErrorIs(t, c.GemmEx(false, false, 1, 1, 1, 1, 1, R32F, 1, 1, R32F, 1, 0, 1, R32F, 1, Compute32F), ErrClosed)
	_, err = module.Function("block_sum_bf16")
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, module.Unload(), ErrClosed)
	_, err = c.LoadModule(image)
	assert.ErrorIs(t, err, ErrClosed)
	p, scale, n := DevicePtr(1), float32(1), int32(1)
	args := []unsafe.Pointer{unsafe.Pointer(&p), unsafe.Pointer(&p), unsafe.Pointer(&p), unsafe.Pointer(&scale), unsafe.Pointer(&n)}
	assert.ErrorIs(t, c.Launch(f, [3]uint32{1, 1, 1}, [3]uint32{32, 1, 1}, 0, 0, args...), ErrClosed)
}

func TestFakeCUDAUnloadedModule(t *testing.T) {
	libs := loadFakeLibs(t)
	c, err := libs.Open(0)
	require.NoError(t, err)
	defer c.Close()
	image, err := CompileCached(c.NVRTC(), t.TempDir(), readTestKernel(t), "block_sum_bf16.cu", "sm_90", nil)
	require.NoError(t, err)
	module, err := c.LoadModule(image)
	require.NoError(t, err)
	f, err := module.Function("block_sum_bf16")
	require.NoError(t, err)
	require.NoError(t, module.Unload())
	require.NoError(t, module.Unload(), "a second Unload returns nil")

	p := DevicePtr(1)
	err = c.Launch(f, [3]uint32{1, 1, 1}, [3]uint32{32, 1, 1}, 0, c.Stream(), unsafe.Pointer(&p))
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, c.FuncSetMaxDynamicShared(f, 1024), ErrClosed)
	_, err = module.Function("block_sum_bf16")
	assert.ErrorIs(t, err, ErrClosed)
}

func TestLoadReportsMissingSymbol(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc)")
	}
	dir := t.TempDir()
	source := filepath.Join(dir, "empty.c")
	require.NoError(t, os.WriteFile(source, []byte("int cuInit(unsigned int flags) { return 0; }\n"), 0o644))
	lib := filepath.Join(dir, "libempty.so")
	out, err := exec.Command(cc, "-shared", "-fPIC", "-o", lib, source).CombinedOutput()
	require.NoError(t, err, "%s", out)

	_, err = loadDriver(lib)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lacks the symbol cuDriverGetVersion")
	assert.Contains(t, err.Error(), lib)
	_, err = loadCuBLAS(lib)
	assert.ErrorContains(t, err, "lacks the symbol cublasCreate_v2")
	_, err = LoadNVRTC(Paths{NVRTCLibrary.Name: lib})
	assert.ErrorContains(t, err, "lacks the symbol nvrtcVersion")
}
