package kernels_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ringtune/ringtune/kernels"
)

func TestMemoryCounterPeak(t *testing.T) {
	var c kernels.MemoryCounter
	c.Add(100)
	c.Add(50)
	c.Sub(100)
	c.Add(30)
	assert.Equal(t, int64(80), c.AllocatedBytes())
	assert.Equal(t, int64(150), c.PeakAllocatedBytes())

	c.Add(200)
	assert.Equal(t, int64(280), c.PeakAllocatedBytes(), "a new maximum raises the peak")
	c.Sub(280)
	assert.Zero(t, c.AllocatedBytes())
	assert.Equal(t, int64(280), c.PeakAllocatedBytes(), "Sub keeps the peak")
}

func TestMemoryCounterConcurrentAdds(t *testing.T) {
	var c kernels.MemoryCounter
	const goroutines, adds = 8, 1000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range adds {
				c.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(goroutines*adds), c.AllocatedBytes())
	assert.Equal(t, int64(goroutines*adds), c.PeakAllocatedBytes(), "no raise of the peak is lost")
}
