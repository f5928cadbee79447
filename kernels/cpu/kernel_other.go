//go:build !amd64

package cpu

func detectKernels() []*microKernel {
	return []*microKernel{genericKernel}
}
