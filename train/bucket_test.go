package train

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
)

// paramsOfSizes returns one parameter per size, in Trainable order, whose
// gradients lie back to back in one buffer, starting at element 3 of it.
func paramsOfSizes(t *testing.T, sizes []int) []model.Param {
	t.Helper()
	backend, err := cpu.New(cpu.Options{Workers: 1})
	require.NoError(t, err)
	t.Cleanup(func() { backend.Close() })
	total := 3
	for _, size := range sizes {
		total += size
	}
	buf, err := backend.Alloc(kernels.F32, total)
	require.NoError(t, err)
	t.Cleanup(func() { backend.Free(buf) })

	params := make([]model.Param, len(sizes))
	offset := 3
	for i, size := range sizes {
		grad, err := kernels.NewTensor(buf, offset, size)
		require.NoError(t, err)
		params[i] = model.Param{Name: "p", Grad: grad}
		offset += size
	}
	return params
}

func TestPartitionBuckets(t *testing.T) {
	cases := []struct {
		name        string
		sizes       []int // elements per tensor, in Trainable order
		bucketBytes int
		want        []Bucket
	}{
		{
			name: "one bucket", sizes: []int{2, 3, 4}, bucketBytes: 100,
			want: []Bucket{{First: 0, Last: 2, Start: 0, End: 9}},
		},
		{
			name: "exact fit", sizes: []int{2, 2, 2, 2}, bucketBytes: 16,
			want: []Bucket{{First: 2, Last: 3, Start: 4, End: 8}, {First: 0, Last: 1, Start: 0, End: 4}},
		},
		{
			name: "large tensor alone", sizes: []int{1, 10, 1, 1}, bucketBytes: 12,
			want: []Bucket{
				{First: 2, Last: 3, Start: 11, End: 13},
				{First: 1, Last: 1, Start: 1, End: 11},
				{First: 0, Last: 0, Start: 0, End: 1},
			},
		},
		{
			name: "every tensor too large", sizes: []int{5, 6}, bucketBytes: 4,
			want: []Bucket{{First: 1, Last: 1, Start: 5, End: 11}, {First: 0, Last: 0, Start: 0, End: 5}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			params := paramsOfSizes(t, c.sizes)
			got, err := partitionBuckets(params, 3, c.bucketBytes)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestPartitionBucketsRejectsGap(t *testing.T) {
	params := paramsOfSizes(t, []int{2, 2})
	shifted, err := kernels.NewTensor(params[1].Grad.Buffer(), params[1].Grad.Offset()+1, 1)
	require.NoError(t, err)
	params[1].Grad = shifted

	_, err = partitionBuckets(params, 3, 100)
	assert.ErrorContains(t, err, "back to back")
}

func TestPlanBucketsMatchesPartition(t *testing.T) {
	sizes := []int{1, 10, 1, 1, 7, 3, 3}
	for _, bucketBytes := range []int{4, 12, 16, 40, 1000} {
		want, err := partitionBuckets(paramsOfSizes(t, sizes), 3, bucketBytes)
		require.NoError(t, err)
		got, err := PlanBuckets(sizes, bucketBytes)
		require.NoError(t, err)
		assert.Equal(t, want, got, "bucket bytes %d", bucketBytes)
	}
}

func TestPlanBucketsRejectsBadInput(t *testing.T) {
	_, err := PlanBuckets([]int{1, 2}, 0)
	assert.ErrorContains(t, err, "invalid bucket size 0")
	_, err = PlanBuckets([]int{1, -2}, 16)
	assert.ErrorContains(t, err, "negative size -2")
}
