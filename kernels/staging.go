package kernels

// HostStager is implemented by backends whose tensors live in device memory,
// such as the CUDA backend. The trainer stages each gradient bucket through a
// page-locked host buffer with it: the device-to-host copy of one bucket runs
// on a copy stream while the compute stream goes on with the backward pass of
// earlier layers. The CPU backend does not implement it, because its tensors
// are host memory already.
type HostStager interface {
	// AllocPinnedF32 returns n float32 elements of page-locked host memory.
	AllocPinnedF32(n int) ([]float32, error)
	// FreePinnedF32 releases a buffer returned by AllocPinnedF32.
	FreePinnedF32(buf []float32)
	// CopyToHostAsyncF32 queues a copy of the F32 tensor src into dst, a pinned
	// buffer of src.Len() elements, ordered after every op issued so far, and
	// returns without waiting. wait blocks until the copy is complete and
	// returns its error. dst must not be read or reused before wait returns.
	CopyToHostAsyncF32(dst []float32, src Tensor) (wait func() error, err error)
}
