package train

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/model"
)

// parityTolerance is the largest max|Δ| / max|ref| per tensor accepted between
// runs that sum the same float32 gradients in another order, after 3 AdamW steps.
const parityTolerance = 1e-5

const testSteps = 3

// globalSteps returns testSteps steps of two micro-batches of testRows rows each.
func globalSteps(seed uint64, vocab int) [][]*data.Batch {
	rng := rand.New(rand.NewPCG(seed, 0))
	steps := make([][]*data.Batch, testSteps)
	for s := range steps {
		steps[s] = []*data.Batch{
			randomBatch(rng, testRows, testSeqLen, vocab),
			randomBatch(rng, testRows, testSeqLen, vocab),
		}
	}
	return steps
}

// shard returns rank r's share of every micro-batch: rows [r·B/n, (r+1)·B/n).
func shard(step []*data.Batch, r, n int) []*data.Batch {
	out := make([]*data.Batch, len(step))
	for i, batch := range step {
		rows := batch.Size / n
		out[i] = subBatch(batch, r*rows, (r+1)*rows)
	}
	return out
}

// runSteps syncs the replicas' weights and runs every step on every rank, each
// rank taking its shard. It returns each rank's stats by step.
func runSteps(t *testing.T, replicas []*replica, steps [][]*data.Batch) [][]Stats {
	t.Helper()
	n := len(replicas)
	stats := make([][]Stats, n)
	onEveryRank(t, replicas, func(r int, rep *replica) error {
		if err := rep.stepper.SyncWeights(context.Background()); err != nil {
			return err
		}
		for _, step := range steps {
			s, err := rep.stepper.Step(context.Background(), shard(step, r, n))
			if err != nil {
				return err
			}
			stats[r] = append(stats[r], s)
		}
		return nil
	})
	return stats
}

func TestTwoRanksMatchOneRank(t *testing.T) {
	for _, mode := range []model.Mode{model.ModeFull, model.ModeLoRA} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := Config{BucketBytes: 16 << 10, MaxGradNorm: 1, Schedule: testSchedule}
			single := newReplicas(t, ringOf(t, 1, nil), mode, cfg)
			pair := newReplicas(t, ringOf(t, 2, nil), mode, cfg)
			steps := globalSteps(7, pair[0].model.Config().VocabSize)

			rank0, rank1 := trainableValues(t, pair[0].model), trainableValues(t, pair[1].model)
			differ := false
			for name := range rank0 {
				if maxRelativeDiff(rank1[name], rank0[name]) > 0 {
					differ = true
				}
			}
			require.True(t, differ, "replicas start with different trainable weights")

			want := runSteps(t, single, steps)
			got := runSteps(t, pair, steps)

			for s := range steps {
				assert.InEpsilon(t, want[0][s].Loss, got[0][s].Loss, parityTolerance, "loss of step %d", s)
				assert.Equal(t, got[0][s].Loss, got[1][s].Loss, "ranks report one loss in step %d", s)
				assert.InEpsilon(t, want[0][s].GradNorm, got[0][s].GradNorm, parityTolerance, "grad norm of step %d", s)
				assert.Equal(t, want[0][s].GlobalTargetTokens, got[1][s].GlobalTargetTokens, "global target tokens of step %d", s)
				assert.Equal(t, got[0][s].GlobalTargetTokens, got[0][s].TargetTokens+got[1][s].TargetTokens, "global target tokens of step %d", s)
				assert.False(t, got[0][s].Skipped, "step %d skipped", s)
			}
			wantValues := trainableValues(t, single[0].model)
			values0, values1 := trainableValues(t, pair[0].model), trainableValues(t, pair[1].model)
			for name, w := range wantValues {
				assert.Equal(t, values0[name], values1[name], "%s differs between the ranks", name)
				assert.LessOrEqual(t, maxRelativeDiff(values0[name], w), parityTolerance, "%s differs from the one-rank run", name)
			}
			assert.Equal(t, testSteps, pair[1].optimizer.StepCount(), "updates on rank 1")
		})
	}
}

func TestAccumulationMatchesOneBatch(t *testing.T) {
	cfg := Config{MaxGradNorm: 1, Schedule: testSchedule}
	accumulated := newReplicas(t, ringOf(t, 1, nil), model.ModeFull, cfg)
	whole := newReplicas(t, ringOf(t, 1, nil), model.ModeFull, cfg)
	steps := globalSteps(11, whole[0].model.Config().VocabSize)
	for s, step := range steps {
		// Half the rows per micro-batch, so the concatenation fits MaxBatch.
		steps[s] = []*data.Batch{subBatch(step[0], 0, testRows/2), subBatch(step[1], 0, testRows/2)}
	}
	joined := make([][]*data.Batch, len(steps))
	for s, step := range steps {
		joined[s] = []*data.Batch{concatBatches(step[0], step[1])}
	}

	want := runSteps(t, whole, joined)
	got := runSteps(t, accumulated, steps)

	for s := range steps {
		assert.InEpsilon(t, want[0][s].Loss, got[0][s].Loss, parityTolerance, "loss of step %d", s)
		assert.Equal(t, want[0][s].TargetTokens, got[0][s].TargetTokens, "target tokens of step %d", s)
	}
	wantValues, gotValues := trainableValues(t, whole[0].model), trainableValues(t, accumulated[0].model)
	for name, w := range wantValues {
		assert.LessOrEqual(t, maxRelativeDiff(gotValues[name], w), parityTolerance, name)
	}
}

func TestLoRAAllReducesOnlyAdapters(t *testing.T) {
	// Without the small-buffer all-gather every bucket takes the ring
	// algorithm, which sends 2(N−1)/N of the buffer per rank.
	const n = 2
	comms := ringOf(t, n, func(c *collective.Config) { c.SmallBytes = -1 })
	replicas := newReplicas(t, comms, model.ModeLoRA, Config{BucketBytes: 8 << 10, Schedule: testSchedule})
	steps := globalSteps(5, replicas[0].model.Config().VocabSize)[:1]

	m := replicas[0].model
	var adapterElements int
	for _, p := range m.Trainable() {
		assert.True(t, strings.Contains(p.Name, ".lora_A.") || strings.Contains(p.Name, ".lora_B."), "trainable tensor %s is no adapter", p.Name)
		adapterElements += p.Grad.Len()
	}
	gradBytes := int64(4 * m.FlatGrads().Len())
	require.Equal(t, int64(4*adapterElements), gradBytes, "FlatGrads holds the adapter gradients only")
	var bucketBytes int64
	for _, b := range replicas[0].stepper.Buckets() {
		bucketBytes += int64(b.Bytes())
	}
	assert.Equal(t, gradBytes, bucketBytes, "buckets cover the adapter gradients")

	stats := runSteps(t, replicas, steps)

	var sent, recv int64
	for r := range n {
		s := stats[r][0]
		sent += s.GradBytesSent
		recv += s.GradBytesRecv
		// Each rank sends one segment per ring step, and segments of a bucket
		// differ by at most one element.
		slack := float64(2 * (n - 1) * 4 * len(replicas[r].stepper.buckets))
		assert.InDelta(t, float64(2*(n-1))/n*float64(gradBytes), float64(s.GradBytesSent), slack, "gradient bytes sent by rank %d", r)
		// The target count (2 values) and the loss (1 value) add 2(N−1)/N·12 bytes.
		assert.InDelta(t, float64(s.GradBytesSent+12), float64(s.BytesSent), 8, "bytes sent by rank %d", r)
		assert.Equal(t, s.BytesSent, s.BytesRecv, "bytes sent and received by rank %d", r)
	}
	assert.Equal(t, int64(2*(n-1))*gradBytes, sent, "gradient bytes sent by all ranks")
	assert.Equal(t, sent, recv, "gradient bytes received by all ranks")
}

func TestBucketsStartDuringBackward(t *testing.T) {
	const bucketBytes = 16 << 10
	replicas := newReplicas(t, ringOf(t, 2, nil), model.ModeFull, Config{BucketBytes: bucketBytes, Schedule: testSchedule})
	steps := globalSteps(3, replicas[0].model.Config().VocabSize)[:1]

	trainable := replicas[0].model.Trainable()
	buckets := replicas[0].stepper.Buckets()
	require.Greater(t, len(buckets), 3, "buckets of %d bytes", bucketBytes)
	assert.Equal(t, len(trainable)-1, buckets[0].Last, "first bucket ends with the last trainable tensor")
	assert.Equal(t, 0, buckets[len(buckets)-1].First, "last bucket starts with the first trainable tensor")
	assert.Equal(t, replicas[0].model.FlatGrads().Len(), buckets[0].End, "first bucket ends FlatGrads")
	assert.Equal(t, 0, buckets[len(buckets)-1].Start, "last bucket starts FlatGrads")
	for b, bucket := range buckets {
		if b > 0 {
			assert.Equal(t, buckets[b-1].First-1, bucket.Last, "bucket %d follows bucket %d in reverse Trainable order", b, b-1)
			assert.Equal(t, buckets[b-1].Start, bucket.End, "bucket %d is contiguous with bucket %d", b, b-1)
		}
		if bucket.First != bucket.Last {
			assert.LessOrEqual(t, bucket.Bytes(), bucketBytes, "bucket %d of several tensors", b)
		}
	}

	stats := runSteps(t, replicas, steps)

	for r := range replicas {
		s := stats[r][0]
		require.Len(t, s.BucketStarts, len(buckets))
		for b, start := range s.BucketStarts {
			assert.Less(t, start, s.BackwardDone, "rank %d: bucket %d starts before ForwardBackward returns", r, b)
			if b > 0 {
				assert.GreaterOrEqual(t, start, s.BucketStarts[b-1], "rank %d: bucket %d starts after bucket %d", r, b, b-1)
			}
		}
		assert.Less(t, s.BucketStarts[0], s.BucketStarts[len(buckets)-1], "rank %d: buckets start at different times of backward", r)
		assert.LessOrEqual(t, s.ExposedAllReduce, s.AllReduce+s.ExposedAllReduce, "rank %d", r)
		assert.Positive(t, s.Compute, "rank %d: compute time", r)
		assert.Positive(t, s.AllReduce, "rank %d: all-reduce time", r)
	}
}

func TestNonFiniteLossSkipsStep(t *testing.T) {
	replicas := newReplicas(t, ringOf(t, 2, nil), model.ModeFull, Config{MaxGradNorm: 1, Schedule: testSchedule})
	steps := globalSteps(13, replicas[0].model.Config().VocabSize)
	const poisoned = "model.norm.weight"

	// Rank 1 alone holds a NaN weight, so only its loss is NaN before the
	// all-reduce; every rank must still skip.
	onEveryRank(t, replicas, func(r int, rep *replica) error {
		return rep.stepper.SyncWeights(context.Background())
	})
	good, err := replicas[1].model.ReadTensor(poisoned)
	require.NoError(t, err)
	bad := append([]float32(nil), good...)
	bad[0] = float32(math.NaN())
	require.NoError(t, replicas[1].model.SetTensor(poisoned, bad))
	before := trainableValues(t, replicas[0].model)

	stats := make([][]Stats, len(replicas))
	onEveryRank(t, replicas, func(r int, rep *replica) error {
		for _, step := range steps[:2] {
			s, err := rep.stepper.Step(context.Background(), shard(step, r, len(replicas)))
			if err != nil {
				return err
			}
			stats[r] = append(stats[r], s)
		}
		return nil
	})
	for r := range replicas {
		for s := range 2 {
			assert.True(t, stats[r][s].Skipped, "rank %d skips step %d", r, s)
			assert.True(t, math.IsNaN(stats[r][s].Loss), "rank %d reports the NaN loss of step %d", r, s)
			assert.Equal(t, s+1, stats[r][s].ConsecutiveSkips, "rank %d: consecutive skips after step %d", r, s)
		}
		assert.Zero(t, replicas[r].optimizer.StepCount(), "rank %d: updates", r)
	}
	assert.Equal(t, before, trainableValues(t, replicas[0].model), "rank 0's weights after skipped steps")

	// With the weight restored the next step updates and resets the count.
	require.NoError(t, replicas[1].model.SetTensor(poisoned, good))
	onEveryRank(t, replicas, func(r int, rep *replica) error {
		s, err := rep.stepper.Step(context.Background(), shard(steps[2], r, len(replicas)))
		if err != nil {
			return err
		}
		stats[r] = append(stats[r], s)
		return nil
	})
	for r := range replicas {
		assert.False(t, stats[r][2].Skipped, "rank %d skips the finite step", r)
		assert.Zero(t, stats[r][2].ConsecutiveSkips, "rank %d: consecutive skips", r)
		assert.Equal(t, 1, replicas[r].optimizer.StepCount(), "rank %d: updates", r)
	}
}
