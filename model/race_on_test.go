//go:build race

package model

// raceDetectorOn reports whether the race detector is on. Under it, the
// sync.Pool that Sgemm uses drops items at random, so allocation counts of a
// step are not meaningful.
const raceDetectorOn = true
