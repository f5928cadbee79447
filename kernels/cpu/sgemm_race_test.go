//go:build race

package cpu

// raceEnabled reports whether the race detector is on. Under it, sync.Pool
// drops pooled items at random, so allocation counts are not meaningful.
const raceEnabled = true
