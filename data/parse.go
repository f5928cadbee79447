package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/ringtune/ringtune/tokenizer"
)

// jsonObject is one decoded JSON object. Its values are what encoding/json decodes into
// an interface: map[string]any, []any, string, float64, bool or nil.
type jsonObject = map[string]any

// parseJSONRecord decodes one JSON Lines record, detecting the format on the first
// record that identifies one.
func (r *Reader) parseJSONRecord(line []byte, firstRecord bool) (Record, *fieldError) {
	if !utf8.Valid(line) {
		return Record{}, &fieldError{kind: KindInvalidUTF8, msg: invalidUTF8Message(line)}
	}
	obj, ferr := decodeObject(line, firstRecord)
	if ferr != nil {
		return Record{}, ferr
	}

	format := r.format
	if format == FormatAuto {
		detected, ferr := detectFormat(obj)
		if ferr != nil {
			return Record{}, ferr
		}
		format = detected
		r.format = detected
	}

	rec := Record{Format: format}
	switch format {
	case FormatText:
		rec.Text, ferr = parseText(obj)
	case FormatAlpaca:
		rec.Messages, ferr = parseAlpaca(obj)
	case FormatChat:
		rec.Messages, ferr = parseChat(obj)
	case FormatShareGPT:
		rec.Messages, ferr = parseShareGPT(obj)
	default:
		ferr = &fieldError{kind: KindUnknownFormat, msg: fmt.Sprintf("unsupported format %q", format)}
	}
	return rec, ferr
}

func decodeObject(line []byte, firstRecord bool) (jsonObject, *fieldError) {
	var value any
	err := json.Unmarshal(line, &value)
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &syntaxErr):
		msg := fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
		if firstRecord && len(bytes.TrimSpace(line)) > 0 && bytes.TrimSpace(line)[0] == '[' {
			msg += "; a file holding one JSON array is not JSON Lines, convert it with jq -c '.[]'"
		}
		return nil, &fieldError{kind: KindMalformedJSON, msg: msg}
	case err != nil:
		return nil, &fieldError{kind: KindMalformedJSON, msg: "malformed JSON: " + err.Error()}
	}

	obj, ok := value.(jsonObject)
	if !ok {
		msg := "expected a JSON object, got " + jsonKind(value)
		if _, isArray := value.([]any); isArray && firstRecord {
			msg += "; a file holding one JSON array is not JSON Lines, convert it with jq -c '.[]'"
		}
		return nil, &fieldError{kind: KindMalformedJSON, msg: msg}
	}
	return obj, nil
}

func parseText(obj jsonObject) (string, *fieldError) {
	text, _, ferr := stringField(obj, "text", "text", true)
	if ferr != nil {
		return "", ferr
	}
	if text == "" {
		return "", &fieldError{field: "text", kind: KindInvalidValue, msg: "empty; expected a non-empty document"}
	}
	return text, nil
}

// parseAlpaca renders an Alpaca record as an optional system turn, a user turn of the
// instruction and input separated by a blank line, and an assistant turn of the output.
func parseAlpaca(obj jsonObject) ([]tokenizer.Message, *fieldError) {
	instruction, _, ferr := stringField(obj, "instruction", "instruction", true)
	if ferr != nil {
		return nil, ferr
	}
	input, _, ferr := stringField(obj, "input", "input", false)
	if ferr != nil {
		return nil, ferr
	}
	output, _, ferr := stringField(obj, "output", "output", true)
	if ferr != nil {
		return nil, ferr
	}
	system, _, ferr := stringField(obj, "system", "system", false)
	if ferr != nil {
		return nil, ferr
	}

	var user string
	switch {
	case instruction != "" && input != "":
		user = instruction + "\n\n" + input
	case instruction != "":
		user = instruction
	case input != "":
		user = input
	default:
		return nil, &fieldError{field: "instruction", kind: KindInvalidValue, msg: `empty, and so is "input"; expected a prompt in at least one of them`}
	}
	if output == "" {
		return nil, &fieldError{field: "output", kind: KindInvalidValue, msg: "empty; expected the response to train on"}
	}

	msgs := make([]tokenizer.Message, 0, 3)
	if system != "" {
		msgs = append(msgs, tokenizer.Message{Role: "system", Content: system})
	}
	msgs = append(msgs,
		tokenizer.Message{Role: "user", Content: user},
		tokenizer.Message{Role: "assistant", Content: output},
	)
	return msgs, nil
}

var chatRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

func parseChat(obj jsonObject) ([]tokenizer.Message, *fieldError) {
	items, ferr := arrayField(obj, "messages", "messages")
	if ferr != nil {
		return nil, ferr
	}

	msgs := make([]tokenizer.Message, 0, len(items))
	for i, item := range items {
		path := fmt.Sprintf("messages[%d]", i)
		m, ferr := objectAt(item, path)
		if ferr != nil {
			return nil, ferr
		}

		role, _, ferr := stringField(m, "role", path+".role", true)
		if ferr != nil {
			return nil, ferr
		}
		if !chatRoles[role] {
			return nil, &fieldError{field: path + ".role", kind: KindInvalidValue, msg: fmt.Sprintf("unknown role %q; expected system, user, assistant or tool", role)}
		}
		content, _, ferr := stringField(m, "content", path+".content", true)
		if ferr != nil {
			return nil, ferr
		}
		reasoning, hasReasoning, ferr := stringField(m, "reasoning_content", path+".reasoning_content", false)
		if ferr != nil {
			return nil, ferr
		}
		if ferr := rejectToolCalls(m, path); ferr != nil {
			return nil, ferr
		}

		msg := tokenizer.Message{Role: role, Content: content}
		if hasReasoning {
			msg.ReasoningContent = &reasoning
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// rejectToolCalls fails on a non-empty "tool_calls" field, because the chat template
// input has no place for it and dropping it would train on an assistant turn without
// its calls.
func rejectToolCalls(m jsonObject, path string) *fieldError {
	calls, ok := m["tool_calls"]
	if !ok || calls == nil {
		return nil
	}
	if list, isList := calls.([]any); isList && len(list) == 0 {
		return nil
	}
	return &fieldError{field: path + ".tool_calls", kind: KindInvalidValue, msg: "tool calls are not supported; write them into the message content or drop the message"}
}

// shareGPTRoles maps the "from" values of ShareGPT-style datasets, compared in lower
// case, to chat roles.
var shareGPTRoles = map[string]string{
	"system":      "system",
	"human":       "user",
	"user":        "user",
	"gpt":         "assistant",
	"assistant":   "assistant",
	"chatgpt":     "assistant",
	"model":       "assistant",
	"tool":        "tool",
	"function":    "tool",
	"observation": "tool",
}

func parseShareGPT(obj jsonObject) ([]tokenizer.Message, *fieldError) {
	items, ferr := arrayField(obj, "conversations", "conversations")
	if ferr != nil {
		return nil, ferr
	}
	system, _, ferr := stringField(obj, "system", "system", false)
	if ferr != nil {
		return nil, ferr
	}

	msgs := make([]tokenizer.Message, 0, len(items)+1)
	if system != "" {
		msgs = append(msgs, tokenizer.Message{Role: "system", Content: system})
	}
	for i, item := range items {
		path := fmt.Sprintf("conversations[%d]", i)
		m, ferr := objectAt(item, path)
		if ferr != nil {
			return nil, ferr
		}

		from, _, ferr := stringField(m, "from", path+".from", true)
		if ferr != nil {
			return nil, ferr
		}
		role, ok := shareGPTRoles[strings.ToLower(from)]
		if !ok {
			return nil, &fieldError{field: path + ".from", kind: KindInvalidValue, msg: fmt.Sprintf("unknown speaker %q; expected human or user, gpt, assistant, chatgpt or model, system, or tool, function or observation", from)}
		}
		if role == "system" && system != "" {
			return nil, &fieldError{field: path + ".from", kind: KindInvalidValue, msg: `system turn in a record that also has a top-level "system" field; keep only one of them`}
		}
		value, _, ferr := stringField(m, "value", path+".value", true)
		if ferr != nil {
			return nil, ferr
		}
		msgs = append(msgs, tokenizer.Message{Role: role, Content: value})
	}
	return msgs, nil
}

// stringField returns obj[key] as a string. present is false when the key is missing or
// null, which is an error only when required is true. path names the field in errors.
func stringField(obj jsonObject, key, path string, required bool) (value string, present bool, ferr *fieldError) {
	raw, ok := obj[key]
	if !ok {
		if required {
			return "", false, &fieldError{field: path, kind: KindMissingField, msg: "missing; expected a string"}
		}
		return "", false, nil
	}
	if raw == nil {
		if required {
			return "", false, &fieldError{field: path, kind: KindWrongType, msg: "expected a string, got null"}
		}
		return "", false, nil
	}
	value, ok = raw.(string)
	if !ok {
		return "", false, &fieldError{field: path, kind: KindWrongType, msg: "expected a string, got " + jsonKind(raw)}
	}
	return value, true, nil
}

// arrayField returns the required, non-empty array obj[key].
func arrayField(obj jsonObject, key, path string) ([]any, *fieldError) {
	raw, ok := obj[key]
	if !ok {
		return nil, &fieldError{field: path, kind: KindMissingField, msg: "missing; expected an array of messages"}
	}
	items, ok := raw.([]any)
	if !ok {
		return nil, &fieldError{field: path, kind: KindWrongType, msg: "expected an array of messages, got " + jsonKind(raw)}
	}
	if len(items) == 0 {
		return nil, &fieldError{field: path, kind: KindInvalidValue, msg: "empty; expected at least one message"}
	}
	return items, nil
}

func objectAt(raw any, path string) (jsonObject, *fieldError) {
	obj, ok := raw.(jsonObject)
	if !ok {
		return nil, &fieldError{field: path, kind: KindWrongType, msg: "expected an object, got " + jsonKind(raw)}
	}
	return obj, nil
}

// jsonKind names the JSON type of a decoded value.
func jsonKind(value any) string {
	switch value.(type) {
	case jsonObject:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	default:
		return "number"
	}
}
