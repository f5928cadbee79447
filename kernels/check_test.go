package kernels_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
)

func view(t *testing.T, buf kernels.Buffer, offset int, shape ...int) kernels.Tensor {
	t.Helper()
	x, err := kernels.NewTensor(buf, offset, shape...)
	require.NoError(t, err)
	return x
}

func TestCheckMatmulDimensions(t *testing.T) {
	f32 := &fakeBuffer{n: 1000, dtype: kernels.F32}
	bf16 := &fakeBuffer{n: 1000, dtype: kernels.BF16}
	a := view(t, f32, 0, 2, 3, 8)   // (B, T, C) = (6, 8) as a matrix
	w := view(t, bf16, 0, 5, 8)     // (OUT, C)
	c := view(t, f32, 100, 2, 3, 5) // (B, T, OUT)
	d, err := kernels.CheckMatmul(c, a, w, false, true)
	require.NoError(t, err)
	assert.Equal(t, kernels.MatmulDims{M: 6, N: 5, K: 8}, d)

	_, err = kernels.CheckMatmul(view(t, f32, 100, 6, 4), a, w, false, true)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "c is F32 (6, 4), which reads as a 6×4 matrix, want 6×5")
}

func TestCheckAttentionShapes(t *testing.T) {
	f32 := &fakeBuffer{n: 10000, dtype: kernels.F32}
	i32 := &fakeBuffer{n: 100, dtype: kernels.I32}
	q := view(t, f32, 0, 2, 5, 4, 8)
	k := view(t, f32, 400, 2, 5, 2, 8)
	v := view(t, f32, 600, 2, 5, 2, 8)
	out := view(t, f32, 800, 2, 5, 4, 8)
	seg := view(t, i32, 0, 2, 5)

	d, err := kernels.CheckAttentionForward(out, kernels.Tensor{}, q, k, v, seg)
	require.NoError(t, err)
	assert.Equal(t, kernels.AttentionDims{B: 2, T: 5, NH: 4, NKV: 2, HS: 8}, d)

	_, err = kernels.CheckAttentionForward(out, kernels.Tensor{}, q, view(t, f32, 400, 2, 5, 2, 4), v, seg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "k is F32 (2, 5, 2, 4), want shape (2, 5, 2, 8)")

	_, err = kernels.CheckAttentionForward(view(t, f32, 300, 2, 5, 4, 8), kernels.Tensor{}, q, k, v, seg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "out (F32 (2, 5, 4, 8) at offset 300) overlaps q (F32 (2, 5, 4, 8) at offset 0)")

	_, err = kernels.CheckAttentionForward(out, view(t, f32, 2000, 2, 5, 4), q, k, v, seg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lse is F32 (2, 5, 4), want shape (2, 4, 5) (B, NH, T)")
}

func TestCheckAllowsOnlyExactInPlace(t *testing.T) {
	f32 := &fakeBuffer{n: 100, dtype: kernels.F32}
	x := view(t, f32, 0, 4, 8)
	w := view(t, f32, 64, 8)

	_, err := kernels.CheckRMSNormForward(x, kernels.Tensor{}, x, w, 1e-6)
	require.NoError(t, err, "the same view in place")

	_, err = kernels.CheckRMSNormForward(view(t, f32, 1, 4, 8), kernels.Tensor{}, x, w, 1e-6)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "out (F32 (4, 8) at offset 1) partly overlaps x")
}
