package data_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ringtune/ringtune/data"
)

// drain reads every record and checks the invariants that hold for any input: no panic,
// only *InputError or io.EOF from an in-memory source, an end within a bounded number
// of calls, and lines that increase.
func drain(t *testing.T, input []byte, opts data.ReadOptions) []data.Record {
	r, err := data.NewReader(bytes.NewReader(input), "fuzz", opts)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	lines := bytes.Count(input, []byte("\n")) + 1
	var records []data.Record
	lastLine := 0
	// Every call consumes at least one line, plus one call for the empty-file error and
	// one for io.EOF.
	for calls := 0; calls <= lines+2; calls++ {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return records
		}
		if err != nil {
			var inputErr *data.InputError
			if !errors.As(err, &inputErr) {
				t.Fatalf("Next returned %T %v; expected *data.InputError or io.EOF", err, err)
			}
			if inputErr.Line > lines {
				t.Fatalf("error at line %d of a %d-line input: %v", inputErr.Line, lines, err)
			}
			continue
		}
		if rec.Pos.Line <= lastLine {
			t.Fatalf("record at line %d after a record at line %d", rec.Pos.Line, lastLine)
		}
		lastLine = rec.Pos.Line
		records = append(records, rec)
	}
	t.Fatalf("Next did not return io.EOF within %d calls", lines+3)
	return nil
}

var validRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

func FuzzReadJSONL(f *testing.F) {
	seeds := []string{
		`{"text": "hello"}`,
		`{"instruction": "Add.", "input": "1 2", "output": "3", "system": "s"}`,
		`{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]}`,
		`{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": "s"}`,
		`{"messages": [{"role": "bot", "content": "q"}]}`,
		"{\"text\": \"caf\xe9\"}",
		`[{"text": "a"}]`,
		`{"text": "a"} {"text": "b"}`,
		`null`,
		"\xEF\xBB\xBF{\"text\": \"bom\"}\r\n\r\n{\"text\": \"crlf\"}",
		`{"messages": [{"role": "assistant", "content": "", "tool_calls": [{}]}]}`,
		`{"text": "` + strings.Repeat("x", 80) + `"}`,
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(jsonl(s, `{"text": "after"}`)), uint8(0), uint8(0))
	}
	f.Add([]byte(`{"messages": [{"role": "user", "content": "q"}]}`), uint8(3), uint8(40))

	formats := []data.Format{data.FormatAuto, data.FormatText, data.FormatAlpaca, data.FormatChat, data.FormatShareGPT}
	f.Fuzz(func(t *testing.T, input []byte, formatIndex, maxLine uint8) {
		format := formats[int(formatIndex)%len(formats)]
		records := drain(t, input, data.ReadOptions{Format: format, MaxLineBytes: int(maxLine)})

		for _, rec := range records {
			if format != data.FormatAuto && rec.Format != format {
				t.Fatalf("record of format %q from a reader of format %q", rec.Format, format)
			}
			if rec.Format == data.FormatText {
				if rec.Text == "" || !utf8.ValidString(rec.Text) {
					t.Fatalf("invalid text %q at line %d", rec.Text, rec.Pos.Line)
				}
				continue
			}
			if len(rec.Messages) == 0 {
				t.Fatalf("conversation without messages at line %d", rec.Pos.Line)
			}
			for _, m := range rec.Messages {
				if !validRoles[m.Role] {
					t.Fatalf("message with role %q at line %d", m.Role, rec.Pos.Line)
				}
				if !utf8.ValidString(m.Content) {
					t.Fatalf("message content %q is not UTF-8", m.Content)
				}
			}
		}
	})
}

func FuzzReadPlainText(f *testing.F) {
	seeds := []string{
		"one\ntwo\n\nthree\n",
		"\xEF\xBB\xBFbom\r\n\r\nnext",
		"bad \xff\n\ngood",
		"\n\n\n",
		" \t \n\f\nx",
		strings.Repeat("long ", 30) + "\n\nshort",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(0))
	}
	f.Add([]byte("abc\ndefghijkl\n\nxyz"), uint8(5))

	f.Fuzz(func(t *testing.T, input []byte, maxLine uint8) {
		records := drain(t, input, data.ReadOptions{PlainText: true, MaxLineBytes: int(maxLine)})

		for _, rec := range records {
			if rec.Format != data.FormatText {
				t.Fatalf("plain text record of format %q", rec.Format)
			}
			if rec.Text == "" || !utf8.ValidString(rec.Text) {
				t.Fatalf("invalid document %q at line %d", rec.Text, rec.Pos.Line)
			}
			for _, line := range strings.Split(rec.Text, "\n") {
				if strings.Trim(line, " \t\r\f\v") == "" {
					t.Fatalf("document at line %d contains a blank line: %q", rec.Pos.Line, rec.Text)
				}
			}
			if !bytes.Contains(input, []byte(strings.SplitN(rec.Text, "\n", 2)[0])) {
				t.Fatalf("document %q does not come from the input", rec.Text)
			}
		}
	})
}
