package train

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
)

// stagingBackend is the CPU backend behind the kernels.HostStager of a device
// backend. Pinned buffers are Go slices, and each copy to the host runs on a
// goroutine of its own after copyDelay, so that a stepper that read a host
// buffer before waiting for its copy would all-reduce stale values.
type stagingBackend struct {
	*cpu.Backend
	copyDelay time.Duration
	// failCopy, when set, makes the wait of the copy of a buffer of that many
	// elements return errCopyFailed.
	failCopy int
	// failAlloc, when positive, makes that AllocPinnedF32 call (1 for the first)
	// fail.
	failAlloc int

	mu     sync.Mutex
	pinned map[*float32]int // live pinned buffers: first element → length
	allocs int
	copies int // copies to the host queued
}

var (
	errCopyFailed  = errors.New("test copy failed")
	errAllocFailed = errors.New("test pinned allocation failed")
)

func newStagingBackend(t testing.TB) *stagingBackend {
	return &stagingBackend{Backend: newCPUBackend(t), copyDelay: time.Millisecond, pinned: map[*float32]int{}}
}

func (b *stagingBackend) Name() string { return "cpu-staging-test" }

func (b *stagingBackend) AllocPinnedF32(n int) ([]float32, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allocs++
	if b.allocs == b.failAlloc {
		return nil, errAllocFailed
	}
	if n <= 0 {
		return nil, fmt.Errorf("AllocPinnedF32(%d): the size must be positive", n)
	}
	buf := make([]float32, n)
	b.pinned[&buf[0]] = n
	return buf, nil
}

func (b *stagingBackend) FreePinnedF32(buf []float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(buf) == 0 || b.pinned[&buf[0]] != len(buf) {
		panic(fmt.Sprintf("FreePinnedF32 of %d elements that AllocPinnedF32 did not return or that are freed already", len(buf)))
	}
	delete(b.pinned, &buf[0])
}

func (b *stagingBackend) CopyToHostAsyncF32(dst []float32, src kernels.Tensor) (func() error, error) {
	if src.DType() != kernels.F32 || len(dst) != src.Len() {
		return nil, fmt.Errorf("CopyToHostAsyncF32: %d host elements for a %s tensor of %d", len(dst), src.DType(), src.Len())
	}
	b.mu.Lock()
	isPinned := b.pinned[&dst[0]] == len(dst)
	b.copies++
	b.mu.Unlock()
	if !isPinned {
		return nil, errors.New("CopyToHostAsyncF32: dst is not a buffer of AllocPinnedF32")
	}
	done := make(chan error, 1)
	go func() {
		time.Sleep(b.copyDelay)
		if len(dst) == b.failCopy {
			done <- errCopyFailed
			return
		}
		copy(dst, cpu.Float32s(src))
		done <- nil
	}()
	return func() error { return <-done }, nil
}

// livePinned returns the number of pinned buffers not yet freed.
func (b *stagingBackend) livePinned() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pinned)
}

func (b *stagingBackend) queuedCopies() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.copies
}

// hostOnlyBackend is a backend that is not *cpu.Backend and has no HostStager.
type hostOnlyBackend struct{ *cpu.Backend }

func TestStagedRanksMatchZeroCopyRanks(t *testing.T) {
	for _, mode := range []model.Mode{model.ModeFull, model.ModeLoRA} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := Config{BucketBytes: 16 << 10, MaxGradNorm: 1, Schedule: testSchedule}
			zeroCopy := newReplicas(t, ringOf(t, 2, nil), mode, cfg)
			backends := []*stagingBackend{newStagingBackend(t), newStagingBackend(t)}
			staged := newReplicasOn(t, ringOf(t, 2, nil), mode, cfg, func(r int) kernels.Backend { return backends[r] })
			steps := globalSteps(7, staged[0].model.Config().VocabSize)

			buckets := staged[0].stepper.Buckets()
			for r, b := range backends {
				assert.Equal(t, len(buckets), b.livePinned(), "rank %d: one pinned buffer per bucket", r)
			}

			want := runSteps(t, zeroCopy, steps)
			got := runSteps(t, staged, steps)

			for r := range staged {
				for s := range steps {
					assert.Equal(t, want[r][s].Loss, got[r][s].Loss, "rank %d: loss of step %d", r, s)
					assert.Equal(t, want[r][s].GradNorm, got[r][s].GradNorm, "rank %d: grad norm of step %d", r, s)
					assert.Equal(t, want[r][s].GradBytesSent, got[r][s].GradBytesSent, "rank %d: gradient bytes of step %d", r, s)
					assert.False(t, got[r][s].Skipped, "rank %d: step %d skipped", r, s)
				}
				assert.Equal(t, trainableValues(t, zeroCopy[r].model), trainableValues(t, staged[r].model), "rank %d: weights after %d steps", r, len(steps))
				assert.Equal(t, len(steps)*len(buckets), backends[r].queuedCopies(), "rank %d: copies to the host", r)
			}

			for r, rep := range staged {
				rep.stepper.Close()
				assert.Zero(t, backends[r].livePinned(), "rank %d: pinned buffers after Close", r)
				rep.stepper.Close() // a second Close frees nothing twice
			}
		})
	}
}

func TestMixedRingMatchesZeroCopyRing(t *testing.T) {
	cfg := Config{BucketBytes: 16 << 10, MaxGradNorm: 1, Schedule: testSchedule}
	zeroCopy := newReplicas(t, ringOf(t, 2, nil), model.ModeFull, cfg)
	staged := newStagingBackend(t)
	mixed := newReplicasOn(t, ringOf(t, 2, nil), model.ModeFull, cfg, func(r int) kernels.Backend {
		if r == 1 {
			return staged
		}
		return newCPUBackend(t)
	})
	steps := globalSteps(9, mixed[0].model.Config().VocabSize)

	want := runSteps(t, zeroCopy, steps)
	got := runSteps(t, mixed, steps)

	for s := range steps {
		assert.Equal(t, want[0][s].Loss, got[1][s].Loss, "loss of step %d", s)
		assert.Equal(t, want[0][s].GradNorm, got[1][s].GradNorm, "grad norm of step %d", s)
	}
	wantValues := trainableValues(t, zeroCopy[0].model)
	assert.Equal(t, wantValues, trainableValues(t, mixed[0].model), "weights of the CPU rank")
	assert.Equal(t, wantValues, trainableValues(t, mixed[1].model), "weights of the staged rank")
	assert.Positive(t, staged.queuedCopies(), "the staged rank copied its buckets to the host")
}

func TestStagedCopyErrorFailsStep(t *testing.T) {
	backend := newStagingBackend(t)
	replicas := newReplicasOn(t, ringOf(t, 1, nil), model.ModeFull, Config{BucketBytes: 16 << 10, Schedule: testSchedule},
		func(int) kernels.Backend { return backend })
	stepper := replicas[0].stepper
	buckets := stepper.Buckets()
	failed := len(buckets) / 2
	backend.failCopy = buckets[failed].End - buckets[failed].Start
	steps := globalSteps(3, replicas[0].model.Config().VocabSize)

	require.NoError(t, stepper.SyncWeights(context.Background()))
	_, err := stepper.Step(context.Background(), steps[0])
	require.Error(t, err)
	assert.ErrorIs(t, err, errCopyFailed)
	assert.Contains(t, err.Error(), "to the host failed")
	assert.Zero(t, replicas[0].optimizer.StepCount(), "updates after a failed copy")
}

func TestNewRejectsBackendWithoutStager(t *testing.T) {
	m := newModelOn(t, hostOnlyBackend{newCPUBackend(t)}, model.ModeFull, 1)
	optimizer, err := model.NewAdamW(m, testAdamW())
	require.NoError(t, err)
	defer optimizer.Close()

	_, err = New(m, optimizer, ringOf(t, 1, nil)[0], Config{Schedule: testSchedule})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not implement kernels.HostStager")
}

func TestNewFreesPinnedBuffersOnError(t *testing.T) {
	backend := newStagingBackend(t)
	backend.failAlloc = 3
	m := newModelOn(t, backend, model.ModeFull, 1)
	optimizer, err := model.NewAdamW(m, testAdamW())
	require.NoError(t, err)
	defer optimizer.Close()

	_, err = New(m, optimizer, ringOf(t, 1, nil)[0], Config{BucketBytes: 16 << 10, Schedule: testSchedule})
	require.Error(t, err)
	assert.ErrorIs(t, err, errAllocFailed)
	assert.Contains(t, err.Error(), "pinned host memory for gradient bucket 2")
	assert.Zero(t, backend.livePinned(), "pinned buffers left after the failed New")
}
