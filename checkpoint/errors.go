package checkpoint

import (
	"errors"
	"fmt"
	"strings"
)

// Error kinds. Every error that the package returns for a file or tensor is an *Error
// whose Kind is one of these, so callers can test it with errors.Is.
var (
	// ErrNotFound: the tensor, the file or the model directory does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidHeader: the header is not UTF-8, not valid JSON or not the structure that
	// safetensors defines.
	ErrInvalidHeader = errors.New("invalid header")
	// ErrHeaderTooLarge: the header length exceeds MaxHeaderSize.
	ErrHeaderTooLarge = errors.New("header too large")
	// ErrTruncated: the file ends before the header or the tensor data does.
	ErrTruncated = errors.New("truncated file")
	// ErrInvalidOffsets: data_offsets overlap, leave a gap, run backwards or leave bytes
	// after the last tensor.
	ErrInvalidOffsets = errors.New("invalid data_offsets")
	// ErrShapeMismatch: a shape disagrees with the data size or with what the caller
	// expects.
	ErrShapeMismatch = errors.New("shape mismatch")
	// ErrDTypeMismatch: the tensor's dtype cannot be read or written the requested way.
	ErrDTypeMismatch = errors.New("dtype mismatch")
	// ErrUnknownDType: the header names a dtype that safetensors does not define.
	ErrUnknownDType = errors.New("unknown dtype")
	// ErrInvalidIndex: model.safetensors.index.json is malformed or disagrees with its
	// shards.
	ErrInvalidIndex = errors.New("invalid index")
	// ErrInvalidTensor: a Tensor or option passed to Write or WriteModel is not valid.
	ErrInvalidTensor = errors.New("invalid tensor")
	// ErrIO: the operating system failed to open, read, write, sync or rename a file.
	ErrIO = errors.New("I/O error")
)

// Error describes a failure to read or write a checkpoint file. Its message names the
// file and the tensor, states the problem and, from Hint, a suggested fix.
type Error struct {
	Path   string // file the error concerns, empty for ParseHeader
	Tensor string // tensor name, empty when the error concerns the whole file
	Kind   error  // one of the Err* kinds
	Msg    string // description of the problem, with the values involved
	Hint   string // suggested fix, may be empty
	Err    error  // underlying error from the OS or the JSON decoder, or nil
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", e.Tensor)
	}
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the kind and the underlying error, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Hints shared by several errors.
const (
	hintCorrupt   = "the file is damaged or was written incorrectly: download or export it again"
	hintTruncated = "the download or copy was cut short: fetch the file again"
)

func newError(path, tensor string, kind error, hint, format string, args ...any) *Error {
	return &Error{Path: path, Tensor: tensor, Kind: kind, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// withPath returns err with Path set when it is an *Error without one.
func withPath(err error, path string) error {
	var e *Error
	if errors.As(err, &e) && e.Path == "" {
		copied := *e
		copied.Path = path
		return &copied
	}
	return err
}
