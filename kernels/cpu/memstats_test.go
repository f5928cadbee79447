package cpu_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

func TestMemoryStatsCountsAllocAndFree(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	var stats kernels.MemoryStats = be
	assert.Zero(t, stats.AllocatedBytes(), "new backend")
	assert.Zero(t, stats.PeakAllocatedBytes(), "new backend")

	f32, err := be.Alloc(kernels.F32, 10)
	require.NoError(t, err)
	bf16, err := be.Alloc(kernels.BF16, 7)
	require.NoError(t, err)
	i32, err := be.Alloc(kernels.I32, 3)
	require.NoError(t, err)
	empty, err := be.Alloc(kernels.F32, 0)
	require.NoError(t, err)
	const all = 10*4 + 7*2 + 3*4
	assert.Equal(t, int64(all), stats.AllocatedBytes(), "after four allocations")
	assert.Equal(t, int64(all), stats.PeakAllocatedBytes(), "after four allocations")

	be.Free(f32)
	be.Free(empty)
	assert.Equal(t, int64(7*2+3*4), stats.AllocatedBytes(), "after freeing the F32 buffers")
	assert.Equal(t, int64(all), stats.PeakAllocatedBytes(), "the peak stays after Free")

	again, err := be.Alloc(kernels.F32, 5)
	require.NoError(t, err)
	assert.Equal(t, int64(7*2+3*4+5*4), stats.AllocatedBytes(), "after a smaller allocation")
	assert.Equal(t, int64(all), stats.PeakAllocatedBytes(), "below the peak")

	_, err = be.Alloc(kernels.F32, -1)
	require.Error(t, err)
	assert.Equal(t, int64(7*2+3*4+5*4), stats.AllocatedBytes(), "a failed allocation counts nothing")

	be.Free(bf16)
	be.Free(i32)
	be.Free(again)
	assert.Zero(t, stats.AllocatedBytes(), "after freeing every buffer")
	assert.Equal(t, int64(all), stats.PeakAllocatedBytes(), "after freeing every buffer")
}

func TestMemoryStatsIgnoreOpScratch(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	a := newF32(t, be, make([]float32, 64*32), 64, 32)
	b := newF32(t, be, make([]float32, 32*16), 32, 16)
	c := newF32(t, be, make([]float32, 64*16), 64, 16)
	want := int64(4 * (64*32 + 32*16 + 64*16))
	require.Equal(t, want, be.AllocatedBytes())

	// Matmul packs its operands into worker scratch, which is Go memory
	// outside the counted buffers.
	be.Matmul(c, a, b, false, false, 1, 0)
	assert.Equal(t, want, be.AllocatedBytes())
	assert.Equal(t, want, be.PeakAllocatedBytes())
}
