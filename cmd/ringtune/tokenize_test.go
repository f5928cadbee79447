package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tinyTokenizer is the committed 1000-token test tokenizer with Qwen3's pipeline and chat
// template.
const tinyTokenizer = "../../tokenizer/testdata/tiny"

// tokenizeCLI runs `ringtune tokenize` with stdin and returns stdout, stderr and the error.
func tokenizeCLI(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(ringtuneBin, append([]string{"tokenize", "--tokenizer", tinyTokenizer}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func decodeLines(t *testing.T, stdout string) []map[string]json.RawMessage {
	t.Helper()
	var rows []map[string]json.RawMessage
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var row map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(sc.Bytes(), &row), sc.Text())
		rows = append(rows, row)
	}
	return rows
}

func TestTokenizeText(t *testing.T) {
	stdout, stderr, err := tokenizeCLI(t, "{\"text\": \"hello <|im_end|>\"}\n\n{\"text\": \"\"}\n")
	require.NoError(t, err, stderr)
	rows := decodeLines(t, stdout)
	require.Len(t, rows, 2, "blank lines are skipped")

	var ids []int32
	var tokens []string
	require.NoError(t, json.Unmarshal(rows[0]["ids"], &ids))
	require.NoError(t, json.Unmarshal(rows[0]["tokens"], &tokens))
	assert.Len(t, tokens, len(ids))
	assert.Equal(t, "hello <|im_end|>", strings.Join(tokens, ""))
	assert.Equal(t, "<|im_end|>", tokens[len(tokens)-1])
	assert.NotContains(t, rows[0], "labels", "plain text has no labels")
	assert.JSONEq(t, `[]`, string(rows[1]["ids"]))
}

func TestTokenizeChat(t *testing.T) {
	in := `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}` + "\n" +
		`{"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": true, "enable_thinking": false}` + "\n"
	stdout, stderr, err := tokenizeCLI(t, in, "--chat")
	require.NoError(t, err, stderr)
	rows := decodeLines(t, stdout)
	require.Len(t, rows, 2)

	var tokens []string
	var labels []int32
	require.NoError(t, json.Unmarshal(rows[0]["tokens"], &tokens))
	require.NoError(t, json.Unmarshal(rows[0]["labels"], &labels))
	require.Len(t, labels, len(tokens))
	var trained strings.Builder
	for i, l := range labels {
		if l != -100 {
			trained.WriteString(tokens[i])
		}
	}
	assert.Equal(t, "<think>\n\n</think>\n\nyo<|im_end|>", trained.String())

	require.NoError(t, json.Unmarshal(rows[1]["tokens"], &tokens))
	assert.True(t, strings.HasSuffix(strings.Join(tokens, ""), "<|im_start|>assistant\n<think>\n\n</think>\n\n"))
}

func TestTokenizeByteOrderMark(t *testing.T) {
	stdout, stderr, err := tokenizeCLI(t, "\ufeff{\"text\": \"hi\"}\n")
	require.NoError(t, err, stderr)
	assert.Len(t, decodeLines(t, stdout), 1)
}

func TestTokenizeInputFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(`{"text": "a"}`+"\n"), 0o644))
	cmd := exec.Command(ringtuneBin, "tokenize", "--tokenizer", tinyTokenizer, "--input", path)
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.Len(t, decodeLines(t, string(out)), 1)
}

func TestTokenizeBadInput(t *testing.T) {
	cases := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"malformed JSON", "{\"text\": \"a\"}\n{\"text\": \n", nil, "stdin:2: invalid JSON"},
		{"missing text", `{"body": "a"}`, nil, `stdin:1: field "text" is missing`},
		{"messages without chat", `{"messages": []}`, nil, "pass --chat"},
		{"wrong type", `{"text": 5}`, nil, `stdin:1: field "text": expected a string, found 5`},
		{"array line", `[1, 2]`, nil, "stdin:1: invalid JSON: expected one object per line"},
		{"keys are case-sensitive", `{"TEXT": "a"}`, nil, `field "text" is missing`},
		{"content type", `{"messages": [{"role": "user", "content": 5}]}`, []string{"--chat"}, `field "messages[0].content": expected a string, found 5`},
		{"missing role", `{"messages": [{"content": "x"}]}`, []string{"--chat"}, `field "messages[0].role" is missing`},
		{"messages object", `{"messages": {"role": "user"}}`, []string{"--chat"}, `field "messages": expected a list`},
		{"tool calls", `{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]}]}`, []string{"--chat"}, `field "messages[0].tool_calls": tool calls are not supported`},
		{"tools", `{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}`, []string{"--chat"}, `field "tools": tool definitions are not supported`},
		{"thinking type", `{"messages": [{"role": "user", "content": "x"}], "enable_thinking": "no"}`, []string{"--chat"}, `field "enable_thinking": expected true, false or null`},
		{"non-UTF-8", "{\"text\": \"\xff\"}", nil, "stdin:1: line is not valid UTF-8"},
		{"missing messages", `{"text": "a"}`, []string{"--chat"}, `stdin:1: field "messages" is missing`},
		{"unknown role", `{"messages": [{"role": "bot", "content": "x"}]}`, []string{"--chat"}, `messages[0].role: unknown role "bot"`},
		{"argument", "", []string{"file.jsonl"}, `unexpected argument "file.jsonl"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := tokenizeCLI(t, c.stdin, c.args...)
			require.Error(t, err)
			assert.Contains(t, stderr, c.want)
		})
	}

	cmd := exec.Command(ringtuneBin, "tokenize", "--tokenizer", t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.Error(t, cmd.Run())
	assert.Contains(t, stderr.String(), "tokenizer.json not found")
}
