package cuda

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels"
)

func TestMemoryStatsCountsBuffersAndScratch(t *testing.T) {
	be := newFakeBackend(t, false)
	var stats kernels.MemoryStats = be
	assert.Zero(t, stats.AllocatedBytes(), "the error flag is not counted")

	f32, err := be.Alloc(kernels.F32, 5)
	require.NoError(t, err)
	bf16, err := be.Alloc(kernels.BF16, 3) // 6 bytes, rounded up to 2 words
	require.NoError(t, err)
	empty, err := be.Alloc(kernels.I32, 0)
	require.NoError(t, err)
	const buffers = 5*4 + 8
	assert.Equal(t, int64(buffers), stats.AllocatedBytes(), "after three allocations")

	// Scratch is rounded up to 256 bytes and grows by freeing the old buffer
	// before it allocates the larger one.
	require.NotZero(t, be.scratchBytes(scratchOperand, 1000))
	assert.Equal(t, int64(buffers+1024), stats.AllocatedBytes(), "after the first scratch request")
	require.NotZero(t, be.scratchBytes(scratchOperand, 500))
	assert.Equal(t, int64(buffers+1024), stats.AllocatedBytes(), "a smaller request reuses the scratch buffer")
	require.NotZero(t, be.scratchBytes(scratchOperand, 1500))
	assert.Equal(t, int64(buffers+1536), stats.AllocatedBytes(), "after the scratch buffer grew")
	assert.Equal(t, int64(buffers+1536), stats.PeakAllocatedBytes(), "after the scratch buffer grew")

	be.Free(f32)
	be.Free(empty)
	assert.Equal(t, int64(8+1536), stats.AllocatedBytes(), "after freeing two buffers")
	be.Free(bf16)
	assert.Equal(t, int64(1536), stats.AllocatedBytes(), "scratch stays until Close")
	assert.Equal(t, int64(buffers+1536), stats.PeakAllocatedBytes(), "Free keeps the peak")
	require.NoError(t, be.Sync())
}

func TestMemoryStatsPerBackend(t *testing.T) {
	first := newFakeBackend(t, false)
	second := newFakeBackend(t, false)
	buf, err := first.Alloc(kernels.F32, 16)
	require.NoError(t, err)
	t.Cleanup(func() { first.Free(buf) })

	assert.Equal(t, int64(64), first.AllocatedBytes())
	assert.Zero(t, second.AllocatedBytes(), "another backend's buffers are not counted")
	assert.Zero(t, second.PeakAllocatedBytes(), "another backend's buffers are not counted")
}
