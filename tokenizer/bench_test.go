package tokenizer

import (
	"testing"
)

// BenchmarkEncode encodes 1 MiB of mixed text (benchText) on one goroutine. "warm" keeps
// the word cache between iterations, as a long training run does; "cold" clears it before
// each iteration, so every word goes through the BPE merges once.
func BenchmarkEncode(b *testing.B) {
	tok := loadQwen3(b)
	text := benchText(1 << 20)
	tokens := len(tok.Encode(text))

	b.Run("warm", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			tok.Encode(text)
		}
		b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
	b.Run("cold", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			tok.bpe.clearCache()
			b.StartTimer()
			tok.Encode(text)
		}
		b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
}
