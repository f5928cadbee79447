package data_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/tokenizer"
)

func textRecord(text string) data.Record {
	return data.Record{Pos: data.Position{File: "train.jsonl", Line: 4}, Format: data.FormatText, Text: text}
}

func chatRecord(msgs ...tokenizer.Message) data.Record {
	return data.Record{Pos: data.Position{File: "train.jsonl", Line: 9}, Format: data.FormatChat, Messages: msgs}
}

func TestTokenizeTextEndsWithEndOfText(t *testing.T) {
	tok := tinyTokenizer(t)
	endOfText, ok := tok.TokenID("<|endoftext|>")
	require.True(t, ok)

	ex, err := data.Tokenize(tok, textRecord("The cat sat on the mat."), data.TokenizeOptions{})
	require.NoError(t, err)

	want := append(tok.Encode("The cat sat on the mat."), endOfText)
	assert.Equal(t, want, ex.IDs)
	assert.Equal(t, want, ex.Labels, "every token of plain text takes loss")
	assert.Equal(t, len(want), ex.OriginalLen)
	assert.False(t, ex.Truncated())
	assert.Equal(t, int32(data.IgnoreIndex), ex.NextLabel)
	assert.Equal(t, len(want)-1, ex.TargetTokens(), "the first token is predicted by nothing")
	assert.Equal(t, append(want[1:], data.IgnoreIndex), ex.Targets())
	assert.Equal(t, data.Position{File: "train.jsonl", Line: 4}, ex.Pos)
}

func TestTokenizeChatMatchesTemplate(t *testing.T) {
	tok := tinyTokenizer(t)
	msgs := []tokenizer.Message{msg("system", "Be brief."), msg("user", "What is 2+3?"), msg("assistant", "5")}
	wantIDs, wantLabels, err := tok.EncodeChat(msgs, tokenizer.ChatOptions{})
	require.NoError(t, err)
	imEnd, ok := tok.TokenID("<|im_end|>")
	require.True(t, ok)

	ex, err := data.Tokenize(tok, chatRecord(msgs...), data.TokenizeOptions{})
	require.NoError(t, err)

	assert.Equal(t, wantIDs, ex.IDs)
	assert.Equal(t, wantLabels, ex.Labels)
	assert.Contains(t, ex.Labels, int32(data.IgnoreIndex), "the prompt takes no loss")
	assert.Contains(t, ex.Labels, imEnd, "the <|im_end|> closing the answer takes loss")
	assert.NotContains(t, ex.IDs, tok.Pad(), "conversations do not end with <|endoftext|>")
}

func TestTokenizeChatTrainOnAll(t *testing.T) {
	tok := tinyTokenizer(t)

	ex, err := data.Tokenize(tok, chatRecord(msg("user", "hi"), msg("assistant", "hello")), data.TokenizeOptions{TrainOnAll: true})
	require.NoError(t, err)

	assert.Equal(t, ex.IDs, ex.Labels)
}

func TestTokenizeChatReasoning(t *testing.T) {
	tok := tinyTokenizer(t)
	reasoning := "add them"
	msgs := []tokenizer.Message{msg("user", "2+3?"), {Role: "assistant", Content: "5", ReasoningContent: &reasoning}}
	disable := false
	wantIDs, _, err := tok.EncodeChat(msgs, tokenizer.ChatOptions{EnableThinking: &disable})
	require.NoError(t, err)

	ex, err := data.Tokenize(tok, chatRecord(msgs...), data.TokenizeOptions{EnableThinking: &disable})
	require.NoError(t, err)

	assert.Equal(t, wantIDs, ex.IDs)
	assert.Contains(t, tok.Decode(ex.IDs), "<think>\nadd them\n</think>")
}

func TestTokenizeTruncates(t *testing.T) {
	tok := tinyTokenizer(t)
	full, err := data.Tokenize(tok, textRecord("one two three four five six seven eight nine ten"), data.TokenizeOptions{})
	require.NoError(t, err)
	require.Greater(t, len(full.IDs), 6)

	ex, err := data.Tokenize(tok, textRecord("one two three four five six seven eight nine ten"), data.TokenizeOptions{MaxSeqLen: 6})
	require.NoError(t, err)

	assert.Equal(t, full.IDs[:6], ex.IDs)
	assert.Equal(t, full.Labels[:6], ex.Labels)
	assert.True(t, ex.Truncated())
	assert.Equal(t, len(full.IDs), ex.OriginalLen)
	assert.Equal(t, full.Labels[6], ex.NextLabel, "the first removed token stays the last target")
	assert.Equal(t, full.Targets()[:6], ex.Targets())
	assert.NotEqual(t, tok.Pad(), ex.IDs[5], "a truncated document gets no end-of-text token")
	assert.Equal(t, 6, cap(ex.IDs), "the removed tail is not kept in memory")
}

func TestTokenizeRejectsExamplesWithoutTargets(t *testing.T) {
	tok := tinyTokenizer(t)
	longPrompt := msg("user", "a long question that fills the whole row with prompt tokens and more")

	_, userOnly := data.Tokenize(tok, chatRecord(msg("user", "hello")), data.TokenizeOptions{})
	_, truncatedAway := data.Tokenize(tok, chatRecord(longPrompt, msg("assistant", "ok")), data.TokenizeOptions{MaxSeqLen: 8})
	full, err := data.Tokenize(tok, chatRecord(longPrompt, msg("assistant", "ok")), data.TokenizeOptions{})
	require.NoError(t, err)

	var inputErr *data.InputError
	require.ErrorAs(t, userOnly, &inputErr)
	assert.Equal(t, data.KindNoTargets, inputErr.Kind)
	assert.Equal(t, "train.jsonl:9: the example has no trainable tokens: no assistant turn carries a label; add an assistant reply or train on all tokens", userOnly.Error())
	require.ErrorAs(t, truncatedAway, &inputErr)
	assert.Equal(t, data.KindNoTargets, inputErr.Kind)
	assert.Equal(t, "train.jsonl:9: no trainable tokens remain after truncating the example from "+strconv.Itoa(len(full.IDs))+" to 8 tokens; raise the maximum sequence length", truncatedAway.Error())
}

func TestTokenizeReportsTemplateErrors(t *testing.T) {
	tok := tinyTokenizer(t)

	_, err := data.Tokenize(tok, chatRecord(msg("user", "q"), msg("bot", "a")), data.TokenizeOptions{})

	var inputErr *data.InputError
	require.ErrorAs(t, err, &inputErr)
	assert.Equal(t, data.KindChatTemplate, inputErr.Kind)
	assert.Equal(t, 9, inputErr.Line)
	assert.Contains(t, err.Error(), `messages[1].role: unknown role "bot"`)
}

func TestTokenizeWhitespaceDocument(t *testing.T) {
	tok := tinyTokenizer(t)

	ex, err := data.Tokenize(tok, textRecord("   "), data.TokenizeOptions{})
	require.NoError(t, err)

	assert.Equal(t, tok.Pad(), ex.IDs[len(ex.IDs)-1])
	assert.Greater(t, len(ex.IDs), 1)
}
