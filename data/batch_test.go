package data_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
)

func TestNewBatchLayout(t *testing.T) {
	rows, err := data.PackRows(examplesOfLengths(3, 2, 6, 1), 8, testPad)
	require.NoError(t, err)
	require.Equal(t, 2, rows.Len())

	batch, err := data.NewBatch(rows, []int{1, 0})
	require.NoError(t, err)

	assert.Equal(t, 2, batch.Size)
	assert.Equal(t, 8, batch.SeqLen)
	assert.Equal(t, []int{1, 0}, batch.RowIndices)
	for k, i := range []int{1, 0} {
		want := rows.Row(i)
		got := batch.Row(k)
		assert.Equal(t, want.IDs, batch.IDs[k*8:(k+1)*8], "batch row %d ids", k)
		assert.Equal(t, want.Targets, batch.Targets[k*8:(k+1)*8], "batch row %d targets", k)
		assert.Equal(t, want.Positions, batch.Positions[k*8:(k+1)*8], "batch row %d positions", k)
		assert.Equal(t, want.Starts, batch.Starts[k], "batch row %d starts", k)
		assert.Equal(t, want.Length, batch.Lengths[k], "batch row %d length", k)
		assert.Equal(t, want, got, "batch row %d view", k)
	}
	assert.Equal(t, 12, batch.Tokens)
	assert.Equal(t, 12-4, batch.TargetTokens, "each of the 4 examples has one token without a target")
}

func TestNewBatchRejectsBadIndex(t *testing.T) {
	rows, err := data.PadRows(examplesOfLengths(3), 8, testPad)
	require.NoError(t, err)

	_, errHigh := data.NewBatch(rows, []int{0, 1})
	_, errNegative := data.NewBatch(rows, []int{-1})

	assert.EqualError(t, errHigh, "row index 1 out of range; the dataset has 1 rows")
	assert.EqualError(t, errNegative, "row index -1 out of range; the dataset has 1 rows")
}

func TestLoaderCoversEveryRowAcrossRanks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	rows, err := data.PackRows(randomExamples(rng, 300, 32), 32, testPad)
	require.NoError(t, err)
	const world = 3

	seen := map[int]int{}
	batchCounts := map[int]bool{}
	for rank := range world {
		loader, err := data.NewLoader(rows, data.ShardPlan{Seed: 3, WorldSize: world, Rank: rank, BatchSize: 4, Shuffle: true})
		require.NoError(t, err)
		count := 0
		for {
			batch, ok := loader.Next()
			if !ok {
				break
			}
			count++
			assert.LessOrEqual(t, batch.Size, 4)
			for _, i := range batch.RowIndices {
				seen[i]++
			}
		}
		batchCounts[count] = true
		assert.Equal(t, loader.Sampler().BatchesPerEpoch(), count, "rank %d", rank)
	}

	assert.Len(t, batchCounts, 1, "every rank takes the same number of batches")
	assert.Len(t, seen, rows.Len(), "every row is read")
	padded := 0
	for _, n := range seen {
		padded += n - 1
	}
	assert.Less(t, padded, world, "at most world size - 1 rows repeat")
}

func TestLoaderResumesFromSavedState(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	rows, err := data.PackRows(randomExamples(rng, 200, 16), 16, testPad)
	require.NoError(t, err)
	plan := data.ShardPlan{Seed: 12, Epoch: 1, WorldSize: 2, Rank: 1, BatchSize: 3, Shuffle: true}
	loader, err := data.NewLoader(rows, plan)
	require.NoError(t, err)
	for range 5 {
		_, ok := loader.Next()
		require.True(t, ok)
	}
	saved, err := json.Marshal(loader.Sampler().State())
	require.NoError(t, err)
	var want []*data.Batch
	for b, ok := loader.Next(); ok; b, ok = loader.Next() {
		want = append(want, b)
	}

	var state data.SamplerState
	require.NoError(t, json.Unmarshal(saved, &state))
	plan.Epoch = 0
	resumed, err := data.NewLoader(rows, plan)
	require.NoError(t, err)
	require.NoError(t, resumed.Sampler().Restore(state))
	var got []*data.Batch
	for b, ok := resumed.Next(); ok; b, ok = resumed.Next() {
		got = append(got, b)
	}

	assert.Equal(t, want, got)
}
