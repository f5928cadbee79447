package data_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
)

func TestLoadEvalLinkToTrainFile(t *testing.T) {
	train := writeFile(t, "train.jsonl", jsonl(`{"text": "a b c"}`, `{"text": "d e f"}`))
	link := filepath.Join(filepath.Dir(train), "eval.jsonl")
	require.NoError(t, os.Symlink(train, link))
	_, err := data.Load(context.Background(), train, tinyTokenizer(t), data.Options{MaxSeqLen: 16, EvalPath: link, Logger: discardLogger()})
	assert.ErrorContains(t, err, "is the training file")
}

func TestReadPrettyPrintedArray(t *testing.T) {
	path := writeFile(t, "dump.json", "[\n  {\"text\": \"a\"}\n]\n")
	_, err := data.Load(context.Background(), path, tinyTokenizer(t), data.Options{MaxSeqLen: 16, Logger: discardLogger()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dump.json:1:")
	assert.Contains(t, err.Error(), "jq -c '.[]'")
}
