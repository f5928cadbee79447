package peft

import (
	"errors"
	"fmt"
	"strings"
)

// Error kinds. Errors that the package returns for an adapter's files are *Error values
// whose Kind is one of these, so callers can test them with errors.Is.
var (
	// ErrInvalidConfig: adapter_config.json is missing, is not valid JSON, or a field
	// has a value that PEFT would not accept either.
	ErrInvalidConfig = errors.New("invalid adapter config")
	// ErrUnsupported: a field requests a PEFT feature that this package does not
	// implement, such as DoRA or rank_pattern, or the weights are in PyTorch's .bin
	// format.
	ErrUnsupported = errors.New("unsupported adapter option")
	// ErrTensor: adapter_model.safetensors has an unknown, missing or misshapen tensor.
	ErrTensor = errors.New("invalid adapter tensor")
	// ErrBase: the base model does not fit the adapter or cannot be merged into.
	ErrBase = errors.New("invalid base model")
)

// Error describes a problem with one field or tensor of an adapter or base model.
type Error struct {
	Path   string // file the error concerns
	Field  string // adapter_config.json key, or empty
	Tensor string // tensor name, or empty
	Kind   error  // one of the Err* kinds
	Msg    string // what is wrong, with the values involved and what to do
	Err    error  // underlying error, or nil
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	if e.Tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", e.Tensor)
	}
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
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

func fieldError(path, field string, kind error, format string, args ...any) *Error {
	return &Error{Path: path, Field: field, Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func tensorError(path, tensor string, format string, args ...any) *Error {
	return &Error{Path: path, Tensor: tensor, Kind: ErrTensor, Msg: fmt.Sprintf(format, args...)}
}
