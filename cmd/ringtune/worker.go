package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
)

// jsonWorker is a rank process of a local benchmark ring: it reads its orders
// on stdin and writes one JSON message of type M per line on stdout.
type jsonWorker[M any] struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan M
	// exited is closed once the process has exited; err is its exit error.
	exited chan struct{}
	err    error
}

// startJSONWorker starts cmd, whose environment and process attributes the
// caller has set, and decodes its stdout into lines, which holds up to buffer
// messages. Lines that are not JSON messages are logged and skipped.
func startJSONWorker[M any](cmd *exec.Cmd, rank, buffer int) (*jsonWorker[M], error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start rank %d: %w", rank, err)
	}

	w := &jsonWorker[M]{cmd: cmd, stdin: stdin, lines: make(chan M, buffer), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m M
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				slog.Warn("ignoring a line from a worker that is not a JSON message", "rank", rank, "line", sc.Text())
				continue
			}
			w.lines <- m
		}
		close(w.lines)
		w.err = cmd.Wait()
		close(w.exited)
	}()
	return w, nil
}
