//go:build race

package cpu_test

// raceDetectorOn reports whether the race detector is on. Under it,
// sync.Pool (used by Sgemm) drops items at random, so allocation counts of
// ops that call Sgemm are not meaningful.
const raceDetectorOn = true
