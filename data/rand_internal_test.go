package data

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The first outputs of SplitMix64 from state 0, as Vigna's splitmix64.c computes them.
func TestSplitMix64ReferenceOutputs(t *testing.T) {
	s := &splitMix64{}
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f, 0xf88bb8a8724c81ec}
	for i, w := range want {
		assert.Equal(t, w, s.next(), "output %d", i)
	}
}

// Pinned permutations: a change here reorders every training run, so it must not happen.
func TestPermutationGolden(t *testing.T) {
	assert.Equal(t, []int{1, 2, 5, 7, 0, 8, 4, 3, 9, 6}, newStream(0, 0).permutation(10))
	assert.Equal(t, []int{0, 6, 9, 1, 5, 7, 8, 2, 4, 3}, newStream(42, 0).permutation(10))
	assert.Equal(t, []int{3, 8, 7, 1, 9, 0, 2, 6, 5, 4}, newStream(42, 1).permutation(10))
	assert.Equal(t, []int{5, 8, 2, 3, 6, 0, 9, 1, 7, 4}, newStream(42, evalSplitStream).permutation(10))
}

func TestBelowStaysInRange(t *testing.T) {
	s := newStream(7, 0)
	for _, n := range []uint64{1, 2, 3, 7, 1 << 32, 1<<63 + 1, ^uint64(0)} {
		for range 1000 {
			v := s.below(n)
			if v >= n {
				t.Fatalf("below(%d) returned %d", n, v)
			}
		}
	}
}

func TestPermutationEdgeSizes(t *testing.T) {
	assert.Empty(t, newStream(1, 0).permutation(0))
	assert.Equal(t, []int{0}, newStream(1, 0).permutation(1))
}
