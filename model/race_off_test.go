//go:build !race

package model

const raceDetectorOn = false
