package cuda

import (
	"fmt"

	"github.com/ringtune/ringtune/kernels/cuda/internal/cudalib"
)

// Probe checks, without opening a context or compiling kernels, that CUDA can
// serve device: the driver, NVRTC and cuBLAS load, the driver initializes, and
// the device exists. A node calls it before it joins a job, so that a host
// without a usable GPU fails alone rather than the whole job after the
// rendezvous.
func Probe(device int) error {
	libs, err := cudalib.LoadAll()
	if err != nil {
		return fmt.Errorf("kernels/cuda: %w", err)
	}
	_, devices, err := libs.Devices()
	if err != nil {
		return fmt.Errorf("kernels/cuda: %w", err)
	}
	if device < 0 || device >= len(devices) {
		return fmt.Errorf("kernels/cuda: device %d not found: the driver reports %d devices (check CUDA_VISIBLE_DEVICES)", device, len(devices))
	}
	return nil
}
