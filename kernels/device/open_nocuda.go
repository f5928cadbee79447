//go:build nocuda

package device

import "github.com/ringtune/ringtune/kernels"

// CUDABuilt reports whether this binary contains the CUDA backend, which the
// nocuda build tag leaves out.
const CUDABuilt = false

func probeCUDA(int) error { return errNoCUDA }

func openCUDA(int, Options) (kernels.Backend, error) {
	return nil, errNoCUDA
}
