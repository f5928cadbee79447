package data_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/tokenizer"
)

// qwen3Tokenizer loads the Qwen3 tokenizer that scripts/fetch-tokenizer.sh caches. Without
// it the test skips, unless RINGTUNE_REQUIRE_QWEN3=1 makes the absence a failure.
func qwen3Tokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	cache := os.Getenv("RINGTUNE_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		require.NoError(t, err)
		cache = filepath.Join(home, ".cache", "ringtune")
	}
	dir := filepath.Join(cache, "qwen3-tokenizer")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		if os.Getenv("RINGTUNE_REQUIRE_QWEN3") == "1" {
			t.Fatalf("Qwen3 tokenizer not found in %s: run scripts/fetch-tokenizer.sh", dir)
		}
		t.Skipf("Qwen3 tokenizer not found in %s: run scripts/fetch-tokenizer.sh", dir)
	}
	tok, err := tokenizer.Load(dir)
	require.NoError(t, err)
	return tok
}

func TestQwen3PadEqualsEndOfText(t *testing.T) {
	tok := qwen3Tokenizer(t)
	endOfText, ok := tok.TokenID("<|endoftext|>")
	require.True(t, ok)
	imEnd, ok := tok.TokenID("<|im_end|>")
	require.True(t, ok)
	path := writeFile(t, "corpus.txt", "Hello world.\n\nA second, longer document about trains.\n")

	ds, err := data.Load(context.Background(), path, tok, data.Options{MaxSeqLen: 32, Packing: data.PackingOff, Logger: discardLogger()})
	require.NoError(t, err)
	batch, err := data.NewBatch(ds.Train, []int{0, 1})
	require.NoError(t, err)

	assert.Equal(t, endOfText, tok.Pad(), "Qwen3 pads with <|endoftext|>")
	assert.Equal(t, imEnd, tok.EOS())
	for k := range batch.Size {
		row := batch.Row(k)
		assert.Equal(t, endOfText, row.IDs[row.Length-1], "row %d: the document ends with <|endoftext|>", k)
		assert.Equal(t, endOfText, row.IDs[row.Length], "row %d: padding uses the same id", k)
		assert.Equal(t, endOfText, row.Targets[row.Length-2], "row %d: the model learns to end the document", k)
		for p := row.Length; p < batch.SeqLen; p++ {
			assert.Equal(t, int32(data.IgnoreIndex), row.Targets[p], "row %d: padding at %d takes no loss", k, p)
		}
	}
	examples := ds.Train.Examples()
	assert.Equal(t, len(examples[0].IDs)+len(examples[1].IDs), batch.Tokens, "the end-of-text tokens count as real tokens")
	assert.Equal(t, batch.Tokens-2, batch.TargetTokens)
}

func TestQwen3ChatLabelsAssistantTurns(t *testing.T) {
	tok := qwen3Tokenizer(t)
	imEnd, _ := tok.TokenID("<|im_end|>")
	path := writeFile(t, "chat.jsonl", jsonl(
		`{"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]}`,
	))

	ds, err := data.Load(context.Background(), path, tok, data.Options{MaxSeqLen: 128, Logger: discardLogger()})
	require.NoError(t, err)
	ex := ds.Train.Examples()[0]
	row := ds.Train.Row(0)

	var trained []int32
	for i, label := range ex.Labels {
		if label != data.IgnoreIndex {
			trained = append(trained, ex.IDs[i])
		}
	}
	assert.Equal(t, "<think>\n\n</think>\n\nParis.<|im_end|>", tok.Decode(trained), "only the answer and its <|im_end|> take loss")
	assert.Equal(t, imEnd, trained[len(trained)-1])
	assert.Equal(t, int32(data.IgnoreIndex), row.Targets[row.Length-1], "nothing is predicted after the conversation")
	assert.Equal(t, len(trained), ex.TargetTokens())
}
