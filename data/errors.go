package data

import (
	"fmt"
	"strings"
)

// ErrorKind classifies an invalid record or example. Skipped records are counted per
// kind, and the values are stable names for logs and metrics.
type ErrorKind string

// Kinds of invalid input. KindEmptyFile is never skipped, even with Options.SkipInvalid,
// because it concerns the whole file.
const (
	KindEmptyFile     ErrorKind = "empty_file"
	KindLineTooLong   ErrorKind = "line_too_long"
	KindInvalidUTF8   ErrorKind = "invalid_utf8"
	KindMalformedJSON ErrorKind = "malformed_json"
	KindUnknownFormat ErrorKind = "unknown_format"
	KindMissingField  ErrorKind = "missing_field"
	KindWrongType     ErrorKind = "wrong_type"
	KindInvalidValue  ErrorKind = "invalid_value"
	KindChatTemplate  ErrorKind = "chat_template"
	KindNoTokens      ErrorKind = "no_tokens"
	KindNoTargets     ErrorKind = "no_targets"
)

// InputError reports an invalid record: the file, the 1-based line where the record starts
// (0 when the error concerns the whole file), the JSON field and what is wrong with it.
type InputError struct {
	File  string
	Line  int
	Field string // JSON path such as messages[2].role; empty when no single field is at fault
	Kind  ErrorKind
	Msg   string
	Err   error // underlying error, if any
}

// Error formats the error as file:line: field "name": message.
func (e *InputError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *InputError) Unwrap() error { return e.Err }

// fieldError is an InputError before the reader adds the file and line.
type fieldError struct {
	field string
	kind  ErrorKind
	msg   string
}

func (f *fieldError) at(pos Position) *InputError {
	return &InputError{File: pos.File, Line: pos.Line, Field: f.field, Kind: f.kind, Msg: f.msg}
}
