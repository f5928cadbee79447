package data

import "math/bits"

// The shuffles in this package use their own generator rather than math/rand, so that a
// seed gives the same order with every Go release and on every platform.
//
// The generator is SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
// number generators", OOPSLA 2014), as in Vigna's splitmix64.c and Java's
// SplittableRandom. Each step computes, in uint64 arithmetic with wraparound:
//
//	state += 0x9E3779B97F4A7C15
//	z := state
//	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//	return z ^ (z >> 31)
//
// A stream for (seed, stream id) starts from state = seed ^ mix64(id + 0x9E3779B97F4A7C15),
// where mix64 is the last four lines above. The sampler uses the epoch as the stream id,
// and the eval split uses evalSplitStream.
//
// A bounded draw in [0, n) uses Lemire's multiply-and-reject method ("Fast random
// integer generation in an interval", 2019): take the high 64 bits of the 128-bit
// product x·n, redrawing x while the low 64 bits are below (2^64 - n) mod n.
//
// A permutation of n elements is the identity shuffled by Fisher-Yates (Durstenfeld):
// for i from n-1 down to 1, swap elements i and j, where j is a bounded draw in [0, i].

const splitMixGamma = 0x9E3779B97F4A7C15

// evalSplitStream is the stream id of the eval split, far from any epoch number.
const evalSplitStream = 1 << 63

type splitMix64 struct {
	state uint64
}

func newStream(seed, id uint64) *splitMix64 {
	return &splitMix64{state: seed ^ mix64(id+splitMixGamma)}
}

func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

func (s *splitMix64) next() uint64 {
	s.state += splitMixGamma
	return mix64(s.state)
}

// below returns a uniform integer in [0, n); n must be positive.
func (s *splitMix64) below(n uint64) uint64 {
	hi, lo := bits.Mul64(s.next(), n)
	if lo < n {
		threshold := -n % n
		for lo < threshold {
			hi, lo = bits.Mul64(s.next(), n)
		}
	}
	return hi
}

// permutation returns a uniformly random permutation of 0..n-1.
func (s *splitMix64) permutation(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(s.below(uint64(i) + 1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}
