// Package cudalib finds and loads the CUDA driver, NVRTC and cuBLAS libraries at
// run time with github.com/ebitengine/purego, so that one binary runs on hosts with
// and without CUDA. It is the only package that touches the C libraries, so a cgo
// binding could replace it without changing the kernels.
//
// NVRTC loads on its own (FindNVRTC, LoadNVRTC), without the driver, cuBLAS or a
// GPU, so kernels compile in CI. Open loads all three libraries and returns a
// Context: one device with a compute stream and a cuBLAS handle. Every Context
// method makes the context current on the calling OS thread itself, so callers
// need not lock goroutines to threads (see Context).
//
// Importing it makes a CGO_ENABLED=0 binary link libc dynamically, because
// purego's dlopen needs the system's dynamic loader.
package cudalib

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Library names a shared library and the file names it goes by, newest first.
type Library struct {
	Name  string
	Files []string
}

// The libraries a CUDA backend loads. The driver keeps its soname across CUDA
// releases; NVRTC and cuBLAS carry the CUDA major version (13, 12 or 11) in
// theirs, and NVRTC 11.2 to 11.8 is libnvrtc.so.11.2.
var (
	DriverLibrary = Library{Name: "CUDA driver", Files: []string{"libcuda.so.1", "libcuda.so"}}
	NVRTCLibrary  = Library{Name: "NVRTC", Files: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"}}
	CuBLASLibrary = Library{Name: "cuBLAS", Files: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}}
)

// Libraries are the three libraries in the order they load.
var Libraries = []Library{DriverLibrary, NVRTCLibrary, CuBLASLibrary}

// SearchDirs returns the folders searched for the libraries, in this order. Find
// takes each library from the first of them that contains it.
//   - RINGTUNE_NVRTC_PATH and LD_LIBRARY_PATH, each a colon-separated list;
//   - $CUDA_PATH/lib64 and $CUDA_PATH/lib;
//   - the CUDA toolkit's usual folders, /usr/local/cuda and then /usr/local/cuda-*,
//     newest version first;
//   - the distributions' library folders and WSL's driver folder;
//   - last, the default folder of scripts/install-nvrtc.sh:
//     $RINGTUNE_CACHE/nvrtc/lib, or ~/.cache/ringtune/nvrtc/lib when RINGTUNE_CACHE
//     is unset.
//
// getenv reads the environment; os.Getenv in production.
func SearchDirs(getenv func(string) string) []string {
	var dirs []string
	add := func(dir string) {
		if dir != "" && !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	for _, dir := range filepath.SplitList(getenv("RINGTUNE_NVRTC_PATH")) {
		add(dir)
	}
	for _, dir := range filepath.SplitList(getenv("LD_LIBRARY_PATH")) {
		add(dir)
	}
	if root := getenv("CUDA_PATH"); root != "" {
		add(filepath.Join(root, "lib64"))
		add(filepath.Join(root, "lib"))
	}
	add("/usr/local/cuda/lib64")
	versioned, _ := filepath.Glob("/usr/local/cuda-*/lib64")
	slices.SortFunc(versioned, compareVersionedDirs)
	for _, dir := range versioned {
		add(dir)
	}
	for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/lib/wsl/lib"} {
		add(dir)
	}
	add(nvrtcInstallDir(getenv))
	return dirs
}

// nvrtcInstallDir returns the default folder of scripts/install-nvrtc.sh, or ""
// when neither RINGTUNE_CACHE nor HOME is set.
func nvrtcInstallDir(getenv func(string) string) string {
	cache := getenv("RINGTUNE_CACHE")
	if cache == "" {
		home := getenv("HOME")
		if home == "" {
			return ""
		}
		cache = filepath.Join(home, ".cache", "ringtune")
	}
	return filepath.Join(cache, "nvrtc", "lib")
}

// compareVersionedDirs orders /usr/local/cuda-X.Y folders newest first.
func compareVersionedDirs(a, b string) int {
	va, vb := cudaVersion(a), cudaVersion(b)
	for i := range 2 {
		if va[i] != vb[i] {
			return vb[i] - va[i]
		}
	}
	return strings.Compare(a, b)
}

// cudaVersion parses the X.Y of a /usr/local/cuda-X.Y/lib64 path, or 0.0.
func cudaVersion(dir string) [2]int {
	var v [2]int
	name := filepath.Base(filepath.Dir(dir))
	fmt.Sscanf(strings.TrimPrefix(name, "cuda-"), "%d.%d", &v[0], &v[1])
	return v
}

// Paths holds the file found for each library.
type Paths map[string]string

// MissingError lists the libraries that were not found and where they were sought.
type MissingError struct {
	Missing []Library
	Dirs    []string
}

func (e *MissingError) Error() string {
	var names []string
	for _, lib := range e.Missing {
		names = append(names, fmt.Sprintf("%s (%s)", lib.Name, strings.Join(lib.Files, ", ")))
	}
	hint := "install the NVIDIA driver and the CUDA toolkit's NVRTC and cuBLAS (CUDA 11.2 or later), or point CUDA_PATH or LD_LIBRARY_PATH at them"
	if len(e.Missing) == 1 && e.Missing[0].Name == NVRTCLibrary.Name {
		hint = "install the CUDA toolkit's NVRTC (CUDA 11.2 or later), or run scripts/install-nvrtc.sh and set RINGTUNE_NVRTC_PATH to the folder it prints"
	}
	return fmt.Sprintf("CUDA is not available: %s not found in %s; %s",
		strings.Join(names, " and "), strings.Join(e.Dirs, ":"), hint)
}

// Find returns, for each library, a file from the first folder of dirs that
// contains one of lib.Files, the newest soname within that folder. So an older
// library in an earlier folder wins over a newer one in a later folder. A library
// that none of dirs contains is reported in a *MissingError.
func Find(libs []Library, dirs []string) (Paths, error) {
	paths := Paths{}
	var missing []Library
	for _, lib := range libs {
		path := findOne(lib, dirs)
		if path == "" {
			missing = append(missing, lib)
			continue
		}
		paths[lib.Name] = path
	}
	if len(missing) > 0 {
		return paths, &MissingError{Missing: missing, Dirs: dirs}
	}
	return paths, nil
}

func findOne(lib Library, dirs []string) string {
	for _, dir := range dirs {
		for _, file := range lib.Files {
			path := filepath.Join(dir, file)
			if info, err := os.Stat(path); err == nil && !info.IsDir() {
				return path
			}
		}
	}
	return ""
}

// ErrNotLinux is returned on systems where the loader is not implemented.
var ErrNotLinux = errors.New("the CUDA backend runs on Linux only")
