// Package sysmem reads the memory use of the running process.
package sysmem

import (
	"log/slog"
	"runtime"
	"syscall"
)

// PeakRSSBytes returns the maximum resident set size of this process so far, or 0
// when the system does not report it.
func PeakRSSBytes() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		slog.Warn("getrusage failed, so the peak RSS is reported as 0", "err", err)
		return 0
	}
	if runtime.GOOS == "darwin" {
		return int64(ru.Maxrss) // bytes on macOS
	}
	return int64(ru.Maxrss) * 1024 // KiB on Linux and the BSDs
}
