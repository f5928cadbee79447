package tokenizer

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEncodeKnownIDs(t *testing.T) {
	tok := loadQwen3(t)
	cases := []struct {
		text string
		ids  []int32
	}{
		{"Hello, my dog is cute", []int32{9707, 11, 847, 5562, 374, 18838}},
		{"<|im_start|>user\nhi<|im_end|>", []int32{151644, 872, 198, 6023, 151645}},
		{"\ufeffusing System;", []int32{4028, 739, 26}},
		{"", []int32{}},
	}
	for _, c := range cases {
		assert.Equal(t, c.ids, tok.Encode(c.text), "Encode(%q)", c.text)
	}
}

func TestSpecialTokenIDs(t *testing.T) {
	tok := loadQwen3(t)
	assert.Equal(t, int32(151645), tok.EOS(), "eos_token <|im_end|>")
	assert.Equal(t, int32(151643), tok.Pad(), "pad_token <|endoftext|>")
	assert.Equal(t, int32(151643), tok.EndOfText())
	assert.Equal(t, 151669, tok.VocabSize())
	assert.True(t, tok.IsSpecial(151644))
	think, ok := tok.TokenID("<think>")
	require.True(t, ok)
	assert.False(t, tok.IsSpecial(think), "<think> is an added token but not special")
}

func TestDecodeRoundTrip(t *testing.T) {
	tok := loadTiny(t)
	texts := []string{
		"plain ASCII text, with punctuation!",
		"多语言文本 and emoji 👩‍👩‍👧 with\r\n\tcontrol whitespace   ",
		"<|im_start|>assistant\n<think>\n\n</think>\n\nok<|im_end|>",
		"\ufeff\u0085\u00a0\u2028",
		"invalid \xff\xfe bytes \xe2\x82",
	}
	for _, text := range texts {
		ids := tok.Encode(text)
		assert.Equal(t, []byte(text), tok.DecodeBytes(ids), "DecodeBytes(Encode(%q))", text)
		if utf8.ValidString(text) {
			assert.Equal(t, text, tok.Decode(ids), "Decode(Encode(%q))", text)
		}
	}
}

func TestDecodeSkipSpecial(t *testing.T) {
	tok := loadTiny(t)
	ids := tok.Encode("<|im_start|>user\nhi<think>x</think><|im_end|>")
	assert.Equal(t, "user\nhi<think>x</think>", tok.DecodeSkipSpecial(ids), "<think> is not special and stays")
}

func TestDecodeUnknownIDs(t *testing.T) {
	tok := loadTiny(t)
	hi := tok.Encode("hi")
	ids := append([]int32{-1, 1 << 30, int32(tok.VocabSize())}, hi...)
	assert.Equal(t, "hi", tok.Decode(ids), "unknown ids are skipped")
	assert.Equal(t, "", tok.Piece(-5))
}

// TestLossyUTF8 checks the replacement of invalid sequences against what Python's
// bytes.decode("utf-8", errors="replace") returns for the same bytes.
func TestLossyUTF8(t *testing.T) {
	cases := []struct{ in, want string }{
		{"\xe2\x82", "\ufffd"},                           // truncated 3-byte sequence: one U+FFFD
		{"\xe2\x82a", "\ufffda"},                         // truncated, then ASCII
		{"\xff\xfe", "\ufffd\ufffd"},                     // two invalid bytes
		{"\xf0\x9f\x98", "\ufffd"},                       // truncated emoji
		{"\xed\xa0\x80", "\ufffd\ufffd\ufffd"},           // surrogate: ED A0 is not a valid prefix
		{"\xe0\x80\x80", "\ufffd\ufffd\ufffd"},           // overlong
		{"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"}, // above U+10FFFF
		{"ok\xc3", "ok\ufffd"},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, lossyUTF8(c.in), "lossyUTF8(%q)", c.in)
	}
}

func TestPieceSplitsCharacter(t *testing.T) {
	tok := loadTiny(t)
	ids := tok.Encode("語")
	require.Greater(t, len(ids), 1, "the tiny vocabulary spells 語 in several byte tokens")
	assert.Equal(t, "\ufffd", tok.Piece(ids[0]))
	assert.Equal(t, "語", tok.Decode(ids))
}

func TestMergeLargeMatchesSmall(t *testing.T) {
	tok := loadQwen3(t)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "e", "th", "in", "er", "ing", " ", "語", "😀", "\u0301", "0", "_"}
	for range 2000 {
		var b strings.Builder
		for n := rng.IntN(30) + 1; n > 0; n-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		word := b.String()
		small := tok.bpe.mergeSmall(nil, word[:min(len(word), 32)])
		large := tok.bpe.mergeLarge(nil, word[:min(len(word), 32)])
		require.Equal(t, small, large, "word %q", word)
	}
}

func TestEncodeLongWord(t *testing.T) {
	tok := loadQwen3(t)
	word := strings.Repeat("abcdefghij", 100_000) // one megabyte without a split point
	ids := tok.Encode(word)
	assert.Equal(t, word, tok.Decode(ids))
	assert.Less(t, len(ids), len(word)/2)
}

func TestNFC(t *testing.T) {
	tok := loadQwen3(t)
	assert.Equal(t, tok.Encode("caf\u00e9"), tok.Encode("cafe\u0301"), "NFD input encodes as its NFC form")
	assert.Equal(t, "caf\u00e9", tok.Decode(tok.Encode("cafe\u0301")))
}

func TestNFCOffsets(t *testing.T) {
	tok := loadQwen3(t)
	text := "ab cafe\u0301 x\u0301y"
	var starts []int
	ids := tok.appendEncoded(nil, text, &starts)
	require.Len(t, starts, len(ids))
	for i := 1; i < len(starts); i++ {
		assert.LessOrEqual(t, starts[i-1], starts[i], "offsets are ordered")
	}
	for _, s := range starts {
		assert.True(t, utf8.RuneStart(text[s]), "offset %d starts a character", s)
	}
}

func TestAddedTokenLongestMatch(t *testing.T) {
	tok := loadTiny(t)
	start, _ := tok.TokenID("<tool_call>")
	end, _ := tok.TokenID("</tool_call>")
	ids := tok.Encode("<tool_call></tool_call><tool_call")
	require.GreaterOrEqual(t, len(ids), 3)
	assert.Equal(t, []int32{start, end}, ids[:2])
	assert.NotContains(t, ids[2:], start, "an incomplete added token is ordinary text")
}

func TestAddedTokenFlags(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(tinyDir, TokenizerFile))
	require.NoError(t, err)
	// Make <|box_start|> strip whitespace on both sides and <|box_end|> a single word.
	text := strings.Replace(string(raw), `"content": "<|box_start|>",
   "single_word": false,
   "lstrip": false,
   "rstrip": false`, `"content": "<|box_start|>",
   "single_word": false,
   "lstrip": true,
   "rstrip": true`, 1)
	text = strings.Replace(text, `"content": "<|box_end|>",
   "single_word": false`, `"content": "<|box_end|>",
   "single_word": true`, 1)
	require.NotEqual(t, string(raw), text, "the tiny tokenizer.json layout changed")
	require.NoError(t, os.WriteFile(filepath.Join(dir, TokenizerFile), []byte(text), 0o644))
	tok, err := Load(dir)
	require.NoError(t, err)

	box, _ := tok.TokenID("<|box_start|>")
	boxEnd, _ := tok.TokenID("<|box_end|>")
	a, b := tok.Encode("a")[0], tok.Encode("b")[0]
	assert.Equal(t, []int32{a, box, b}, tok.Encode("a  <|box_start|> \n b"), "lstrip and rstrip take the whitespace")
	assert.NotContains(t, tok.Encode("a<|box_end|>"), boxEnd, "single_word needs a word boundary")
	assert.Contains(t, tok.Encode("a <|box_end|> b"), boxEnd)
}

func FuzzEncodeDecode(f *testing.F) {
	for _, s := range []string{"", "hello world", "<|im_start|>x<|im_end|>", "\xff", "e\u0301", "it's  \n\n 12"} {
		f.Add(s)
	}
	tok := loadTiny(f)
	f.Fuzz(func(t *testing.T, text string) {
		ids := tok.Encode(text)
		got := tok.DecodeBytes(ids)
		if utf8.ValidString(text) {
			// NFC may change valid text, but decoding must give the NFC form back.
			assert.Equal(t, tok.Encode(string(got)), ids, "encode(decode(ids)) is stable")
			return
		}
		_ = tok.Decode(ids)
	})
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xe6, 0x03, 0, 0})
	tok := loadTiny(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		ids := make([]int32, len(raw)/4)
		for i := range ids {
			ids[i] = int32(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		text := tok.Decode(ids)
		assert.True(t, utf8.ValidString(text))
		for _, id := range ids {
			_ = tok.Piece(id)
		}
	})
}
