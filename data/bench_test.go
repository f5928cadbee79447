package data_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringtune/ringtune/data"
)

// BenchmarkLoadChat measures reading, tokenizing and building rows for 10,000
// conversations with the tiny test tokenizer. b.SetBytes makes the output MB/s of input.
func BenchmarkLoadChat(b *testing.B) {
	var sb strings.Builder
	for i := range 10_000 {
		fmt.Fprintf(&sb, `{"messages": [{"role": "user", "content": "Question %d: what comes after %d?"}, {"role": "assistant", "content": "%s %d."}]}`+"\n",
			i, i, strings.Repeat("It is ", 1+i%20), i+1)
	}
	path := filepath.Join(b.TempDir(), "chat.jsonl")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	tok := tinyTokenizer(b)
	b.SetBytes(int64(sb.Len()))

	for b.Loop() {
		if _, err := data.Load(context.Background(), path, tok, data.Options{MaxSeqLen: 256, Logger: discardLogger()}); err != nil {
			b.Fatal(err)
		}
	}
}
