//go:build linux

package cudalib

import (
	"fmt"

	"github.com/ebitengine/purego"
)

// Driver API entry points the backend needs first: enough to tell whether a
// usable device exists. The kernels add theirs as they are written.
type driverAPI struct {
	cuInit               func(flags uint32) int32
	cuDriverGetVersion   func(version *int32) int32
	cuDeviceGetCount     func(count *int32) int32
	cuDeviceGet          func(device *int32, ordinal int32) int32
	cuDeviceGetAttribute func(value *int32, attribute int32, device int32) int32
}

// CUDA driver constants, from cuda.h.
const (
	cudaSuccess                             = 0
	cuDeviceAttributeComputeCapabilityMajor = 75
	cuDeviceAttributeComputeCapabilityMinor = 76
)

// Libs holds the loaded libraries.
type Libs struct {
	Paths   Paths
	handles map[string]uintptr
	driver  driverAPI
}

// Load opens the libraries of paths with dlopen and resolves the driver's entry
// points. It fails with the library and symbol that could not be loaded.
func Load(paths Paths) (*Libs, error) {
	l := &Libs{Paths: paths, handles: map[string]uintptr{}}
	for _, lib := range Libraries {
		path, ok := paths[lib.Name]
		if !ok {
			return nil, fmt.Errorf("load CUDA: no file for %s", lib.Name)
		}
		handle, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			return nil, fmt.Errorf("load CUDA: dlopen %s (%s): %w", path, lib.Name, err)
		}
		l.handles[lib.Name] = handle
	}
	driver := l.handles[Driver.Name]
	for name, fptr := range map[string]any{
		"cuInit": &l.driver.cuInit, "cuDriverGetVersion": &l.driver.cuDriverGetVersion,
		"cuDeviceGetCount": &l.driver.cuDeviceGetCount, "cuDeviceGet": &l.driver.cuDeviceGet,
		"cuDeviceGetAttribute": &l.driver.cuDeviceGetAttribute,
	} {
		sym, err := purego.Dlsym(driver, name)
		if err != nil {
			return nil, fmt.Errorf("load CUDA: %s lacks %s: %w", paths[Driver.Name], name, err)
		}
		purego.RegisterFunc(fptr, sym)
	}
	return l, nil
}

// Device describes one CUDA device.
type Device struct {
	Ordinal      int
	Major, Minor int // compute capability, such as 9.0 on an H100 or H200
}

// Devices initializes the driver and lists the devices with their compute
// capability. DriverVersion is the CUDA version the driver supports, such as
// 12040 for 12.4.
func (l *Libs) Devices() (driverVersion int, devices []Device, err error) {
	if rc := l.driver.cuInit(0); rc != cudaSuccess {
		return 0, nil, fmt.Errorf("cuInit failed with CUDA error %d: check that the NVIDIA driver is loaded and a GPU is visible (nvidia-smi)", rc)
	}
	var version, count int32
	if rc := l.driver.cuDriverGetVersion(&version); rc != cudaSuccess {
		return 0, nil, fmt.Errorf("cuDriverGetVersion failed with CUDA error %d", rc)
	}
	if rc := l.driver.cuDeviceGetCount(&count); rc != cudaSuccess {
		return 0, nil, fmt.Errorf("cuDeviceGetCount failed with CUDA error %d", rc)
	}
	for i := range count {
		var dev, major, minor int32
		if rc := l.driver.cuDeviceGet(&dev, i); rc != cudaSuccess {
			return 0, nil, fmt.Errorf("cuDeviceGet(%d) failed with CUDA error %d", i, rc)
		}
		if rc := l.driver.cuDeviceGetAttribute(&major, cuDeviceAttributeComputeCapabilityMajor, dev); rc != cudaSuccess {
			return 0, nil, fmt.Errorf("compute capability of device %d: CUDA error %d", i, rc)
		}
		if rc := l.driver.cuDeviceGetAttribute(&minor, cuDeviceAttributeComputeCapabilityMinor, dev); rc != cudaSuccess {
			return 0, nil, fmt.Errorf("compute capability of device %d: CUDA error %d", i, rc)
		}
		devices = append(devices, Device{Ordinal: int(i), Major: int(major), Minor: int(minor)})
	}
	return int(version), devices, nil
}
