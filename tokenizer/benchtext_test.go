package tokenizer

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// benchParagraphs are the fragments that benchText draws from: English prose, Chinese,
// code, emoji and whitespace runs.
var benchParagraphs = [][]string{
	{
		"The quick brown fox jumps over the lazy dog. ",
		"Distributed training splits every batch across workers and all-reduces the gradients after each step. ",
		"It's not what you think; they'll see that we've done the work, and I'd say it's worth it. ",
		"In 1969, Apollo 11 landed on the Moon, and 600 million people watched it on television. ",
		"Tokenizers turn text into integers: a byte-level BPE never meets an unknown character. ",
		"\"Why?\" she asked. \"Because the learning rate was 3e-4, not 3e-3!\" ",
	},
	{
		"今天天气很好，我们去公园散步吧。",
		"分布式训练把每个批次分给多个工作节点，然后对梯度做全规约。",
		"通义千问是一个大型语言模型，支持中文、英文和多种其他语言。",
		"这句话里有数字 2024 和英文 words 混在一起。",
	},
	{
		"func (t *Tokenizer) Encode(text string) []int32 {\n\tids := make([]int32, 0, len(text)/3)\n\treturn t.appendEncoded(ids, text, nil)\n}\n\n",
		"def train(model, loader):\n    for step, batch in enumerate(loader):\n        loss = model(batch).loss\n        loss.backward()\n\n",
		"for (int i = 0; i < n; i++) {\n    sum += a[i] * b[i];\n}\n",
		"{\"lr\": 0.0003, \"betas\": [0.9, 0.95], \"warmup_steps\": 2000, \"name\": \"qwen3-0.6b\"}\n",
	},
	{
		"😀 ", "👍🏽", "👩‍💻 ", "🇯🇵🇺🇸 ", "❤️ ", "✨✨ ", "🏳️‍🌈 ",
	},
	{
		"\n", "\n\n", "    ", "\t\t", "  \n", "\r\n", "        \n\n",
	},
}

var benchSyllables = []string{
	"ka", "to", "ri", "an", "el", "mon", "ter", "is", "ga", "lu", "pre", "con", "di", "ver", "sa", "tion", "ing", "ble", "qu", "ox",
}

// writeBenchWords writes a sentence of made-up words and numbers, so that the text has
// many distinct words and the BPE caches do not see only repeats.
func writeBenchWords(b *strings.Builder, rng *rand.Rand) {
	words := 5 + rng.IntN(11)
	for i := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		if rng.IntN(8) == 0 {
			b.WriteString(strconv.Itoa(rng.IntN(100000)))
			continue
		}
		var word strings.Builder
		for range 1 + rng.IntN(4) {
			word.WriteString(benchSyllables[rng.IntN(len(benchSyllables))])
		}
		w := word.String()
		if i == 0 || rng.IntN(10) == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		}
		b.WriteString(w)
	}
	b.WriteString(". ")
}

// writeBenchHan writes a run of CJK ideographs from the frequently used block start.
func writeBenchHan(b *strings.Builder, rng *rand.Rand) {
	for range 8 + rng.IntN(24) {
		b.WriteRune(0x4e00 + rune(rng.IntN(0x1800)))
	}
	b.WriteString("。")
}

// benchText returns a deterministic mixed text of at most size bytes, cut at a UTF-8
// character boundary. BenchmarkEncode encodes it, and TestWriteBenchText writes it for
// bench_encode.js, so that Go and the JavaScript reference measure the same input.
func benchText(size int) string {
	rng := rand.New(rand.NewPCG(2024, 6))
	var b strings.Builder
	b.Grow(size + 512)
	for b.Len() < size {
		switch choice := rng.IntN(len(benchParagraphs) + 2); choice {
		case len(benchParagraphs):
			writeBenchWords(&b, rng)
		case len(benchParagraphs) + 1:
			writeBenchHan(&b, rng)
		default:
			group := benchParagraphs[choice]
			for range 1 + rng.IntN(4) {
				b.WriteString(group[rng.IntN(len(group))])
			}
		}
	}
	text := b.String()
	if len(text) <= size {
		return text
	}
	end := size
	for end > 0 && !utf8.RuneStart(text[end]) {
		end--
	}
	return text[:end]
}

func TestBenchTextDeterministic(t *testing.T) {
	const size = 64 << 10
	text := benchText(size)
	if again := benchText(size); again != text {
		t.Fatal("benchText returned different texts for the same size")
	}
	if !utf8.ValidString(text) {
		t.Error("benchText returned invalid UTF-8")
	}
	if len(text) > size || len(text) < size-utf8.UTFMax {
		t.Errorf("len(benchText(%d)) = %d, want within %d bytes below the size", size, len(text), utf8.UTFMax)
	}
	for _, want := range []string{"fox", "分布式", "func", "👩‍💻", "\t\t"} {
		if !strings.Contains(text, want) {
			t.Errorf("benchText lacks %q", want)
		}
	}
}

// TestWriteBenchText writes benchText(1 MiB) to the path in RINGTUNE_WRITE_BENCH_TEXT,
// for tokenizer/testdata/reference/bench_encode.js.
func TestWriteBenchText(t *testing.T) {
	path := os.Getenv("RINGTUNE_WRITE_BENCH_TEXT")
	if path == "" {
		t.Skip("set RINGTUNE_WRITE_BENCH_TEXT=PATH to write the benchmark text to PATH")
	}
	text := benchText(1 << 20)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatalf("writing the benchmark text: %v", err)
	}
	t.Logf("wrote %d bytes to %s", len(text), path)
}
