package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func boolPtr(b bool) *bool    { return &b }
func strPtr(s string) *string { return &s }

func TestChatTemplateRounds(t *testing.T) {
	tok := loadTiny(t)
	msgs := []Message{
		{Role: RoleSystem, Content: "Be brief."},
		{Role: RoleUser, Content: "Hi"},
		{Role: RoleAssistant, Content: "<think>\nold thoughts\n</think>\n\nHello"},
		{Role: RoleUser, Content: "Again"},
		{Role: RoleAssistant, Content: "Sure", ReasoningContent: strPtr("\nplan\n")},
	}
	text, err := tok.ApplyChatTemplate(msgs, ChatOptions{})
	require.NoError(t, err)
	want := "<|im_start|>system\nBe brief.<|im_end|>\n" +
		"<|im_start|>user\nHi<|im_end|>\n" +
		"<|im_start|>assistant\nHello<|im_end|>\n" + // thinking of earlier rounds is dropped
		"<|im_start|>user\nAgain<|im_end|>\n" +
		"<|im_start|>assistant\n<think>\nplan\n</think>\n\nSure<|im_end|>\n"
	assert.Equal(t, want, text)
}

func TestChatTemplateEmptyThinkOnlyLastTurn(t *testing.T) {
	tok := loadTiny(t)
	msgs := []Message{
		{Role: RoleUser, Content: "Q"},
		{Role: RoleAssistant, Content: "first"},
		{Role: RoleAssistant, Content: "second"},
	}
	text, err := tok.ApplyChatTemplate(msgs, ChatOptions{})
	require.NoError(t, err)
	assert.Equal(t, "<|im_start|>user\nQ<|im_end|>\n"+
		"<|im_start|>assistant\nfirst<|im_end|>\n"+
		"<|im_start|>assistant\n<think>\n\n</think>\n\nsecond<|im_end|>\n", text)
}

func TestChatGenerationPrompt(t *testing.T) {
	tok := loadTiny(t)
	msgs := []Message{{Role: RoleUser, Content: "Q"}}
	cases := []struct {
		thinking *bool
		suffix   string
	}{
		{nil, "<|im_start|>assistant\n"},
		{boolPtr(true), "<|im_start|>assistant\n"},
		{boolPtr(false), "<|im_start|>assistant\n<think>\n\n</think>\n\n"},
	}
	for _, c := range cases {
		text, err := tok.ApplyChatTemplate(msgs, ChatOptions{AddGenerationPrompt: true, EnableThinking: c.thinking})
		require.NoError(t, err)
		assert.Equal(t, "<|im_start|>user\nQ<|im_end|>\n"+c.suffix, text)
	}
}

func TestChatToolMessages(t *testing.T) {
	tok := loadTiny(t)
	msgs := []Message{
		{Role: RoleUser, Content: "weather?"},
		{Role: RoleAssistant, Content: "calling"},
		{Role: RoleTool, Content: "sunny"},
		{Role: RoleTool, Content: "warm"},
		{Role: RoleAssistant, Content: "It is sunny."},
	}
	text, err := tok.ApplyChatTemplate(msgs, ChatOptions{})
	require.NoError(t, err)
	assert.Equal(t, "<|im_start|>user\nweather?<|im_end|>\n"+
		"<|im_start|>assistant\ncalling<|im_end|>\n"+
		"<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwarm\n</tool_response><|im_end|>\n"+
		"<|im_start|>assistant\n<think>\n\n</think>\n\nIt is sunny.<|im_end|>\n", text)
}

func TestEncodeChatLabels(t *testing.T) {
	tok := loadQwen3(t)
	msgs := []Message{
		{Role: RoleSystem, Content: "S"},
		{Role: RoleUser, Content: "Hi"},
		{Role: RoleAssistant, Content: "Hello there"},
		{Role: RoleUser, Content: "Bye"},
		{Role: RoleAssistant, Content: "Goodbye"},
	}
	ids, labels, err := tok.EncodeChat(msgs, ChatOptions{})
	require.NoError(t, err)
	require.Len(t, labels, len(ids))

	// Rebuild the labelled text: it must be exactly the two assistant answers, each with
	// its closing <|im_end|>, and the last one with its empty thinking block.
	var labelled []string
	var run []int32
	for i, l := range labels {
		if l != IgnoreIndex {
			assert.Equal(t, ids[i], l, "a label is the token itself")
			run = append(run, l)
			continue
		}
		if len(run) > 0 {
			labelled = append(labelled, tok.Decode(run))
			run = nil
		}
	}
	require.Empty(t, run, "the final newline after <|im_end|> carries no label")
	assert.Equal(t, []string{"Hello there<|im_end|>", "<think>\n\n</think>\n\nGoodbye<|im_end|>"}, labelled)
}

// TestEncodeChatPadEqualsEndOfText checks that an <|endoftext|> inside an assistant answer
// keeps its label: Qwen's pad token has the same id, and masking by id would drop it.
func TestEncodeChatPadEqualsEndOfText(t *testing.T) {
	tok := loadQwen3(t)
	require.Equal(t, tok.Pad(), tok.EndOfText())
	msgs := []Message{{Role: RoleUser, Content: "end?"}, {Role: RoleAssistant, Content: "done<|endoftext|>"}}
	ids, labels, err := tok.EncodeChat(msgs, ChatOptions{})
	require.NoError(t, err)
	found := false
	for i, id := range ids {
		if id == tok.Pad() {
			found = true
			assert.Equal(t, id, labels[i])
		}
	}
	assert.True(t, found)
	assert.Equal(t, tok.EOS(), labels[len(labels)-2], "<|im_end|> closing the turn is labelled")
}

func TestEncodeChatTrainOnAll(t *testing.T) {
	tok := loadTiny(t)
	msgs := []Message{{Role: RoleUser, Content: "a"}, {Role: RoleAssistant, Content: "b"}}
	ids, labels, err := tok.EncodeChat(msgs, ChatOptions{TrainOnAll: true})
	require.NoError(t, err)
	assert.Equal(t, ids, labels)
}

func TestEncodeChatMatchesEncode(t *testing.T) {
	tok := loadQwen3(t)
	msgs := []Message{
		{Role: RoleUser, Content: "e\u0301t\u00e9 ≯ >\u0338"},
		{Role: RoleAssistant, Content: "\n\n  leading newlines and NFD e\u0301"},
	}
	text, err := tok.ApplyChatTemplate(msgs, ChatOptions{})
	require.NoError(t, err)
	ids, labels, err := tok.EncodeChat(msgs, ChatOptions{})
	require.NoError(t, err)
	assert.Equal(t, tok.Encode(text), ids)
	assert.Contains(t, labels, tok.EOS())
}

func TestChatErrors(t *testing.T) {
	tok := loadTiny(t)
	_, err := tok.ApplyChatTemplate([]Message{{Role: RoleUser, Content: "a"}, {Role: "bot", Content: "b"}}, ChatOptions{})
	assert.ErrorContains(t, err, `messages[1].role: unknown role "bot"`)
	_, err = tok.ApplyChatTemplate(nil, ChatOptions{})
	assert.ErrorContains(t, err, "no messages")

	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(tinyDir, TokenizerFile))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, TokenizerFile), raw, 0o644))
	other, err := Load(dir)
	require.NoError(t, err)
	_, _, err = other.EncodeChat([]Message{{Role: RoleUser, Content: "a"}}, ChatOptions{})
	assert.ErrorContains(t, err, "tokenizer_config.json not found")

	cfg := `{"eos_token": "<|im_end|>", "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, TokenizerConfigFile), []byte(cfg), 0o644))
	other, err = Load(dir)
	require.NoError(t, err)
	_, _, err = other.EncodeChat([]Message{{Role: RoleUser, Content: "a"}}, ChatOptions{})
	assert.ErrorContains(t, err, "not Qwen3's ChatML template")
	assert.True(t, strings.Contains(err.Error(), TokenizerConfigFile))
}
