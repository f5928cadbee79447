//go:build linux

package cudalib

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// loadTestNVRTC loads NVRTC, or skips the test when it is missing. With
// RINGTUNE_REQUIRE_NVRTC=1, as in CI, a missing NVRTC fails the test.
func loadTestNVRTC(t *testing.T) *NVRTC {
	t.Helper()
	n, err := FindNVRTC()
	var missing *MissingError
	if errors.As(err, &missing) {
		message := fmt.Sprintf("NVRTC not found, so the compiler tests do not run: %v. "+
			"To run them, install NVRTC with `export RINGTUNE_NVRTC_PATH=$(scripts/install-nvrtc.sh)`", err)
		if os.Getenv("RINGTUNE_REQUIRE_NVRTC") == "1" {
			t.Fatal(message)
		}
		t.Skip(message)
	}
	require.NoError(t, err, "NVRTC was found but does not load")
	return n
}

func readTestKernel(t *testing.T) string {
	t.Helper()
	source, err := os.ReadFile(filepath.Join("testdata", "block_sum_bf16.cu"))
	require.NoError(t, err)
	return string(source)
}

// emCUDA is the ELF machine number of NVIDIA GPUs (EM_CUDA in elf.h).
const emCUDA = 190

func TestNVRTCVersionAndArchs(t *testing.T) {
	n := loadTestNVRTC(t)
	major, minor, err := n.Version()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, major*10+minor, 112, "NVRTC %d.%d is older than 11.2", major, minor)
	archs := n.SupportedArchs()
	assert.Contains(t, archs, 80, "NVRTC %d.%d should compile for sm_80", major, minor)
	assert.True(t, slices.IsSorted(archs), "archs %v", archs)
	t.Logf("NVRTC %d.%d at %s (builtins %q), architectures %v", major, minor, n.Path, n.BuiltinsPath, archs)
}

func TestNVRTCCompileCubin(t *testing.T) {
	n := loadTestNVRTC(t)
	source := readTestKernel(t)
	for _, arch := range []string{"sm_80", "sm_90"} {
		t.Run(arch, func(t *testing.T) {
			image, log, err := n.Compile(source, "block_sum_bf16.cu", arch, []string{"-std=c++14"})
			require.NoError(t, err, "log:\n%s", log)
			require.NotEmpty(t, image)

			a, err := parseArch(arch)
			require.NoError(t, err)
			if !slices.Contains(n.SupportedArchs(), a.number) {
				// An older NVRTC falls back to PTX for an older architecture.
				assert.Equal(t, ImagePTX, DetectImage(image))
				return
			}
			require.Equal(t, ImageCubin, DetectImage(image), "first bytes %q", image[:min(16, len(image))])
			require.Greater(t, len(image), 20)
			assert.Equal(t, uint16(emCUDA), binary.LittleEndian.Uint16(image[18:20]), "ELF e_machine")
			assert.True(t, bytes.Contains(image, []byte("block_sum_bf16")), "the cubin names the kernel")
		})
	}
}

func TestNVRTCCompilePTX(t *testing.T) {
	n := loadTestNVRTC(t)
	image, _, err := n.Compile(readTestKernel(t), "block_sum_bf16.cu", "compute_80", nil)
	require.NoError(t, err)
	require.Equal(t, ImagePTX, DetectImage(image))
	assert.Equal(t, byte(0), image[len(image)-1], "PTX ends with the NUL that cuModuleLoadData needs")
	ptx := string(image)
	assert.Contains(t, ptx, ".target sm_80")
	assert.Contains(t, ptx, ".entry block_sum_bf16")
	assert.Contains(t, ptx, "shfl.sync.down", "the warp shuffle")
	assert.Contains(t, ptx, ".shared", "the shared array")
}

func TestNVRTCNewerArchFallsBackToPTX(t *testing.T) {
	n := loadTestNVRTC(t)
	archs := n.SupportedArchs()
	require.NotEmpty(t, archs)
	newest := archs[len(archs)-1]

	image, _, err := n.Compile(readTestKernel(t), "future.cu", fmt.Sprintf("sm_%d", newest+10), nil)
	require.NoError(t, err)
	require.Equal(t, ImagePTX, DetectImage(image))
	assert.Contains(t, string(image), fmt.Sprintf(".target sm_%d", newest), "PTX for the newest supported architecture")

	_, _, err = n.Compile(readTestKernel(t), "future.cu", fmt.Sprintf("sm_%da", newest+10), nil)
	require.Error(t, err, "an architecture-specific target has no fallback")
	assert.Contains(t, err.Error(), "architecture-specific")

	_, _, err = n.Compile(readTestKernel(t), "ancient.cu", "sm_10", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot compile for sm_10")
}

func TestNVRTCSyntaxErrorCarriesLog(t *testing.T) {
	n := loadTestNVRTC(t)
	source := "extern \"C\" __global__ void broken(float* x) {\n" +
		"    x[0] = 1.0f\n" + // the missing semicolon
		"}\n"
	image, log, err := n.Compile(source, "broken.cu", "sm_80", nil)
	require.Error(t, err)
	assert.Nil(t, image)

	var compileErr *CompileError
	require.True(t, errors.As(err, &compileErr), "err = %v", err)
	assert.Equal(t, "broken.cu", compileErr.Program)
	assert.Equal(t, "sm_80", compileErr.Arch)
	assert.Equal(t, log, compileErr.Log)
	assert.Contains(t, log, "broken.cu(", "the log names the file and line")
	assert.Contains(t, err.Error(), "broken.cu")
	assert.Contains(t, err.Error(), "NVRTC_ERROR_COMPILATION")
	assert.Contains(t, err.Error(), strings.TrimSpace(log))

	var callErr *Error
	require.True(t, errors.As(err, &callErr))
	assert.Equal(t, "nvrtcCompileProgram", callErr.Call)
}

func TestNVRTCRejectsBadInput(t *testing.T) {
	n := loadTestNVRTC(t)
	source := readTestKernel(t)
	cases := []struct {
		name, source, program, arch string
		options                     []string
		want                        string
	}{
		{"arch option", source, "a.cu", "sm_80", []string{"-arch=sm_90"}, "sets the architecture"},
		{"long arch option", source, "a.cu", "sm_80", []string{"--gpu-architecture=sm_90"}, "sets the architecture"},
		{"malformed arch", source, "a.cu", "sm80", nil, "invalid CUDA architecture"},
		{"foreign arch", source, "a.cu", "gfx90a", nil, "invalid CUDA architecture"},
		{"empty arch", source, "a.cu", "", nil, "invalid CUDA architecture"},
		{"NUL in source", "__global__ void f() {}\x00junk", "a.cu", "sm_80", nil, "NUL byte"},
		{"NUL in name", source, "a\x00.cu", "sm_80", nil, "NUL byte"},
		{"NUL in option", source, "a.cu", "sm_80", []string{"-D\x00X"}, "NUL byte"},
		{"unknown option", source, "a.cu", "sm_80", []string{"--no-such-option"}, "NVRTC_ERROR_INVALID_OPTION"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := n.Compile(tc.source, tc.program, tc.arch, tc.options)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestNVRTCEmptySourceCompiles(t *testing.T) {
	n := loadTestNVRTC(t)
	image, _, err := n.Compile("", "empty.cu", "sm_80", nil)
	require.NoError(t, err)
	assert.NotEqual(t, ImageUnknown, DetectImage(image))
}

func TestNVRTCConcurrentCompiles(t *testing.T) {
	n := loadTestNVRTC(t)
	source := readTestKernel(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = n.Compile(source, fmt.Sprintf("k%d.cu", i), "sm_80", []string{fmt.Sprintf("-DVARIANT=%d", i)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "compile %d", i)
	}
}

// TestNVRTCHalfHeaders logs whether NVRTC provides cuda_fp16.h and cuda_bf16.h
// without the CUDA toolkit's include folder, which decides whether kernels can
// include them. It passes either way.
func TestNVRTCHalfHeaders(t *testing.T) {
	n := loadTestNVRTC(t)
	major, minor, _ := n.Version()
	for _, header := range []string{"cuda_fp16.h", "cuda_bf16.h"} {
		source := fmt.Sprintf("#include <%s>\nextern \"C\" __global__ void f(float* x) { x[0] = 1.0f; }\n", header)
		_, log, err := n.Compile(source, "header.cu", "sm_80", nil)
		if err != nil {
			t.Logf("NVRTC %d.%d has no built-in %s: %s", major, minor, header, strings.TrimSpace(log))
			continue
		}
		t.Logf("NVRTC %d.%d provides %s built in", major, minor, header)
	}
}

func TestLoadNVRTCErrors(t *testing.T) {
	_, err := LoadNVRTC(Paths{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no file for NVRTC")

	path := filepath.Join(t.TempDir(), "libnvrtc.so.12")
	require.NoError(t, os.WriteFile(path, []byte("not an ELF file"), 0o644))
	_, err = LoadNVRTC(Paths{NVRTCLibrary.Name: path})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)

	var nilNVRTC *NVRTC
	_, _, err = nilNVRTC.Compile("", "a.cu", "sm_80", nil)
	assert.Error(t, err)
	_, _, err = nilNVRTC.Version()
	assert.Error(t, err)
}

func TestCompileCachedStoresAndReuses(t *testing.T) {
	n := loadTestNVRTC(t)
	source := readTestKernel(t)
	dir := t.TempDir()

	first, err := CompileCached(n, dir, source, "block_sum_bf16.cu", "sm_80", nil)
	require.NoError(t, err)
	require.Equal(t, ImageCubin, DetectImage(first))
	major, minor, _ := n.Version()
	path := filepath.Join(dir, cacheKey(source, "block_sum_bf16.cu", "sm_80", nil, major, minor)+".bin")
	stored, ok := readCacheEntry(path)
	require.True(t, ok, "the image is stored at %s", path)
	assert.Equal(t, first, stored)

	// A valid entry is returned as stored, without compiling: replace it with
	// an image NVRTC would never produce and expect that image back.
	require.NoError(t, writeCacheEntry(path, testPTX))
	cached, err := CompileCached(n, dir, source, "block_sum_bf16.cu", "sm_80", nil)
	require.NoError(t, err)
	assert.Equal(t, testPTX, cached)

	other, err := CompileCached(n, dir, source, "block_sum_bf16.cu", "sm_90", nil)
	require.NoError(t, err)
	assert.NotEqual(t, testPTX, other, "another architecture is another entry")
}

func TestCompileCachedRecompilesDamagedEntry(t *testing.T) {
	n := loadTestNVRTC(t)
	source := readTestKernel(t)
	major, minor, _ := n.Version()
	key := cacheKey(source, "block_sum_bf16.cu", "sm_80", nil, major, minor)
	good := encodeCacheEntry(testPTX)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-3] ^= 1

	damage := map[string]func(path string) error{
		"garbage":     func(path string) error { return os.WriteFile(path, []byte("garbage"), 0o644) },
		"empty":       func(path string) error { return os.WriteFile(path, nil, 0o644) },
		"truncated":   func(path string) error { return os.WriteFile(path, good[:len(good)-10], 0o644) },
		"flipped bit": func(path string) error { return os.WriteFile(path, flipped, 0o644) },
		"unreadable":  func(path string) error { return os.WriteFile(path, good, 0o000) },
		"a folder":    func(path string) error { return os.Mkdir(path, 0o755) },
	}
	for name, apply := range damage {
		t.Run(name, func(t *testing.T) {
			if name == "unreadable" && os.Geteuid() == 0 {
				t.Skip("root reads a file whatever its mode")
			}
			dir := t.TempDir()
			path := filepath.Join(dir, key+".bin")
			require.NoError(t, apply(path))

			image, err := CompileCached(n, dir, source, "block_sum_bf16.cu", "sm_80", nil)
			require.NoError(t, err)
			assert.Equal(t, ImageCubin, DetectImage(image), "the damaged entry is compiled anew")
			if name == "a folder" {
				return // a rename cannot replace a folder, so the cache stays as it was
			}
			stored, ok := readCacheEntry(path)
			require.True(t, ok, "the damaged entry is replaced")
			assert.Equal(t, image, stored)
		})
	}
}

func TestCompileCachedWithoutWritableDir(t *testing.T) {
	n := loadTestNVRTC(t)
	file := filepath.Join(t.TempDir(), "a-file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))

	image, err := CompileCached(n, filepath.Join(file, "cuda"), readTestKernel(t), "block_sum_bf16.cu", "sm_80", nil)
	require.NoError(t, err, "a cache folder that cannot be created only costs the cache")
	assert.Equal(t, ImageCubin, DetectImage(image))
}

func TestCompileCachedReturnsCompileError(t *testing.T) {
	n := loadTestNVRTC(t)
	dir := t.TempDir()
	_, err := CompileCached(n, dir, "this is not CUDA", "bad.cu", "sm_80", nil)
	var compileErr *CompileError
	require.True(t, errors.As(err, &compileErr), "err = %v", err)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a failed compile stores nothing")
}
