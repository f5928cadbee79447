package data

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// DefaultMaxLineBytes is the default limit on one line of input: 64 MiB, about 128 times
// the JSON record of a 128k-token conversation at an estimated 4 bytes per token.
const DefaultMaxLineBytes = 64 << 20

var errLineTooLong = errors.New("line too long")

// lineReader splits a stream into lines and counts them.
type lineReader struct {
	r        *bufio.Reader
	maxBytes int
	line     int // number of the line last returned, 1-based
	buf      []byte
}

func newLineReader(r io.Reader, maxBytes int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), maxBytes: maxBytes}
}

// next returns the next line without its "\n" or "\r\n" terminator. The slice is valid
// until the following call. A line longer than maxBytes yields errLineTooLong after the
// rest of it has been consumed, so the call after that returns the following line.
// next returns io.EOF once the input is exhausted.
func (l *lineReader) next() ([]byte, error) {
	l.buf = l.buf[:0]
	tooLong := false
	sawBytes := false
read:
	for {
		chunk, err := l.r.ReadSlice('\n')
		if len(chunk) > 0 {
			sawBytes = true
		}
		// Two bytes of slack let the terminator through before the exact check below.
		if !tooLong && len(l.buf)+len(chunk) > l.maxBytes+2 {
			tooLong = true
			l.buf = l.buf[:0]
		}
		if !tooLong {
			l.buf = append(l.buf, chunk...)
		}

		switch {
		case err == nil:
			// A complete line ending in "\n".
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !sawBytes {
				return nil, io.EOF
			}
		default:
			return nil, err
		}
		break read
	}

	l.line++
	line := bytes.TrimSuffix(l.buf, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if tooLong || len(line) > l.maxBytes {
		return nil, errLineTooLong
	}
	return line, nil
}
