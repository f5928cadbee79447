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

func TestFindFollowsFolderOrder(t *testing.T) {
	root := t.TempDir()
	first, second := filepath.Join(root, "first"), filepath.Join(root, "second")
	driver := touch(t, second, "libcuda.so.1")
	nvrtc112 := touch(t, first, "libnvrtc.so.11.2")
	touch(t, second, "libnvrtc.so.13")
	cublas := touch(t, first, "libcublas.so.12")
	touch(t, second, "libcublas.so.12")

	paths, err := Find(Libraries, []string{first, second})
	require.NoError(t, err)
	assert.Equal(t, driver, paths[DriverLibrary.Name], "a library only in a later folder is found there")
	assert.Equal(t, nvrtc112, paths[NVRTCLibrary.Name], "an earlier folder wins over a newer soname in a later one")
	assert.Equal(t, cublas, paths[CuBLASLibrary.Name], "with equal sonames the earlier folder wins")
}

func TestFindPrefersNewestSonameInFolder(t *testing.T) {
	dir := t.TempDir()
	touch(t, dir, "libnvrtc.so")
	touch(t, dir, "libnvrtc.so.11.2")
	nvrtc12 := touch(t, dir, "libnvrtc.so.12")

	paths, err := Find([]Library{NVRTCLibrary}, []string{dir})
	require.NoError(t, err)
	assert.Equal(t, nvrtc12, paths[NVRTCLibrary.Name])
}

// With LD_LIBRARY_PATH=A holding NVRTC 11.2 and CUDA_PATH=B holding a newer
// soname, the library in A loads.
func TestFindHonorsSearchDirsOrder(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	nvrtc112 := touch(t, a, "libnvrtc.so.11.2")
	touch(t, filepath.Join(b, "lib64"), "libnvrtc.so.12")
	env := map[string]string{"LD_LIBRARY_PATH": a, "CUDA_PATH": b}

	paths, err := Find([]Library{NVRTCLibrary}, SearchDirs(func(k string) string { return env[k] }))
	require.NoError(t, err)
	assert.Equal(t, nvrtc112, paths[NVRTCLibrary.Name])

	env["RINGTUNE_NVRTC_PATH"] = filepath.Join(b, "lib64")
	paths, err = Find([]Library{NVRTCLibrary}, SearchDirs(func(k string) string { return env[k] }))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(b, "lib64", "libnvrtc.so.12"), paths[NVRTCLibrary.Name], "RINGTUNE_NVRTC_PATH comes first")
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
