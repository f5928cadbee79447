// Package train runs the data-parallel training step of one rank: gradient
// accumulation over micro-batches, bucketed all-reduce of the gradients that
// overlaps the last backward pass, loss normalization by the global count of
// target tokens, gradient clipping and the AdamW update.
//
// Every rank of the ring builds the same Stepper over a model of the same shape
// and calls Step with the same number of micro-batches, so that all ranks issue
// the same collective operations in the same order.
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
)

// Config configures a Stepper.
type Config struct {
	// BucketBytes is the largest gradient bucket, in bytes of float32 gradients.
	// A tensor larger than this is a bucket of its own. 0 means DefaultBucketBytes.
	BucketBytes int
	// MaxGradNorm clips the global L2 norm of the gradients to this value; 0
	// turns clipping off.
	MaxGradNorm float64
	// Schedule gives the learning rate of each update.
	Schedule model.Schedule
}

// Stats are the results and counters of one Step.
type Stats struct {
	// Loss is the summed cross-entropy over every target token of the step, on
	// all ranks, divided by GlobalTargetTokens.
	Loss float64
	// GradNorm is the global L2 norm of the all-reduced gradients before clipping.
	GradNorm float64
	// LR is the learning rate of the update, also when the update was skipped.
	LR float64
	// Skipped is true when a non-finite loss or gradient norm skipped the
	// update, and ConsecutiveSkips counts the skipped steps in a row, this one included.
	Skipped          bool
	ConsecutiveSkips int

	// Tokens and TargetTokens count this rank's micro-batches, and
	// GlobalTargetTokens counts the target tokens of every rank.
	Tokens             int
	TargetTokens       int
	GlobalTargetTokens int

	// BytesSent and BytesRecv are this rank's payload bytes of every
	// collective operation of the step, without frame headers.
	// GradBytesSent and GradBytesRecv count the gradient buckets only.
	BytesSent, BytesRecv         int64
	GradBytesSent, GradBytesRecv int64

	// Compute is the time spent in ForwardBackward over all micro-batches.
	Compute time.Duration
	// AllReduce is the wall time from the start of the first bucket's
	// all-reduce to the end of the last one.
	AllReduce time.Duration
	// ExposedAllReduce is the part of AllReduce not hidden behind backward:
	// the time spent waiting for the buckets after the last ForwardBackward
	// returned. On a device backend it includes the copies of the buckets
	// to the host that were still running and the copies back to the device.
	ExposedAllReduce time.Duration

	// BucketStarts holds, for each bucket in the order of Stepper.Buckets, the
	// time from the start of the last ForwardBackward to the start of the
	// bucket's all-reduce, and BackwardDone the time until that call returned.
	BucketStarts []time.Duration
	BackwardDone time.Duration
}

// Stepper runs training steps of one rank of a data-parallel job. It is not
// safe for concurrent use.
type Stepper struct {
	model     *model.Model
	optimizer *model.AdamW
	comm      *collective.Communicator
	cfg       Config

	buckets  []Bucket
	bucketOf []int // Trainable index → bucket index
	// host holds, per bucket, the float32 slice that its all-reduce reads and
	// writes: a view of FlatGrads on the CPU backend, or a pinned buffer of a
	// device backend (see staging).
	host    [][]float32
	staging *staging // nil on the CPU backend
	pending []int    // per bucket, gradients not yet final in this step
	started []bool   // per bucket, whether this step started its all-reduce
	works   []*collective.Work
	starts  []time.Time // per bucket, when its all-reduce started
	skipped int         // consecutive skipped updates

	countBuf [2]float32
	lossBuf  [1]float32
}

// New returns a Stepper that trains m with optimizer over comm.
//
// On the CPU backend the all-reduce reads and writes the gradients in place.
// A backend that implements kernels.HostStager, such as the CUDA backend,
// gets one pinned host buffer per bucket: each bucket is copied to the host
// while backward goes on, all-reduced there and copied back to the device
// before clipping and AdamW. Call Close to free those buffers. Other
// backends are rejected.
func New(m *model.Model, optimizer *model.AdamW, comm *collective.Communicator, cfg Config) (*Stepper, error) {
	if m == nil || optimizer == nil || comm == nil {
		return nil, errors.New("train.New needs a model, an optimizer and a communicator, and one of them is nil")
	}
	if cfg.BucketBytes == 0 {
		cfg.BucketBytes = DefaultBucketBytes
	}
	if cfg.BucketBytes < 0 {
		return nil, fmt.Errorf("invalid BucketBytes %d: must be positive, or 0 for the default", cfg.BucketBytes)
	}
	if cfg.MaxGradNorm < 0 || math.IsNaN(cfg.MaxGradNorm) {
		return nil, fmt.Errorf("invalid MaxGradNorm %v: must be ≥ 0, where 0 turns clipping off", cfg.MaxGradNorm)
	}
	if err := cfg.Schedule.Validate(); err != nil {
		return nil, fmt.Errorf("invalid schedule: %w", err)
	}
	backend := m.Backend()
	stager, staged := backend.(kernels.HostStager)
	if _, onCPU := backend.(*cpu.Backend); !onCPU && !staged {
		return nil, fmt.Errorf("backend %s is not supported: its tensors are not host memory, and it does not implement kernels.HostStager to copy gradient buckets to the host for the all-reduce", backend.Name())
	}

	params := m.Trainable()
	flat := m.FlatGrads()
	buckets, err := partitionBuckets(params, flat.Offset(), cfg.BucketBytes)
	if err != nil {
		return nil, err
	}
	bucketOf := make([]int, len(params))
	for b, bucket := range buckets {
		for i := bucket.First; i <= bucket.Last; i++ {
			bucketOf[i] = b
		}
	}
	s := &Stepper{
		model:     m,
		optimizer: optimizer,
		comm:      comm,
		cfg:       cfg,
		buckets:   buckets,
		bucketOf:  bucketOf,
		pending:   make([]int, len(buckets)),
		started:   make([]bool, len(buckets)),
		works:     make([]*collective.Work, len(buckets)),
		starts:    make([]time.Time, len(buckets)),
	}
	if staged {
		s.staging, err = newStaging(backend, stager, flat, buckets)
		if err != nil {
			return nil, err
		}
		s.host = s.staging.host
	} else {
		grads := cpu.Float32s(flat)
		s.host = make([][]float32, len(buckets))
		for b, bucket := range buckets {
			s.host[b] = grads[bucket.Start:bucket.End]
		}
	}
	return s, nil
}

// Close frees the pinned host buffers of a device backend. Call it before
// closing the backend, once no Step or SyncWeights runs. On the CPU backend
// it does nothing. The Stepper must not be used afterwards.
func (s *Stepper) Close() {
	if s.staging != nil {
		s.staging.free()
	}
}

// ConsecutiveSkips returns the count of skipped updates in a row so far.
func (s *Stepper) ConsecutiveSkips() int { return s.skipped }

// SetConsecutiveSkips sets the count of skipped updates in a row that the
// next skipped step adds to, for a run resumed from a checkpoint.
func (s *Stepper) SetConsecutiveSkips(n int) { s.skipped = max(n, 0) }

// Buckets returns the gradient buckets in the order their all-reduce starts.
func (s *Stepper) Buckets() []Bucket { return append([]Bucket(nil), s.buckets...) }

// SyncWeights broadcasts rank 0's trainable values to every rank, so that all
// replicas start identical. Call it on every rank before the first Step.
//
// On a device backend the values travel through a host copy of FlatTrainable,
// which lives until SyncWeights returns. Every rank sends one broadcast of the
// whole tensor, on either backend, so that CPU and device ranks can share a ring.
func (s *Stepper) SyncWeights(ctx context.Context) error {
	flat := s.model.FlatTrainable()
	if s.staging == nil {
		return s.broadcastWeights(ctx, cpu.Float32s(flat))
	}
	backend := s.model.Backend()
	values := make([]float32, flat.Len())
	if err := backend.CopyToHostF32(values, flat); err != nil {
		return fmt.Errorf("copying the trainable weights to the host for their broadcast: %w", err)
	}
	if err := s.broadcastWeights(ctx, values); err != nil {
		return err
	}
	if err := backend.CopyFromHostF32(flat, values); err != nil {
		return fmt.Errorf("copying the broadcast weights back to %s: %w", backend.Name(), err)
	}
	return nil
}

func (s *Stepper) broadcastWeights(ctx context.Context, values []float32) error {
	if err := s.comm.Broadcast(ctx, values, 0); err != nil {
		return fmt.Errorf("broadcast of the initial weights from rank 0 failed: %w", err)
	}
	return nil
}

// Step runs one optimizer step over this rank's micro-batches. Every rank must
// pass the same number of micro-batches.
//
// An error leaves the ring out of step with the other ranks, which may wait in
// an all-reduce until the communicator's no-progress timeout. Close the
// communicator and form a new ring after any error.
func (s *Stepper) Step(ctx context.Context, microBatches []*data.Batch) (Stats, error) {
	var stats Stats
	if len(microBatches) == 0 {
		return stats, errors.New("step has no micro-batches")
	}
	totals := s.comm.Totals()

	// Global target count: gradients are scaled by its inverse, so summing
	// them over micro-batches and ranks gives the gradient of the global mean loss.
	for _, batch := range microBatches {
		stats.Tokens += batch.Tokens
		stats.TargetTokens += batch.TargetTokens
	}
	global, err := s.globalTargetTokens(ctx, stats.TargetTokens)
	if err != nil {
		return stats, err
	}
	stats.GlobalTargetTokens = global
	if global == 0 {
		return stats, errors.New("step has no target tokens on any rank")
	}
	gradScale := float32(1 / float64(global))

	// Forward and backward. Only the last micro-batch reduces its gradients,
	// bucket by bucket as backward finishes them.
	s.model.ZeroGrad()
	var lossSum float64
	last := len(microBatches) - 1
	for i, batch := range microBatches[:last] {
		begin := time.Now()
		loss, _, err := s.model.ForwardBackward(batch, gradScale, nil)
		stats.Compute += time.Since(begin)
		if err != nil {
			return stats, fmt.Errorf("micro-batch %d: %w", i, err)
		}
		lossSum += loss
	}
	s.resetBuckets()
	backwardStart := time.Now()
	loss, _, err := s.model.ForwardBackward(microBatches[last], gradScale, func(index int) {
		s.markReady(ctx, index)
	})
	backwardEnd := time.Now()
	stats.Compute += backwardEnd.Sub(backwardStart)
	if err != nil {
		// NOTE: the model validates the batch before any computation, so no
		// bucket has started here.
		if s.staging != nil {
			s.staging.finishLaunches()
		}
		return stats, fmt.Errorf("micro-batch %d: %w", last, err)
	}
	lossSum += loss

	// Wait for the buckets.
	if err := s.waitBuckets(ctx, &stats, backwardStart, backwardEnd); err != nil {
		return stats, err
	}
	stats.Loss, err = s.globalLoss(ctx, lossSum, global)
	if err != nil {
		return stats, err
	}
	after := s.comm.Totals()
	stats.BytesSent = after.BytesSent - totals.BytesSent
	stats.BytesRecv = after.BytesRecv - totals.BytesRecv

	// Clip and update. Every rank holds the same gradients and loss, so every
	// rank takes the same decision.
	if s.cfg.MaxGradNorm > 0 {
		stats.GradNorm = s.model.ClipGradNorm(s.cfg.MaxGradNorm)
	} else {
		stats.GradNorm = s.model.GradNorm()
	}
	stats.LR = s.cfg.Schedule.LR(s.optimizer.StepCount() + 1)
	if !isFinite(stats.Loss) || !isFinite(stats.GradNorm) {
		s.skipped++
		stats.Skipped = true
		stats.ConsecutiveSkips = s.skipped
		return stats, nil
	}
	s.skipped = 0
	if err := s.optimizer.Step(stats.LR); err != nil {
		return stats, fmt.Errorf("AdamW step: %w", err)
	}
	return stats, nil
}

// globalTargetTokens sums count over the ranks. float32 holds integers exactly
// only up to 2^24, so the count travels as a high and a low part of 12 bits,
// which stay exact up to 2^36 target tokens and 4096 ranks.
func (s *Stepper) globalTargetTokens(ctx context.Context, count int) (int, error) {
	s.countBuf[0] = float32(count >> 12)
	s.countBuf[1] = float32(count & (1<<12 - 1))
	if err := s.comm.AllReduceFloat32(ctx, s.countBuf[:], collective.Sum); err != nil {
		return 0, fmt.Errorf("all-reduce of the target-token count failed: %w", err)
	}
	return int(s.countBuf[0])<<12 + int(s.countBuf[1]), nil
}

// globalLoss returns the loss summed over the ranks and divided by the global
// target count. The sum travels in float32, which is plenty for reporting.
func (s *Stepper) globalLoss(ctx context.Context, lossSum float64, globalCount int) (float64, error) {
	s.lossBuf[0] = float32(lossSum)
	if err := s.comm.AllReduceFloat32(ctx, s.lossBuf[:], collective.Sum); err != nil {
		return 0, fmt.Errorf("all-reduce of the loss failed: %w", err)
	}
	return float64(s.lossBuf[0]) / float64(globalCount), nil
}

func (s *Stepper) resetBuckets() {
	for b, bucket := range s.buckets {
		s.pending[b] = bucket.Last - bucket.First + 1
		s.started[b] = false
		s.works[b] = nil
		s.starts[b] = time.Time{}
	}
	if s.staging != nil {
		s.staging.reset()
	}
}

// markReady runs inside backward when the gradient of Trainable index is
// final, and starts its bucket's all-reduce once the whole bucket is.
// Backward goes on writing other tensors' gradients, never this bucket's.
func (s *Stepper) markReady(ctx context.Context, index int) {
	b := s.bucketOf[index]
	s.pending[b]--
	if s.pending[b] == 0 {
		s.startBucket(ctx, b)
	}
}

// startBucket starts bucket b's all-reduce on the CPU backend. On a device
// backend it queues the bucket's copy to the host instead, and a launcher
// goroutine starts the all-reduce once the copy is complete (see staging).
func (s *Stepper) startBucket(ctx context.Context, b int) {
	s.started[b] = true
	if s.staging != nil {
		s.staging.copyToHost(b, func(b int) { s.allReduceBucket(ctx, b) })
		return
	}
	s.allReduceBucket(ctx, b)
}

func (s *Stepper) allReduceBucket(ctx context.Context, b int) {
	s.starts[b] = time.Now()
	s.works[b] = s.comm.AllReduceAsync(ctx, s.host[b], collective.Sum)
}

// waitBuckets waits for every bucket's all-reduce, copies the buckets back to
// a device backend, and fills the timing and byte counters of stats.
func (s *Stepper) waitBuckets(ctx context.Context, stats *Stats, backwardStart, backwardEnd time.Time) error {
	// Start, in bucket order on every rank, any bucket that backward did not
	// report complete, so that no rank waits for an operation another never starts.
	for b := range s.buckets {
		if !s.started[b] {
			s.startBucket(ctx, b)
		}
	}
	if s.staging != nil {
		s.staging.finishLaunches()
	}

	stats.BucketStarts = make([]time.Duration, len(s.buckets))
	stats.BackwardDone = backwardEnd.Sub(backwardStart)

	var firstStart, lastDone time.Time
	var firstErr error
	for b, work := range s.works {
		if err := s.waitBucket(b); err != nil && firstErr == nil {
			firstErr = err
		}
		if work == nil {
			continue // the copy to the host failed, so the all-reduce never started
		}
		op := work.Stats()
		stats.GradBytesSent += op.BytesSent
		stats.GradBytesRecv += op.BytesRecv
		stats.BucketStarts[b] = s.starts[b].Sub(backwardStart)
		done := s.starts[b].Add(op.Duration)
		if firstStart.IsZero() || s.starts[b].Before(firstStart) {
			firstStart = s.starts[b]
		}
		if done.After(lastDone) {
			lastDone = done
		}
	}

	stats.ExposedAllReduce = time.Since(backwardEnd)
	if lastDone.After(firstStart) {
		stats.AllReduce = lastDone.Sub(firstStart)
	}
	return firstErr
}

// waitBucket waits for bucket b's all-reduce and, on a device backend, copies
// the reduced gradients back to the device.
func (s *Stepper) waitBucket(b int) error {
	bucket := s.buckets[b]
	if s.staging != nil {
		if err := s.staging.errs[b]; err != nil {
			return fmt.Errorf("copy of gradient bucket %d (%d bytes) to the host failed: %w", b, bucket.Bytes(), err)
		}
	}
	if err := s.works[b].Wait(); err != nil {
		return fmt.Errorf("all-reduce of gradient bucket %d (%d bytes) failed: %w", b, bucket.Bytes(), err)
	}
	if s.staging != nil {
		if err := s.staging.copyToDevice(b); err != nil {
			return fmt.Errorf("copy of the all-reduced gradient bucket %d (%d bytes) back to %s failed: %w",
				b, bucket.Bytes(), s.model.Backend().Name(), err)
		}
	}
	return nil
}

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
