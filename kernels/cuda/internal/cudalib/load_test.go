//go:build linux

package cudalib

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadRejectsNonLibrary(t *testing.T) {
	dir := t.TempDir()
	paths := Paths{}
	for _, lib := range Libraries {
		path := filepath.Join(dir, lib.Files[0])
		require.NoError(t, os.WriteFile(path, []byte("not an ELF file"), 0o644))
		paths[lib.Name] = path
	}
	_, err := Load(paths)
	require.Error(t, err)
	assert.Contains(t, err.Error(), paths[DriverLibrary.Name])
	assert.Contains(t, err.Error(), "CUDA driver")
}

func TestLoadFindsDevices(t *testing.T) {
	// RINGTUNE_REQUIRE_GPU=1 turns the skips below into failures.
	skip := t.Skipf
	if os.Getenv("RINGTUNE_REQUIRE_GPU") == "1" {
		skip = t.Fatalf
	}
	paths, err := Find(Libraries, SearchDirs(os.Getenv))
	if err != nil {
		skip("no CUDA here, so the device query is not run: %v", err)
	}
	libs, err := Load(paths)
	require.NoError(t, err, "the libraries export every entry point the binding resolves")
	major, minor, patch, err := libs.CuBLASVersion()
	require.NoError(t, err, "cublasGetProperty needs no GPU")
	assert.GreaterOrEqual(t, major, 11, "cuBLAS %d.%d.%d", major, minor, patch)

	version, devices, err := libs.Devices()
	if err != nil {
		assert.Contains(t, err.Error(), "CUDA_ERROR_", "the driver names its error")
		skip("the CUDA libraries load, but no device is usable: %v", err)
	}
	assert.GreaterOrEqual(t, version, 11020, "CUDA 11.2 or later")
	for _, d := range devices {
		assert.GreaterOrEqual(t, d.Major, 7, "device %d has compute capability %d.%d", d.Ordinal, d.Major, d.Minor)
	}
	t.Logf("CUDA %d.%d driver, devices %+v", version/1000, version%1000/10, devices)
}
