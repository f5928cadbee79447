package cudalib

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// touch creates an empty file at dir/name.
func touch(t *testing.T, dir, name string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	return path
}

func TestSearchDirsOrder(t *testing.T) {
	env := map[string]string{"LD_LIBRARY_PATH": "/a:/b:/a", "CUDA_PATH": "/opt/cuda"}
	dirs := SearchDirs(func(k string) string { return env[k] })
	require.GreaterOrEqual(t, len(dirs), 5)
	assert.Equal(t, []string{"/a", "/b", "/opt/cuda/lib64", "/opt/cuda/lib", "/usr/local/cuda/lib64"}, dirs[:5])
	assert.Contains(t, dirs, "/usr/lib/x86_64-linux-gnu")
	assert.Contains(t, dirs, "/usr/lib/wsl/lib")
}

func TestVersionedDirsNewestFirst(t *testing.T) {
	dirs := []string{"/usr/local/cuda-11.8/lib64", "/usr/local/cuda-12.10/lib64", "/usr/local/cuda-12.4/lib64"}
	sorted := append([]string(nil), dirs...)
	slices.SortFunc(sorted, compareVersionedDirs)
	assert.Equal(t, []string{"/usr/local/cuda-12.10/lib64", "/usr/local/cuda-12.4/lib64", "/usr/local/cuda-11.8/lib64"}, sorted)
}

func TestFindPrefersNewestSoname(t *testing.T) {
	root := t.TempDir()
	first, second := filepath.Join(root, "first"), filepath.Join(root, "second")
	driver := touch(t, second, "libcuda.so.1")
	touch(t, first, "libnvrtc.so.12")
	nvrtc13 := touch(t, second, "libnvrtc.so.13")
	cublas := touch(t, first, "libcublas.so.12")
	touch(t, second, "libcublas.so.12")

	paths, err := Find(Libraries, []string{first, second})
	require.NoError(t, err)
	assert.Equal(t, driver, paths[DriverLibrary.Name])
	assert.Equal(t, nvrtc13, paths[NVRTCLibrary.Name], "a newer soname wins over an earlier folder")
	assert.Equal(t, cublas, paths[CuBLASLibrary.Name], "with equal sonames the earlier folder wins")
}

func TestFindNamesMissingLibraries(t *testing.T) {
	dir := t.TempDir()
	touch(t, dir, "libcuda.so.1")
	touch(t, filepath.Join(dir, "libnvrtc.so.12"), "not-a-library") // a folder does not count

	paths, err := Find(Libraries, []string{dir})
	var missing *MissingError
	require.True(t, errors.As(err, &missing), "err = %v", err)
	assert.Equal(t, []Library{NVRTCLibrary, CuBLASLibrary}, missing.Missing)
	assert.Contains(t, err.Error(), "NVRTC (libnvrtc.so.13, libnvrtc.so.12, libnvrtc.so.11.2, libnvrtc.so)")
	assert.Contains(t, err.Error(), "cuBLAS")
	assert.Contains(t, err.Error(), dir)
	assert.Contains(t, err.Error(), "CUDA_PATH")
	assert.Equal(t, filepath.Join(dir, "libcuda.so.1"), paths[DriverLibrary.Name])
}

func TestSearchDirsNVRTCFolders(t *testing.T) {
	env := map[string]string{"RINGTUNE_NVRTC_PATH": "/nvrtc:/more", "LD_LIBRARY_PATH": "/a", "HOME": "/home/u"}
	dirs := SearchDirs(func(k string) string { return env[k] })
	require.GreaterOrEqual(t, len(dirs), 3)
	assert.Equal(t, []string{"/nvrtc", "/more", "/a"}, dirs[:3], "RINGTUNE_NVRTC_PATH comes first")
	assert.Equal(t, "/home/u/.cache/ringtune/nvrtc/lib", dirs[len(dirs)-1], "the install script's default folder comes last")

	env["RINGTUNE_CACHE"] = "/cache"
	dirs = SearchDirs(func(k string) string { return env[k] })
	assert.Equal(t, "/cache/nvrtc/lib", dirs[len(dirs)-1])

	dirs = SearchDirs(func(string) string { return "" })
	assert.NotContains(t, dirs, "", "without HOME or RINGTUNE_CACHE there is no default folder")
	assert.NotContains(t, dirs, filepath.Join(".cache", "ringtune", "nvrtc", "lib"))
}

func TestMissingNVRTCNamesInstallScript(t *testing.T) {
	_, err := Find([]Library{NVRTCLibrary}, []string{t.TempDir()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "scripts/install-nvrtc.sh")
	assert.Contains(t, err.Error(), "RINGTUNE_NVRTC_PATH")
}
