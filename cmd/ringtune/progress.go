package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newProgressBar returns a bar of total steps on stderr when stderr is a terminal, and
// nil otherwise, so logs and redirected output stay plain.
func newProgressBar(total int, description string) *progressbar.ProgressBar {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(description), progressbar.OptionClearOnFinish())
}

// startCPUProfile writes a CPU profile to path until stop is called. An empty path
// profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("RINGTUNE_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			slog.Error("writing the CPU profile failed", "path", path, "err", err)
		}
	}, nil
}
