//go:build !race

package cpu_test

const raceDetectorOn = false
