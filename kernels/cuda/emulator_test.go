package cuda

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// The emulator (testdata/emulator/cuda_emu.h) runs the kernels on the CPU with
// g++, so that their indexing and synchronization are tested on machines
// without a GPU. TestKernelsOnEmulator checks them against float64
// references. Without a GPU, the device tests run the whole backend on an
// emulated device (see emulatedLibs).

// emulatorDir returns the absolute path of testdata/emulator.
func emulatorDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "emulator"))
	require.NoError(t, err)
	return dir
}

// emulatedKernels returns the kernel sources as one C++ translation unit for
// the emulator: cuda_emu.h, the common header once, and every .cu body.
func emulatedKernels() (string, error) {
	sources, err := kernelSources()
	if err != nil {
		return "", err
	}
	var program strings.Builder
	program.WriteString("#include \"cuda_emu.h\"\n")
	for i, src := range sources {
		body := src.Source
		if i > 0 {
			// Each source starts with the common header, which the
			// first one already brought in.
			body = body[strings.Index(body, "#line 1"):]
		}
		program.WriteString(emulatedSource(body))
		program.WriteString("\n")
	}
	return program.String(), nil
}

// emulatedSource rewrites CUDA's shared-memory declarations for the emulator:
// the dynamic shared array becomes the emulator's buffer, and a static
// __shared__ array a function-level static.
func emulatedSource(src string) string {
	src = strings.ReplaceAll(src, "extern __shared__ float smem[];", "float* smem = emu_dynamic_smem();")
	return strings.ReplaceAll(src, "__shared__", "static")
}

// gxxFlags are the g++ flags of emulated code. _FORTIFY_SOURCE's checked
// longjmp rejects the emulator's jumps between coroutine stacks.
var gxxFlags = []string{"-std=c++20", "-O2", "-U_FORTIFY_SOURCE", "-Wno-unknown-pragmas"}

// runCommand runs a build command with a timeout and returns its output in
// the error.
func runCommand(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// TestKernelsOnEmulator compiles the kernel sources with g++ against the
// emulator and runs testdata/emulator/reference.cc, which compares the
// attention, decode, cross-entropy, RMSNorm, RoPE and sum-of-squares kernels
// with float64 references. It skips without g++. RINGTUNE_EMULATOR_ASAN=1
// builds it with AddressSanitizer, which also catches reads and writes out
// of bounds of global and shared memory, in about 30 s instead of 3 s.
func TestKernelsOnEmulator(t *testing.T) {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skipf("g++ not found, so the kernels are not emulated: %v", err)
	}
	dir := emulatorDir(t)
	reference, err := os.ReadFile(filepath.Join(dir, "reference.cc"))
	require.NoError(t, err)
	program, err := emulatedKernels()
	require.NoError(t, err)
	program += "#line 1 \"reference.cc\"\n" + string(reference)

	work := t.TempDir()
	source := filepath.Join(work, "reference.cc")
	require.NoError(t, os.WriteFile(source, []byte(program), 0o644))
	binary := filepath.Join(work, "reference")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{}, gxxFlags...)
	if os.Getenv("RINGTUNE_EMULATOR_ASAN") == "1" {
		args = append(args, "-fsanitize=address", "-g")
	}
	args = append(args, "-I", dir, "-o", binary, source)
	require.NoError(t, runCommand(ctx, gxx, args...), "compile the emulated kernels")
	out, err := exec.CommandContext(ctx, binary).CombinedOutput()
	t.Logf("emulator output:\n%s", out)
	require.NoError(t, err, "a kernel differs from its float64 reference; see the FAIL lines above")
}

// buildEmulatedDevice builds, in dir, a shared library that is both a CUDA
// driver and cuBLAS: internal/cudalib/testdata/fakecuda.c for memory,
// streams, events and a float64 GemmEx, and testdata/emulator/device.cc with
// the kernels for modules and launches. It returns the library's path.
func buildEmulatedDevice(dir string) (string, error) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		return "", fmt.Errorf("no C compiler (cc): %w", err)
	}
	gxx, err := exec.LookPath("g++")
	if err != nil {
		return "", fmt.Errorf("no C++ compiler (g++): %w", err)
	}
	emulator, err := filepath.Abs(filepath.Join("testdata", "emulator"))
	if err != nil {
		return "", err
	}
	program, err := emulatedKernels()
	if err != nil {
		return "", err
	}
	var table strings.Builder
	table.WriteString("#define EMU_KERNEL_TABLE")
	var fn functions
	for i, k := range fn.table() {
		if i > 0 {
			table.WriteString(",")
		}
		fmt.Fprintf(&table, " \\\n  EMU_KERNEL(%s)", k.name)
	}
	program += table.String() + "\n#include \"device.cc\"\n"
	kernelsSource := filepath.Join(dir, "kernels.cc")
	if err := os.WriteFile(kernelsSource, []byte(program), 0o644); err != nil {
		return "", err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fake := filepath.Join("internal", "cudalib", "testdata", "fakecuda.c")
	fakeObject := filepath.Join(dir, "fakecuda.o")
	// The fake's own kernel entry points, which run one test kernel, give way
	// to device.cc's.
	if err := runCommand(ctx, cc, "-c", "-fPIC", "-O1",
		"-DcuModuleGetFunction=fakecuda_cuModuleGetFunction", "-DcuLaunchKernel=fakecuda_cuLaunchKernel",
		"-DcuFuncSetAttribute=fakecuda_cuFuncSetAttribute", "-DcuFuncGetParamInfo=fakecuda_cuFuncGetParamInfo",
		"-o", fakeObject, fake); err != nil {
		return "", err
	}
	kernelsObject := filepath.Join(dir, "kernels.o")
	args := append(append([]string{}, gxxFlags...), "-fPIC", "-c", "-I", emulator, "-o", kernelsObject, kernelsSource)
	if err := runCommand(ctx, gxx, args...); err != nil {
		return "", err
	}
	library := filepath.Join(dir, "libemulatedcuda.so")
	if err := runCommand(ctx, gxx, "-shared", "-o", library, fakeObject, kernelsObject, "-lm"); err != nil {
		return "", err
	}
	return library, nil
}

var emulated struct {
	once sync.Once
	libs *cudalib.Libs
	err  error
}

// emulatedLibs builds the emulated device once per test binary and loads it
// as the CUDA driver and cuBLAS, with the real NVRTC, which compiles the
// kernels as on a GPU. Its device reports compute capability 9.0.
func emulatedLibs() (*cudalib.Libs, error) {
	emulated.once.Do(func() {
		nvrtc, err := loadNVRTC()
		if err != nil {
			emulated.err = fmt.Errorf("NVRTC is not available: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "ringtune-emulated-cuda-")
		if err != nil {
			emulated.err = err
			return
		}
		// Linux keeps a loaded library mapped after its file is removed.
		defer os.RemoveAll(dir)
		library, err := buildEmulatedDevice(dir)
		if err != nil {
			emulated.err = fmt.Errorf("build the emulated device: %w", err)
			return
		}
		emulated.libs, emulated.err = cudalib.Load(cudalib.Paths{
			cudalib.DriverLibrary.Name: library,
			cudalib.NVRTCLibrary.Name:  nvrtc.Path,
			cudalib.CuBLASLibrary.Name: library,
		})
	})
	return emulated.libs, emulated.err
}
