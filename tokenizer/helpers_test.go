package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// tinyDir is the committed 1000-token test tokenizer built by testdata/tiny/make_tiny.py.
const tinyDir = "testdata/tiny"

func loadTiny(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := Load(tinyDir)
	require.NoError(t, err)
	return tok
}

// qwen3Dir returns the cached Qwen3 tokenizer directory that scripts/fetch-tokenizer.sh
// fills. Without it the test skips, unless RINGTUNE_REQUIRE_QWEN3=1 (set by `make test`)
// makes the absence a failure.
func qwen3Dir(t testing.TB) string {
	t.Helper()
	cache := os.Getenv("RINGTUNE_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		require.NoError(t, err)
		cache = filepath.Join(home, ".cache", "ringtune")
	}
	dir := filepath.Join(cache, "qwen3-tokenizer")
	if _, err := os.Stat(filepath.Join(dir, TokenizerFile)); err != nil {
		if os.Getenv("RINGTUNE_REQUIRE_QWEN3") == "1" {
			t.Fatalf("Qwen3 tokenizer not found in %s: run scripts/fetch-tokenizer.sh", dir)
		}
		t.Skipf("Qwen3 tokenizer not found in %s: run scripts/fetch-tokenizer.sh", dir)
	}
	return dir
}

var (
	qwen3Mu     sync.Mutex
	qwen3Cached *Tokenizer
)

// loadQwen3 loads the Qwen3 tokenizer once per test binary; parsing takes about 0.5 s.
func loadQwen3(t testing.TB) *Tokenizer {
	t.Helper()
	dir := qwen3Dir(t)
	qwen3Mu.Lock()
	defer qwen3Mu.Unlock()
	if qwen3Cached == nil {
		tok, err := Load(dir)
		require.NoError(t, err)
		qwen3Cached = tok
	}
	return qwen3Cached
}

func jsonString(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}
