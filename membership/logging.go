package membership

import (
	"context"
	"log/slog"
	"strings"
)

// logWriter turns the lines that memberlist writes to its *log.Logger, which start
// with a level tag such as "[DEBUG] memberlist: ", into slog records.
type logWriter struct {
	log *slog.Logger
}

func (w *logWriter) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		level, message := parseLogLine(line)
		w.log.Log(context.Background(), level, message)
	}
	return len(p), nil
}

// parseLogLine splits a memberlist log line into its level and message. A line
// without a known tag is logged at Info. An error on a closed connection comes
// from the member's own shutdown, when memberlist's goroutines still send on
// sockets that Shutdown closed, so it is logged at Debug. A peer that does not
// reply to a probe is the failure detector's business, logged at Warn.
func parseLogLine(line string) (slog.Level, string) {
	tags := []struct {
		tag   string
		level slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug},
		{"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelWarn},
		{"[ERR]", slog.LevelError},
		{"[ERROR]", slog.LevelError},
	}
	for _, t := range tags {
		if rest, ok := strings.CutPrefix(line, t.tag); ok {
			message := strings.TrimSpace(rest)
			message = strings.TrimPrefix(message, "memberlist: ")
			level := t.level
			switch {
			case level < slog.LevelWarn:
			case strings.Contains(message, "use of closed network connection"):
				level = slog.LevelDebug
			case strings.HasPrefix(message, "Failed fallback TCP ping"):
				level = slog.LevelWarn
			}
			return level, message
		}
	}
	return slog.LevelInfo, line
}
