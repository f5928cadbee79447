package cuda

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestKernelsOnEmulator compiles the kernel sources with g++ against
// testdata/emulator/cuda_emu.h, a CPU emulation of blocks, barriers and warp
// shuffles, and runs testdata/emulator/reference.cc, which compares the
// attention, decode, cross-entropy, RMSNorm, RoPE and sum-of-squares kernels
// with float64 references. It checks the kernels' indexing and
// synchronization on machines without a GPU. It skips without a g++ that
// supports C++20, and in -short mode.
func TestKernelsOnEmulator(t *testing.T) {
	if testing.Short() {
		t.Skip("the emulated kernels take about 30 s; skipped in -short mode")
	}
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skipf("g++ not found, so the kernels are not emulated: %v", err)
	}
	sources, err := kernelSources()
	require.NoError(t, err)
	emulatorDir, err := filepath.Abs(filepath.Join("testdata", "emulator"))
	require.NoError(t, err)
	reference, err := os.ReadFile(filepath.Join(emulatorDir, "reference.cc"))
	require.NoError(t, err)

	// Each source already starts with the common header. The emulator
	// includes it once and every .cu body after it.
	var program strings.Builder
	program.WriteString("#include \"cuda_emu.h\"\n")
	for i, src := range sources {
		body := src.Source
		if i > 0 {
			body = body[strings.Index(body, "#line 1"):]
		}
		program.WriteString(emulatedSource(body))
		program.WriteString("\n")
	}
	program.WriteString("#line 1 \"reference.cc\"\n")
	program.Write(reference)

	dir := t.TempDir()
	source := filepath.Join(dir, "emulated.cc")
	require.NoError(t, os.WriteFile(source, []byte(program.String()), 0o644))
	binary := filepath.Join(dir, "emulated")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, gxx, "-std=c++20", "-O2", "-Wno-unknown-pragmas", "-pthread", "-I", emulatorDir, "-o", binary, source)
	if out, err := build.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "barrier") && strings.Contains(string(out), "No such file") {
			t.Skipf("g++ lacks C++20's <barrier>, so the kernels are not emulated: %s", out)
		}
		t.Fatalf("g++ failed to compile the emulated kernels: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, binary).CombinedOutput()
	t.Logf("emulator output:\n%s", out)
	require.NoError(t, err, "a kernel differs from its float64 reference; see the FAIL lines above")
}

// emulatedSource rewrites CUDA's shared-memory declarations for the emulator:
// the dynamic shared array becomes the emulator's buffer, and a static
// __shared__ array a function-level static.
func emulatedSource(src string) string {
	src = strings.ReplaceAll(src, "extern __shared__ float smem[];", "float* smem = emu_dynamic_smem();")
	return strings.ReplaceAll(src, "__shared__", "static")
}
