package train

import (
	"fmt"

	"github.com/ringtune/ringtune/kernels"
)

// staging moves the gradient buckets of a device backend through pinned host
// buffers. Backward queues each finished bucket's copy to the host
// (copyToHost) on the goroutine that runs the ops. A launcher goroutine waits
// for the copies in bucket order and starts each bucket's all-reduce on its
// host buffer, so the copy of one bucket overlaps the backward pass of the
// layers before it. After backward, waitBucket copies each reduced bucket back
// into FlatGrads.
//
// The launcher calls the wait functions of CopyToHostAsyncF32 on its own
// goroutine while the stepper's goroutine goes on issuing ops, so a
// HostStager must allow that. The CUDA backend does, because its driver
// calls make the context current on whichever thread calls them.
type staging struct {
	stager  kernels.HostStager
	backend kernels.Backend
	views   []kernels.Tensor // per bucket, its range of FlatGrads
	host    [][]float32      // per bucket, a pinned buffer; nil for an empty bucket

	// Per step. waits[b] and errs[b] are written by the stepper's goroutine,
	// then by the launcher after it receives b, and read by the stepper's
	// goroutine after finishLaunches.
	waits    []func() error
	errs     []error
	launch   chan int      // buckets whose copy is queued, in the order queued; nil until the first
	launched chan struct{} // closed when the launcher has handled every bucket
}

// newStaging allocates a pinned buffer for every non-empty bucket of flat.
func newStaging(backend kernels.Backend, stager kernels.HostStager, flat kernels.Tensor, buckets []Bucket) (*staging, error) {
	st := &staging{
		stager:  stager,
		backend: backend,
		views:   make([]kernels.Tensor, len(buckets)),
		host:    make([][]float32, len(buckets)),
		waits:   make([]func() error, len(buckets)),
		errs:    make([]error, len(buckets)),
	}
	for b, bucket := range buckets {
		n := bucket.End - bucket.Start
		view, err := kernels.NewTensor(flat.Buffer(), flat.Offset()+bucket.Start, n)
		if err != nil {
			st.free()
			return nil, fmt.Errorf("gradient bucket %d: %w", b, err)
		}
		st.views[b] = view
		if n == 0 {
			continue
		}
		if st.host[b], err = stager.AllocPinnedF32(n); err != nil {
			st.free()
			return nil, fmt.Errorf("allocating %d bytes of pinned host memory for gradient bucket %d: %w", bucket.Bytes(), b, err)
		}
		if len(st.host[b]) != n {
			err := fmt.Errorf("AllocPinnedF32(%d) returned %d elements for gradient bucket %d", n, len(st.host[b]), b)
			st.free()
			return nil, err
		}
	}
	return st, nil
}

// free releases the pinned buffers. It is safe to call more than once.
func (st *staging) free() {
	for b, buf := range st.host {
		if buf != nil {
			st.stager.FreePinnedF32(buf)
			st.host[b] = nil
		}
	}
}

// reset prepares the per-step state for a new step.
func (st *staging) reset() {
	clear(st.waits)
	clear(st.errs)
	st.launch, st.launched = nil, nil
}

// copyToHost queues the copy of bucket b to its pinned buffer and hands the
// bucket to the launcher, which calls allReduce(b) once the copy is complete.
// The first call of a step starts the launcher.
func (st *staging) copyToHost(b int, allReduce func(b int)) {
	if st.launch == nil {
		st.launch = make(chan int, len(st.host))
		st.launched = make(chan struct{})
		go st.runLauncher(st.launch, st.launched, allReduce)
	}
	if st.host[b] != nil {
		st.waits[b], st.errs[b] = st.stager.CopyToHostAsyncF32(st.host[b], st.views[b])
	}
	st.launch <- b
}

// runLauncher starts the all-reduce of each bucket it receives, in the order
// received, after that bucket's copy to the host is complete. Every rank
// queues the buckets in the same order, so the ranks start the same
// all-reduces in the same order. A bucket whose copy failed gets no
// all-reduce.
func (st *staging) runLauncher(launch <-chan int, launched chan<- struct{}, allReduce func(b int)) {
	defer close(launched)
	for b := range launch {
		if st.errs[b] == nil && st.waits[b] != nil {
			st.errs[b] = st.waits[b]()
		}
		if st.errs[b] == nil {
			allReduce(b)
		}
	}
}

// finishLaunches waits until the launcher has handled every queued bucket.
// Call it once per step after the last copyToHost.
func (st *staging) finishLaunches() {
	if st.launch == nil {
		return
	}
	close(st.launch)
	<-st.launched
}

// copyToDevice copies the all-reduced bucket b from its pinned buffer back
// into FlatGrads.
func (st *staging) copyToDevice(b int) error {
	if st.host[b] == nil {
		return nil
	}
	return st.backend.CopyFromHostF32(st.views[b], st.host[b])
}
