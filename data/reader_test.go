package data_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/tokenizer"
)

// readAll returns every record of a file, failing the test on any error.
func readAll(t *testing.T, path string, opts data.ReadOptions) ([]data.Record, data.Format) {
	t.Helper()
	r, err := data.Open(path, opts)
	require.NoError(t, err)
	defer r.Close()
	var records []data.Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return records, r.Format()
		}
		require.NoError(t, err)
		records = append(records, rec)
	}
}

// firstError returns the first error that Next returns for the file.
func firstError(t *testing.T, path string, opts data.ReadOptions) error {
	t.Helper()
	r, err := data.Open(path, opts)
	require.NoError(t, err)
	defer r.Close()
	for {
		_, err := r.Next()
		if err != nil {
			return err
		}
	}
}

func msg(role, content string) tokenizer.Message {
	return tokenizer.Message{Role: role, Content: content}
}

func TestReadDetectsFormats(t *testing.T) {
	reasoning := "think first"
	tests := []struct {
		name     string
		content  string
		format   data.Format
		messages [][]tokenizer.Message
		texts    []string
	}{
		{
			name:    "text",
			content: jsonl(`{"text": "hello world"}`, `{"text": "second"}`),
			format:  data.FormatText,
			texts:   []string{"hello world", "second"},
		},
		{
			name: "alpaca",
			content: jsonl(
				`{"instruction": "Add.", "input": "2 and 3", "output": "5"}`,
				`{"instruction": "Greet.", "input": "", "output": "Hi", "system": "Be brief."}`,
				`{"instruction": "Count.", "output": "1 2 3", "input": null}`,
				`{"instruction": "", "input": "only input", "output": "ok"}`,
			),
			format: data.FormatAlpaca,
			messages: [][]tokenizer.Message{
				{msg("user", "Add.\n\n2 and 3"), msg("assistant", "5")},
				{msg("system", "Be brief."), msg("user", "Greet."), msg("assistant", "Hi")},
				{msg("user", "Count."), msg("assistant", "1 2 3")},
				{msg("user", "only input"), msg("assistant", "ok")},
			},
		},
		{
			name: "alpaca with rendered text column",
			content: jsonl(
				`{"instruction": "Add.", "input": "", "output": "5", "text": "### Instruction: Add. ### Response: 5"}`,
			),
			format:   data.FormatAlpaca,
			messages: [][]tokenizer.Message{{msg("user", "Add."), msg("assistant", "5")}},
		},
		{
			name: "chat",
			content: jsonl(
				`{"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "think first"}]}`,
				`{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "call"}, {"role": "tool", "content": "42"}, {"role": "assistant", "content": "42", "tool_calls": []}]}`,
			),
			format: data.FormatChat,
			messages: [][]tokenizer.Message{
				{msg("system", "sys"), msg("user", "q"), {Role: "assistant", Content: "a", ReasoningContent: &reasoning}},
				{msg("user", "q"), msg("assistant", "call"), msg("tool", "42"), msg("assistant", "42")},
			},
		},
		{
			name:     "sharegpt",
			content:  jsonl(`{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}`),
			format:   data.FormatShareGPT,
			messages: [][]tokenizer.Message{{msg("user", "q"), msg("assistant", "a")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "train.jsonl", tt.content)

			records, format := readAll(t, path, data.ReadOptions{})

			assert.Equal(t, tt.format, format)
			for i, rec := range records {
				assert.Equal(t, tt.format, rec.Format, "record %d", i)
				assert.Equal(t, path, rec.Pos.File, "record %d", i)
				assert.Equal(t, i+1, rec.Pos.Line, "record %d", i)
			}
			if tt.texts != nil {
				require.Len(t, records, len(tt.texts))
				for i, rec := range records {
					assert.Equal(t, tt.texts[i], rec.Text, "record %d", i)
				}
			}
			if tt.messages != nil {
				require.Len(t, records, len(tt.messages))
				for i, rec := range records {
					assert.Equal(t, tt.messages[i], rec.Messages, "record %d", i)
				}
			}
		})
	}
}

func TestReadShareGPTRoles(t *testing.T) {
	path := writeFile(t, "sg.jsonl", jsonl(
		`{"system": "sys", "conversations": [{"from": "Human", "value": "a"}, {"from": "GPT", "value": "b"}, {"from": "user", "value": "c"}, {"from": "assistant", "value": "d"}, {"from": "chatgpt", "value": "e"}, {"from": "model", "value": "f"}, {"from": "tool", "value": "g"}, {"from": "function", "value": "h"}, {"from": "observation", "value": "i"}]}`,
		`{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}], "system": null}`,
	))

	records, format := readAll(t, path, data.ReadOptions{})

	assert.Equal(t, data.FormatShareGPT, format)
	require.Len(t, records, 2)
	assert.Equal(t, []tokenizer.Message{
		msg("system", "sys"), msg("user", "a"), msg("assistant", "b"), msg("user", "c"), msg("assistant", "d"),
		msg("assistant", "e"), msg("assistant", "f"), msg("tool", "g"), msg("tool", "h"), msg("tool", "i"),
	}, records[0].Messages)
	assert.Equal(t, []tokenizer.Message{msg("system", "s"), msg("user", "q"), msg("assistant", "r")}, records[1].Messages)
}

func TestReadExplicitFormatOverridesDetection(t *testing.T) {
	path := writeFile(t, "train.jsonl", jsonl(`{"text": "rendered", "instruction": "Add.", "output": "5"}`))

	records, format := readAll(t, path, data.ReadOptions{Format: data.FormatText})

	assert.Equal(t, data.FormatText, format)
	require.Len(t, records, 1)
	assert.Equal(t, "rendered", records[0].Text)
}

func TestReadPlainTextDocuments(t *testing.T) {
	content := "\xEF\xBB\xBFfirst line\r\n  indented second\r\n\r\n\n \t \nsecond doc\n\n\nthird doc\nlast line without newline"
	path := writeFile(t, "corpus.txt", content)

	records, format := readAll(t, path, data.ReadOptions{})

	assert.Equal(t, data.FormatText, format)
	require.Len(t, records, 3)
	assert.Equal(t, "first line\n  indented second", records[0].Text)
	assert.Equal(t, 1, records[0].Pos.Line)
	assert.Equal(t, "second doc", records[1].Text)
	assert.Equal(t, 6, records[1].Pos.Line)
	assert.Equal(t, "third doc\nlast line without newline", records[2].Text)
	assert.Equal(t, 9, records[2].Pos.Line)
}

func TestReadPlainTextRejectsOtherFormats(t *testing.T) {
	path := writeFile(t, "corpus.txt", "text\n")

	_, err := data.Open(path, data.ReadOptions{Format: data.FormatChat})

	require.Error(t, err)
	assert.Contains(t, err.Error(), `format "chat" is invalid for plain text input, which contains only text documents; use a .jsonl file for chat records`)
}

func TestReadSkipsBlankLinesAndCountsThem(t *testing.T) {
	path := writeFile(t, "train.jsonl", "\n  \n{\"text\": \"a\"}\r\n\n\t\n{\"text\": \"b\"}")

	records, _ := readAll(t, path, data.ReadOptions{})

	require.Len(t, records, 2)
	assert.Equal(t, 3, records[0].Pos.Line)
	assert.Equal(t, 6, records[1].Pos.Line)
	assert.Equal(t, "b", records[1].Text)
}

func TestReadRejectsInvalidRecords(t *testing.T) {
	tests := []struct {
		name    string
		content string
		format  data.Format
		kind    data.ErrorKind
		want    string // error text after the file path
	}{
		{
			name:    "unknown chat role",
			content: jsonl(`{"messages": [{"role": "user", "content": "q"}]}`, `{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "bot", "content": "x"}]}`),
			kind:    data.KindInvalidValue,
			want:    `:2: field "messages[2].role": unknown role "bot"; expected system, user, assistant or tool`,
		},
		{
			name:    "malformed JSON",
			content: jsonl(`{"text": "a"}`, `{"text": "b"`),
			kind:    data.KindMalformedJSON,
			want:    `:2: malformed JSON at byte 12: unexpected end of JSON input`,
		},
		{
			name:    "trailing data after the object",
			content: jsonl(`{"text": "a"} {"text": "b"}`),
			kind:    data.KindMalformedJSON,
			want:    `:1: malformed JSON at byte 15: invalid character '{' after top-level value`,
		},
		{
			name:    "record is not an object",
			content: jsonl(`{"text": "a"}`, `"just a string"`),
			kind:    data.KindMalformedJSON,
			want:    `:2: expected a JSON object, got string`,
		},
		{
			name:    "record is null",
			content: jsonl(`null`),
			kind:    data.KindMalformedJSON,
			want:    `:1: expected a JSON object, got null`,
		},
		{
			name:    "file is one JSON array",
			content: `[{"text": "a"}, {"text": "b"}]`,
			kind:    data.KindMalformedJSON,
			want:    `:1: expected a JSON object, got array; a file holding one JSON array is not JSON Lines, convert it with jq -c '.[]'`,
		},
		{
			name:    "undetectable format",
			content: jsonl(`{"prompt": "q", "completion": "a"}`),
			kind:    data.KindUnknownFormat,
			want:    `:1: cannot detect the dataset format: the record has none of the fields "messages" (chat), "conversations" (sharegpt), "instruction" (alpaca) or "text"; fix the record or set the format explicitly`,
		},
		{
			name:    "missing messages",
			content: jsonl(`{"messages": [{"role": "user", "content": "q"}]}`, `{"text": "x"}`),
			kind:    data.KindMissingField,
			want:    `:2: field "messages": missing; expected an array of messages`,
		},
		{
			name:    "messages of wrong type",
			content: jsonl(`{"messages": "hello"}`),
			kind:    data.KindWrongType,
			want:    `:1: field "messages": expected an array of messages, got string`,
		},
		{
			name:    "empty messages",
			content: jsonl(`{"messages": []}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "messages": empty; expected at least one message`,
		},
		{
			name:    "message not an object",
			content: jsonl(`{"messages": [{"role": "user", "content": "q"}, 7]}`),
			kind:    data.KindWrongType,
			want:    `:1: field "messages[1]": expected an object, got number`,
		},
		{
			name:    "content of wrong type",
			content: jsonl(`{"messages": [{"role": "user", "content": ["part"]}]}`),
			kind:    data.KindWrongType,
			want:    `:1: field "messages[0].content": expected a string, got array`,
		},
		{
			name:    "content null",
			content: jsonl(`{"messages": [{"role": "user", "content": null}]}`),
			kind:    data.KindWrongType,
			want:    `:1: field "messages[0].content": expected a string, got null`,
		},
		{
			name:    "missing role",
			content: jsonl(`{"messages": [{"content": "q"}]}`),
			kind:    data.KindMissingField,
			want:    `:1: field "messages[0].role": missing; expected a string`,
		},
		{
			name:    "reasoning of wrong type",
			content: jsonl(`{"messages": [{"role": "assistant", "content": "a", "reasoning_content": 3}]}`),
			kind:    data.KindWrongType,
			want:    `:1: field "messages[0].reasoning_content": expected a string, got number`,
		},
		{
			name:    "tool calls",
			content: jsonl(`{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "messages[0].tool_calls": tool calls are not supported; write them into the message content or drop the message`,
		},
		{
			name:    "alpaca missing output",
			content: jsonl(`{"instruction": "q"}`),
			kind:    data.KindMissingField,
			want:    `:1: field "output": missing; expected a string`,
		},
		{
			name:    "alpaca output of wrong type",
			content: jsonl(`{"instruction": "q", "output": 5}`),
			kind:    data.KindWrongType,
			want:    `:1: field "output": expected a string, got number`,
		},
		{
			name:    "alpaca input of wrong type",
			content: jsonl(`{"instruction": "q", "input": false, "output": "a"}`),
			kind:    data.KindWrongType,
			want:    `:1: field "input": expected a string, got boolean`,
		},
		{
			name:    "alpaca empty prompt",
			content: jsonl(`{"instruction": "", "input": "", "output": "a"}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "instruction": empty, and so is "input"; expected a prompt in at least one of them`,
		},
		{
			name:    "alpaca empty output",
			content: jsonl(`{"instruction": "q", "output": ""}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "output": empty; expected the response to train on`,
		},
		{
			name:    "sharegpt unknown speaker",
			content: jsonl(`{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "conversations[1].from": unknown speaker "bot"; expected human or user, gpt, assistant, chatgpt or model, system, or tool, function or observation`,
		},
		{
			name:    "sharegpt function call",
			content: jsonl(`{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}]}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "conversations[1].from": unknown speaker "function_call"; expected human or user, gpt, assistant, chatgpt or model, system, or tool, function or observation`,
		},
		{
			name:    "sharegpt value missing",
			content: jsonl(`{"conversations": [{"from": "human"}]}`),
			kind:    data.KindMissingField,
			want:    `:1: field "conversations[0].value": missing; expected a string`,
		},
		{
			name:    "sharegpt two system prompts",
			content: jsonl(`{"system": "a", "conversations": [{"from": "system", "value": "b"}]}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "conversations[0].from": system turn in a record that also has a top-level "system" field; keep only one of them`,
		},
		{
			name:    "text empty",
			content: jsonl(`{"text": ""}`),
			kind:    data.KindInvalidValue,
			want:    `:1: field "text": empty; expected a non-empty document`,
		},
		{
			name:    "text of wrong type",
			content: jsonl(`{"text": {"body": "x"}}`),
			kind:    data.KindWrongType,
			want:    `:1: field "text": expected a string, got object`,
		},
		{
			name:    "invalid UTF-8 in JSON",
			content: "{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n",
			kind:    data.KindInvalidUTF8,
			want:    `:2: invalid UTF-8 at byte 14 of the line; re-encode the file as UTF-8`,
		},
		{
			name:    "chat record in alpaca file",
			content: jsonl(`{"messages": [{"role": "user", "content": "q"}]}`),
			format:  data.FormatAlpaca,
			kind:    data.KindMissingField,
			want:    `:1: field "instruction": missing; expected a string`,
		},
		{
			name:    "empty file",
			content: "",
			kind:    data.KindEmptyFile,
			want:    `: the file contains no records`,
		},
		{
			name:    "blank file",
			content: "\n \n\t\n",
			kind:    data.KindEmptyFile,
			want:    `: the file contains no records`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "train.jsonl", tt.content)

			err := firstError(t, path, data.ReadOptions{Format: tt.format})

			var inputErr *data.InputError
			require.ErrorAs(t, err, &inputErr)
			assert.Equal(t, tt.kind, inputErr.Kind)
			assert.Equal(t, path+tt.want, err.Error())
		})
	}
}

func TestReadPlainTextInvalidUTF8(t *testing.T) {
	path := writeFile(t, "corpus.txt", "good\n\nbad \xff line\nrest of bad doc\n\nlast good\n")
	r, err := data.Open(path, data.ReadOptions{})
	require.NoError(t, err)
	defer r.Close()

	first, err := r.Next()
	require.NoError(t, err)
	_, err = r.Next()
	var inputErr *data.InputError
	require.ErrorAs(t, err, &inputErr)
	last, err := r.Next()
	require.NoError(t, err)
	_, err = r.Next()

	assert.Equal(t, "good", first.Text)
	assert.Equal(t, data.KindInvalidUTF8, inputErr.Kind)
	assert.Equal(t, path+":3: invalid UTF-8 at byte 5 of the line; re-encode the file as UTF-8", inputErr.Error())
	assert.Equal(t, "last good", last.Text, "the rest of the invalid document is skipped")
	assert.Equal(t, 6, last.Pos.Line)
	assert.ErrorIs(t, err, io.EOF)
}

func TestReadLineTooLongContinues(t *testing.T) {
	long := `{"text": "` + strings.Repeat("x", 100) + `"}`
	path := writeFile(t, "train.jsonl", jsonl(`{"text": "a"}`, long, `{"text": "b"}`))
	r, err := data.Open(path, data.ReadOptions{MaxLineBytes: 64})
	require.NoError(t, err)
	defer r.Close()

	first, err := r.Next()
	require.NoError(t, err)
	_, tooLong := r.Next()
	after, err := r.Next()
	require.NoError(t, err)

	assert.Equal(t, "a", first.Text)
	var inputErr *data.InputError
	require.ErrorAs(t, tooLong, &inputErr)
	assert.Equal(t, data.KindLineTooLong, inputErr.Kind)
	assert.Equal(t, path+":2: line is longer than the maximum of 64 bytes; raise the maximum line length or shorten the record", tooLong.Error())
	assert.Equal(t, "b", after.Text)
	assert.Equal(t, 3, after.Pos.Line)
}

func TestReadLineAtMaximumLength(t *testing.T) {
	line := `{"text": "` + strings.Repeat("y", 20) + `"}`
	path := writeFile(t, "train.jsonl", line+"\r\n"+line+"\n"+line)

	records, _ := readAll(t, path, data.ReadOptions{MaxLineBytes: len(line)})

	require.Len(t, records, 3)
	assert.Equal(t, strings.Repeat("y", 20), records[2].Text)
}

func TestReadLongLineAcrossBufferBoundary(t *testing.T) {
	text := strings.Repeat("z", 200_000)
	path := writeFile(t, "train.jsonl", jsonl(`{"text": "`+text+`"}`, `{"text": "next"}`))

	records, _ := readAll(t, path, data.ReadOptions{})

	require.Len(t, records, 2)
	assert.Equal(t, text, records[0].Text)
	assert.Equal(t, 2, records[1].Pos.Line)
}

func TestReadEmptyFileThenEOF(t *testing.T) {
	r, err := data.NewReader(strings.NewReader(""), "empty.jsonl", data.ReadOptions{})
	require.NoError(t, err)

	_, first := r.Next()
	_, second := r.Next()

	var inputErr *data.InputError
	require.ErrorAs(t, first, &inputErr)
	assert.Equal(t, data.KindEmptyFile, inputErr.Kind)
	assert.Equal(t, 0, inputErr.Line)
	assert.ErrorIs(t, second, io.EOF)
}

func TestOpenGzip(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	_, err := gz.Write([]byte(jsonl(`{"text": "zipped"}`)))
	require.NoError(t, err)
	require.NoError(t, gz.Close())
	path := writeFile(t, "train.jsonl.gz", buf.String())

	records, format := readAll(t, path, data.ReadOptions{})

	assert.Equal(t, data.FormatText, format)
	require.Len(t, records, 1)
	assert.Equal(t, "zipped", records[0].Text)
}

func TestOpenRejectsCorruptGzip(t *testing.T) {
	path := writeFile(t, "train.jsonl.gz", "not gzip")

	_, err := data.Open(path, data.ReadOptions{})

	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid gzip data")
}

func TestOpenRejectsUnknownExtension(t *testing.T) {
	path := writeFile(t, "train.csv", "a,b\n")

	_, err := data.Open(path, data.ReadOptions{})

	require.Error(t, err)
	assert.Equal(t, path+`: unsupported file extension ".csv"; expected .txt (plain text) or .jsonl, .ndjson or .json (JSON Lines), optionally followed by .gz`, err.Error())
}

func TestOpenMissingFile(t *testing.T) {
	_, err := data.Open(filepath.Join(t.TempDir(), "absent.jsonl"), data.ReadOptions{})

	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in   string
		want data.Format
		err  string
	}{
		{in: "", want: data.FormatAuto},
		{in: "auto", want: data.FormatAuto},
		{in: "Chat", want: data.FormatChat},
		{in: " sharegpt ", want: data.FormatShareGPT},
		{in: "alpaca", want: data.FormatAlpaca},
		{in: "text", want: data.FormatText},
		{in: "csv", err: `unknown dataset format "csv"; expected text, alpaca, chat, sharegpt or auto`},
	}
	for _, tt := range tests {
		got, err := data.ParseFormat(tt.in)
		if tt.err != "" {
			assert.EqualError(t, err, tt.err, "input %q", tt.in)
			continue
		}
		assert.NoError(t, err, "input %q", tt.in)
		assert.Equal(t, tt.want, got, "input %q", tt.in)
	}
}
