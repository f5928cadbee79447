package data_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/tokenizer"
)

// tinyTokenizerWithout loads a copy of the tiny tokenizer without <|endoftext|> and
// without a pad token, with config overriding entries of tokenizer_config.json.
func tinyTokenizerWithout(t *testing.T, config map[string]any) *tokenizer.Tokenizer {
	t.Helper()
	src := filepath.Join("..", "tokenizer", "testdata", "tiny")
	dir := t.TempDir()

	var tok map[string]any
	raw, err := os.ReadFile(filepath.Join(src, "tokenizer.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &tok))
	var addedTokens []any
	for _, added := range tok["added_tokens"].([]any) {
		if added.(map[string]any)["content"] != "<|endoftext|>" {
			addedTokens = append(addedTokens, added)
		}
	}
	tok["added_tokens"] = addedTokens
	raw, err = json.Marshal(tok)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), raw, 0o600))

	var original map[string]any
	raw, err = os.ReadFile(filepath.Join(src, "tokenizer_config.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &original))
	original["pad_token"] = nil
	for key, value := range config {
		original[key] = value
	}
	if decoder, ok := original["added_tokens_decoder"].(map[string]any); ok {
		for id, entry := range decoder {
			if entry.(map[string]any)["content"] == "<|endoftext|>" {
				delete(decoder, id)
			}
		}
	}
	raw, err = json.Marshal(original)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), raw, 0o600))

	loaded, err := tokenizer.Load(dir)
	require.NoError(t, err)
	return loaded
}

func TestTokenizeFallsBackToEOS(t *testing.T) {
	tok := tinyTokenizerWithout(t, nil)
	_, hasEndOfText := tok.TokenID("<|endoftext|>")
	require.False(t, hasEndOfText)

	ex, err := data.Tokenize(tok, textRecord("hello"), data.TokenizeOptions{})
	require.NoError(t, err)

	assert.Equal(t, tok.EOS(), ex.IDs[len(ex.IDs)-1], "without <|endoftext|>, documents end with EOS")
}

func TestLoadRejectsTokenizerWithoutEndToken(t *testing.T) {
	noEnd := tinyTokenizerWithout(t, map[string]any{"eos_token": nil, "pad_token": "<|im_start|>"})
	noEndNoPad := tinyTokenizerWithout(t, map[string]any{"eos_token": nil})
	require.Equal(t, int32(-1), noEnd.EOS())
	require.Equal(t, int32(-1), noEndNoPad.Pad())
	text := writeFile(t, "corpus.txt", "text\n")
	chat := writeFile(t, "chat.jsonl", jsonl(chatLine("q", "a")))

	_, tokenizeErr := data.Tokenize(noEnd, textRecord("hello"), data.TokenizeOptions{})
	_, textErr := data.Load(context.Background(), text, noEnd, data.Options{MaxSeqLen: 8, Logger: discardLogger()})
	chatData, chatErr := data.Load(context.Background(), chat, noEnd, data.Options{MaxSeqLen: 64, Logger: discardLogger()})
	_, padErr := data.Load(context.Background(), chat, noEndNoPad, data.Options{MaxSeqLen: 64, Logger: discardLogger()})

	assert.EqualError(t, tokenizeErr, "the tokenizer has neither <|endoftext|> nor an EOS token, so plain text documents cannot be ended; use a tokenizer that defines one")
	assert.EqualError(t, textErr, text+": the tokenizer has neither <|endoftext|> nor an EOS token, so plain text documents cannot be ended; use a tokenizer that defines one")
	assert.NoError(t, chatErr, "conversations need no end-of-text token")
	assert.Equal(t, 1, chatData.Train.Len())
	assert.EqualError(t, padErr, "the tokenizer has neither a pad token nor an EOS token to fill rows with; use a tokenizer that defines one")
}
