package data

import (
	"fmt"
	"strings"
)

// Format is the layout of the records in a dataset file.
type Format string

// Supported formats. FormatAuto detects the format from the first record that has one of
// the identifying fields listed in formatKeys.
const (
	FormatAuto     Format = ""
	FormatText     Format = "text"     // {"text": ...} per line, or a .txt file
	FormatAlpaca   Format = "alpaca"   // {"instruction", "input", "output", "system"}
	FormatChat     Format = "chat"     // {"messages": [{"role", "content", "reasoning_content"}]}
	FormatShareGPT Format = "sharegpt" // {"conversations": [{"from", "value"}], "system"}
)

// ParseFormat parses a format name as given on a command line. "" and "auto" select
// detection.
func ParseFormat(name string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(name))); f {
	case FormatAuto, "auto":
		return FormatAuto, nil
	case FormatText, FormatAlpaca, FormatChat, FormatShareGPT:
		return f, nil
	default:
		return "", fmt.Errorf("unknown dataset format %q; expected text, alpaca, chat, sharegpt or auto", name)
	}
}

// isChat reports whether examples of the format are conversations rendered through the
// chat template.
func (f Format) isChat() bool {
	return f == FormatAlpaca || f == FormatChat || f == FormatShareGPT
}

// formatKeys lists the field that identifies each JSON Lines format, in detection
// priority. "text" comes last because structured datasets often carry a rendered "text"
// column next to their real fields (tatsu-lab/alpaca does).
var formatKeys = []struct {
	key    string
	format Format
}{
	{"messages", FormatChat},
	{"conversations", FormatShareGPT},
	{"instruction", FormatAlpaca},
	{"text", FormatText},
}

// detectFormat returns the format of a record from its top-level keys.
func detectFormat[V any](obj map[string]V) (Format, *fieldError) {
	for _, k := range formatKeys {
		if _, ok := obj[k.key]; ok {
			return k.format, nil
		}
	}
	return "", &fieldError{
		kind: KindUnknownFormat,
		msg:  `cannot detect the dataset format: the record has none of the fields "messages" (chat), "conversations" (sharegpt), "instruction" (alpaca) or "text"; fix the record or set the format explicitly`,
	}
}
