package cpu_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

func TestBackendCopiesRoundTrip(t *testing.T) {
	be := newBackend(t, cpu.Options{})

	f := newF32(t, be, []float32{1, -2, 3.5}, 3)
	gotF := make([]float32, 3)
	require.NoError(t, be.CopyToHostF32(gotF, f))
	assert.Equal(t, []float32{1, -2, 3.5}, gotF)

	h := newBF16(t, be, []uint16{0x3f80, 0xc000}, 2)
	gotH := make([]uint16, 2)
	require.NoError(t, be.CopyToHostBF16(gotH, h))
	assert.Equal(t, []uint16{0x3f80, 0xc000}, gotH)

	i := newI32(t, be, []int32{7, -100}, 2)
	gotI := make([]int32, 2)
	require.NoError(t, be.CopyToHostI32(gotI, i))
	assert.Equal(t, []int32{7, -100}, gotI)
}

func TestBackendCopyErrors(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	f := newF32(t, be, nil, 2, 3)

	err := be.CopyFromHostF32(f, make([]float32, 5))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the host slice has 5 elements but the tensor F32 (2, 3) has 6")

	err = be.CopyFromHostI32(f, make([]int32, 6))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the tensor is F32 (2, 3), want dtype I32")

	err = be.CopyToHostF32(make([]float32, 6), kernels.Tensor{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "absent")
}

func TestBackendConvertsBetweenF32AndBF16(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	values := []float32{1, 1.00390625, -3.14159, 1e-3, float32(math.Inf(-1))}
	f := newF32(t, be, values, 5)
	h, err := kernels.AllocTensor(be, kernels.BF16, 5)
	require.NoError(t, err)

	be.Copy(h, f)
	gotH := make([]uint16, 5)
	require.NoError(t, be.CopyToHostBF16(gotH, h))
	assert.Equal(t, toBF16(values), gotH)

	back := newF32(t, be, nil, 5)
	be.Copy(back, h)
	assert.Equal(t, fromBF16(gotH), toHost(t, be, back))
}

func TestBackendViewsShareTheBuffer(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	x := newF32(t, be, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 3, 2, 2)

	rows, err := x.Rows(1, 3)
	require.NoError(t, err)
	assert.Equal(t, []float32{4, 5, 6, 7, 8, 9, 10, 11}, toHost(t, be, rows))

	be.Zero(rows)
	assert.Equal(t, []float32{0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0}, toHost(t, be, x))

	flat, err := x.Reshape(-1)
	require.NoError(t, err)
	assert.Equal(t, 12, flat.Len())
	assert.Equal(t, toHost(t, be, x), cpu.Float32s(flat))
}

func TestBackendRejectsFreedAndForeignBuffers(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	x := newF32(t, be, nil, 4)
	be.Free(x.Buffer())
	requirePanicsWith(t, func() { be.Zero(x) }, "use of a freed F32 buffer of 4 elements")

	foreign, err := kernels.NewTensor(foreignBuffer{}, 0, 4)
	require.NoError(t, err)
	requirePanicsWith(t, func() { be.Zero(foreign) }, "belongs to another backend")
}

// foreignBuffer is a Buffer that no CPU backend allocated.
type foreignBuffer struct{}

func (foreignBuffer) Len() int             { return 4 }
func (foreignBuffer) DType() kernels.DType { return kernels.F32 }

func TestBackendRejectsInvalidAllocations(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	_, err := be.Alloc(kernels.F32, -1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-1 elements")
	_, err = be.Alloc(kernels.DType(9), 4)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid dtype DType(9)")
}

func TestBackendAfterCloseRunsOnCaller(t *testing.T) {
	be, err := cpu.New(cpu.Options{Workers: 2})
	require.NoError(t, err)
	x := newF32(t, be, constant(100_000, 2), 100_000)
	require.NoError(t, be.Close())

	be.Scale(x, 0.5)
	assert.Equal(t, constant(100_000, 1), toHost(t, be, x))
}
