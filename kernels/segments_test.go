package kernels_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
)

func TestSegmentStarts(t *testing.T) {
	dst := make([]int32, 3*6)
	err := kernels.SegmentStarts(dst, [][]int32{{0, 2, 3}, {0}, {}}, []int{5, 4, 6}, 6)
	require.NoError(t, err)

	assert.Equal(t, []int32{0, 0, 2, 3, 3, 5}, dst[0:6], "row 0: three examples, then one padding token")
	assert.Equal(t, []int32{0, 0, 0, 0, 4, 4}, dst[6:12], "row 1: one example, then padding from 4")
	assert.Equal(t, []int32{0, 0, 0, 0, 0, 0}, dst[12:18], "row 2: no starts means one example")
}

func TestSegmentStartsWithoutLengths(t *testing.T) {
	dst := make([]int32, 4)
	require.NoError(t, kernels.SegmentStarts(dst, [][]int32{{0, 3}}, nil, 4))
	assert.Equal(t, []int32{0, 0, 0, 3}, dst)
}

func TestSegmentStartsErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		dst     int
		starts  [][]int32
		lengths []int
		message string
	}{
		{"wrong dst size", 5, [][]int32{{0}}, nil, "dst has 5 elements, want 1 rows × 4 tokens = 4"},
		{"first start not zero", 4, [][]int32{{1}}, nil, "row 0: the first example starts at 1, want 0"},
		{"not increasing", 4, [][]int32{{0, 2, 2}}, nil, "row 0: example starts [0 2 2] are not increasing"},
		{"past the length", 4, [][]int32{{0, 3}}, []int{3}, "example starts [0 3] go past the 3 real tokens"},
		{"length too large", 4, [][]int32{{0}}, []int{5}, "row 0 has length 5, want 0 to 4"},
		{"lengths count", 4, [][]int32{{0}}, []int{1, 2}, "2 lengths for 1 rows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := kernels.SegmentStarts(make([]int32, tc.dst), tc.starts, tc.lengths, 4)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.message)
		})
	}
}
