//go:build !nocuda

package device

import (
	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cuda"
)

// CUDABuilt reports whether this binary contains the CUDA backend, which the
// nocuda build tag leaves out.
const CUDABuilt = true

func probeCUDA(ordinal int) error { return cuda.Probe(ordinal) }

func openCUDA(ordinal int, opts Options) (kernels.Backend, error) {
	backend, err := cuda.New(cuda.Options{
		Device:                ordinal,
		CacheDir:              opts.CacheDir,
		StrictFP32:            opts.StrictFP32,
		CrossEntropyChunkRows: opts.CrossEntropyChunkRows,
	})
	if err != nil {
		return nil, err
	}
	return backend, nil
}
