package data

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/ringtune/ringtune/tokenizer"
)

// Position locates a record in its file.
type Position struct {
	File string
	Line int // 1-based line where the record starts
}

func (p Position) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Record is one example as read from a file, before tokenization.
type Record struct {
	Pos    Position
	Format Format
	// Text is the document of a FormatText record.
	Text string
	// Messages is the conversation of a chat-format record, with roles already mapped to
	// system, user, assistant and tool.
	Messages []tokenizer.Message
}

// ReadOptions configures a Reader.
type ReadOptions struct {
	// Format of the records. FormatAuto detects it from the first record that has one of
	// the identifying fields.
	Format Format
	// PlainText makes NewReader read plain text instead of JSON Lines. Open sets it from the
	// file extension.
	PlainText bool
	// MaxLineBytes limits the length of one line; 0 means DefaultMaxLineBytes.
	MaxLineBytes int
}

// Reader streams the records of one dataset file.
//
// JSON Lines input contains one JSON object per line, and blank lines are ignored. Plain
// text input contains documents separated by one or more blank lines, so one .txt file
// can carry many training documents. A line of only spaces, tabs, "\r", "\f" or "\v"
// counts as blank. The lines of a document are joined with "\n" and keep their
// indentation. A leading UTF-8 byte order mark and "\r\n" line endings are accepted in
// both layouts.
//
// Next returns an *InputError for an invalid record after consuming it, so the caller
// may log it and call Next again. Any other error, such as a failed read, ends the stream.
type Reader struct {
	name      string
	opts      ReadOptions
	format    Format
	lines     *lineReader
	closer    io.Closer
	sawRecord bool
	sawEOF    bool
}

// Open opens a dataset file for reading. The extension selects the layout: .txt is plain
// text, and .jsonl, .ndjson and .json are JSON Lines. A further .gz suffix selects gzip
// decompression. opts.PlainText is ignored.
func Open(path string, opts ReadOptions) (*Reader, error) {
	ext := strings.ToLower(filepath.Ext(path))
	compressed := ext == ".gz"
	if compressed {
		ext = strings.ToLower(filepath.Ext(strings.TrimSuffix(path, filepath.Ext(path))))
	}
	switch ext {
	case ".txt":
		opts.PlainText = true
	case ".jsonl", ".ndjson", ".json":
		opts.PlainText = false
	default:
		return nil, fmt.Errorf("%s: unsupported file extension %q; expected .txt (plain text) or .jsonl, .ndjson or .json (JSON Lines), optionally followed by .gz", path, ext)
	}

	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open dataset: %w", err)
	}
	var src io.Reader = f
	var closer io.Closer = f
	if compressed {
		gz, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: invalid gzip data: %w", path, err)
		}
		src = gz
		closer = multiCloser{gz, f}
	}

	r, err := NewReader(src, path, opts)
	if err != nil {
		closer.Close()
		return nil, err
	}
	r.closer = closer
	return r, nil
}

// NewReader returns a Reader over src. name identifies the input in errors.
func NewReader(src io.Reader, name string, opts ReadOptions) (*Reader, error) {
	format, err := ParseFormat(string(opts.Format))
	if err != nil {
		return nil, err
	}
	opts.Format = format
	if opts.PlainText && opts.Format != FormatAuto && opts.Format != FormatText {
		return nil, fmt.Errorf("%s: format %q is invalid for plain text input, which contains only text documents; use a .jsonl file for %s records", name, opts.Format, opts.Format)
	}
	if opts.MaxLineBytes < 0 {
		return nil, fmt.Errorf("invalid maximum line length %d; expected a positive number of bytes, or 0 for the default", opts.MaxLineBytes)
	}
	if opts.MaxLineBytes == 0 {
		opts.MaxLineBytes = DefaultMaxLineBytes
	}

	r := &Reader{name: name, opts: opts, format: opts.Format, lines: newLineReader(src, opts.MaxLineBytes)}
	if opts.PlainText {
		r.format = FormatText
	}
	return r, nil
}

// Format returns the format of the records: the requested one, or the detected one once a
// record has been read. It returns FormatAuto before detection.
func (r *Reader) Format() Format { return r.format }

// Close closes the underlying file when the Reader was made by Open.
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	return r.closer.Close()
}

// Next returns the next record, or io.EOF after the last one. A file without any record
// yields one *InputError of kind KindEmptyFile before io.EOF.
func (r *Reader) Next() (Record, error) {
	if r.opts.PlainText {
		return r.nextDocument()
	}
	return r.nextJSON()
}

func (r *Reader) nextJSON() (Record, error) {
	for {
		line, err := r.readLine()
		if errors.Is(err, io.EOF) {
			return Record{}, r.endOfInput()
		}
		if err != nil {
			return Record{}, err
		}
		if isBlank(line) {
			continue
		}

		first := !r.sawRecord
		r.sawRecord = true
		pos := Position{File: r.name, Line: r.lines.line}
		rec, ferr := r.parseJSONRecord(line, first)
		if ferr != nil {
			return Record{}, ferr.at(pos)
		}
		rec.Pos = pos
		return rec, nil
	}
}

// nextDocument returns the next blank-line-separated document of a plain text file.
// A document with an over-long or non-UTF-8 line is consumed whole and reported at that
// line.
func (r *Reader) nextDocument() (Record, error) {
	var text []byte
	start := 0
	var invalid *InputError
	for {
		line, err := r.readLine()
		if errors.Is(err, io.EOF) {
			if start == 0 {
				return Record{}, r.endOfInput()
			}
			break
		}
		var inputErr *InputError
		if errors.As(err, &inputErr) {
			if start == 0 {
				start = r.lines.line
			}
			if invalid == nil {
				invalid = inputErr
			}
			continue
		}
		if err != nil {
			return Record{}, err
		}

		if isBlank(line) {
			if start == 0 {
				continue
			}
			break
		}
		if start == 0 {
			start = r.lines.line
		}
		if invalid == nil && !utf8.Valid(line) {
			invalid = &InputError{File: r.name, Line: r.lines.line, Kind: KindInvalidUTF8, Msg: invalidUTF8Message(line)}
		}
		if invalid == nil {
			if len(text) > 0 {
				text = append(text, '\n')
			}
			text = append(text, line...)
		}
	}

	r.sawRecord = true
	if invalid != nil {
		return Record{}, invalid
	}
	return Record{Pos: Position{File: r.name, Line: start}, Format: FormatText, Text: string(text)}, nil
}

// readLine returns the next line with a leading byte order mark removed, or an
// *InputError of kind KindLineTooLong.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.lines.next()
	if errors.Is(err, errLineTooLong) {
		r.sawRecord = true
		return nil, &InputError{
			File: r.name, Line: r.lines.line, Kind: KindLineTooLong,
			Msg: fmt.Sprintf("line is longer than the maximum of %d bytes; raise the maximum line length or shorten the record", r.opts.MaxLineBytes),
		}
	}
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("%s: read failed after line %d: %w", r.name, r.lines.line, err)
	}
	if r.lines.line == 1 {
		line = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
	}
	return line, nil
}

func (r *Reader) endOfInput() error {
	if !r.sawRecord && !r.sawEOF {
		r.sawEOF = true
		return &InputError{File: r.name, Kind: KindEmptyFile, Msg: "the file contains no records"}
	}
	r.sawEOF = true
	return io.EOF
}

func isBlank(line []byte) bool {
	return len(bytes.Trim(line, " \t\r\f\v")) == 0
}

// invalidUTF8Message names the 1-based byte offset of the first invalid sequence.
func invalidUTF8Message(line []byte) string {
	offset := 0
	for offset < len(line) {
		r, size := utf8.DecodeRune(line[offset:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		offset += size
	}
	return fmt.Sprintf("invalid UTF-8 at byte %d of the line; re-encode the file as UTF-8", offset+1)
}

type multiCloser []io.Closer

func (m multiCloser) Close() error {
	var errs []error
	for _, c := range m {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
