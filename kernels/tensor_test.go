package kernels_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
)

// fakeBuffer is a Buffer of n elements with no storage, enough for views.
type fakeBuffer struct {
	n     int
	dtype kernels.DType
}

func (b *fakeBuffer) Len() int             { return b.n }
func (b *fakeBuffer) DType() kernels.DType { return b.dtype }

func TestNewTensorShapeAndOffset(t *testing.T) {
	buf := &fakeBuffer{n: 100, dtype: kernels.F32}
	x, err := kernels.NewTensor(buf, 10, 2, 3, 4)
	require.NoError(t, err)

	assert.Equal(t, 3, x.Rank())
	assert.Equal(t, []int{2, 3, 4}, x.Shape())
	assert.Equal(t, 24, x.Len())
	assert.Equal(t, 10, x.Offset())
	assert.Equal(t, 4, x.Dim(-1))
	assert.Equal(t, kernels.F32, x.DType())
	assert.Equal(t, "F32 (2, 3, 4)", x.String())
	rows, cols := x.Matrix()
	assert.Equal(t, [2]int{6, 4}, [2]int{rows, cols})
}

func TestNewTensorErrors(t *testing.T) {
	buf := &fakeBuffer{n: 24, dtype: kernels.BF16}
	for _, tc := range []struct {
		name    string
		offset  int
		shape   []int
		message string
	}{
		{"past the end", 1, []int{2, 3, 4}, "a tensor of shape (2, 3, 4) (24 elements) at offset 1 does not fit in a BF16 buffer of 24 elements"},
		{"negative offset", -1, []int{2}, "at offset -1 does not fit"},
		{"no dimensions", 0, nil, "invalid shape (): a tensor has 1 to 4 dimensions"},
		{"five dimensions", 0, []int{1, 1, 1, 1, 1}, "invalid shape (1, 1, 1, 1, 1)"},
		{"negative dimension", 0, []int{2, -3}, "invalid shape (2, -3): dimensions must not be negative"},
		{"overflow", 0, []int{1 << 40, 1 << 40}, "overflows int"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kernels.NewTensor(buf, tc.offset, tc.shape...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.message)
		})
	}
}

func TestTensorRows(t *testing.T) {
	buf := &fakeBuffer{n: 60, dtype: kernels.F32}
	x, err := kernels.NewTensor(buf, 12, 4, 3, 2)
	require.NoError(t, err)

	rows, err := x.Rows(1, 3)
	require.NoError(t, err)
	assert.Equal(t, []int{2, 3, 2}, rows.Shape())
	assert.Equal(t, 12+6, rows.Offset())
	assert.Same(t, buf, rows.Buffer().(*fakeBuffer))

	empty, err := x.Rows(4, 4)
	require.NoError(t, err)
	assert.Equal(t, 0, empty.Len())

	_, err = x.Rows(2, 5)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "rows [2, 5) are out of range for a tensor of shape (4, 3, 2), whose first dimension is 4")
	_, err = x.Rows(3, 2)
	require.Error(t, err)
}

func TestTensorReshape(t *testing.T) {
	buf := &fakeBuffer{n: 48, dtype: kernels.F32}
	x, err := kernels.NewTensor(buf, 0, 2, 3, 8)
	require.NoError(t, err)

	heads, err := x.Reshape(2, 3, 2, -1)
	require.NoError(t, err)
	assert.Equal(t, []int{2, 3, 2, 4}, heads.Shape())
	assert.Equal(t, x.Offset(), heads.Offset())

	flat, err := heads.Reshape(48)
	require.NoError(t, err)
	assert.Equal(t, []int{48}, flat.Shape())

	for _, tc := range []struct {
		shape   []int
		message string
	}{
		{[]int{5, 10}, "cannot reshape a tensor of shape (2, 3, 8) (48 elements) to (5, 10): the element counts differ"},
		{[]int{-1, -1}, "only one dimension can be -1"},
		{[]int{5, -1}, "the other dimensions do not divide the element count"},
		{[]int{2, -2, -12}, "dimensions must not be negative"},
	} {
		_, err := x.Reshape(tc.shape...)
		require.Error(t, err, "shape %v", tc.shape)
		assert.Contains(t, err.Error(), tc.message)
	}
}

func TestAbsentTensor(t *testing.T) {
	var x kernels.Tensor
	assert.True(t, x.IsAbsent())
	assert.Equal(t, 0, x.Len())
	assert.Equal(t, "absent", x.String())
	_, err := x.Rows(0, 1)
	require.Error(t, err)
	_, err = x.Reshape(1)
	require.Error(t, err)
}

func TestOverlaps(t *testing.T) {
	buf := &fakeBuffer{n: 20, dtype: kernels.F32}
	other := &fakeBuffer{n: 20, dtype: kernels.F32}
	a, _ := kernels.NewTensor(buf, 0, 10)
	b, _ := kernels.NewTensor(buf, 9, 5)
	c, _ := kernels.NewTensor(buf, 10, 5)
	d, _ := kernels.NewTensor(other, 0, 10)

	assert.True(t, kernels.Overlaps(a, b))
	assert.False(t, kernels.Overlaps(a, c))
	assert.False(t, kernels.Overlaps(a, d))
	assert.False(t, kernels.Overlaps(a, kernels.Tensor{}))
}
