package tokenizer

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// IgnoreIndex is the label of a token that carries no loss, as in PyTorch's cross_entropy.
const IgnoreIndex = -100

// Tokenizer encodes text to token ids and back, as the Hugging Face tokenizers library does
// for a byte-level BPE tokenizer.json of the Qwen2 and Qwen3 families. It is safe for
// concurrent use.
type Tokenizer struct {
	vocab   map[string]int32 // byte-level token string -> id; added tokens by content
	pieces  []string         // id -> raw bytes of the token; "" for ids not in use
	known   []bool           // id -> the id names a token
	special []bool           // id -> added token marked special

	added   []addedToken
	matcher *addedMatcher
	bpe     bpeModel

	eos, pad       int32
	hasEOS, hasPad bool
	chatTemplate   string
	modelMaxLength int
	configPath     string // tokenizer_config.json, present or not, for errors
	hasConfigFile  bool
}

// addedToken is an entry of tokenizer.json's added_tokens, matched whole in the text before
// the split pattern runs.
type addedToken struct {
	id         int32
	content    string
	singleWord bool
	lstrip     bool
	rstrip     bool
	normalized bool
}

// VocabSize returns the number of ids in use plus gaps, that is the largest id plus one.
func (t *Tokenizer) VocabSize() int { return len(t.pieces) }

// TokenID returns the id of a token given in its vocabulary form: an added token's content,
// or a byte-level string such as "Ġhello" for a BPE token.
func (t *Tokenizer) TokenID(token string) (int32, bool) {
	id, ok := t.vocab[token]
	return id, ok
}

// EOS returns the eos_token of tokenizer_config.json (Qwen3: <|im_end|>), or -1 when the
// config names none.
func (t *Tokenizer) EOS() int32 {
	if !t.hasEOS {
		return -1
	}
	return t.eos
}

// Pad returns the pad_token of tokenizer_config.json (Qwen3: <|endoftext|>), falling back
// to EOS, or -1 when neither is set.
func (t *Tokenizer) Pad() int32 {
	if t.hasPad {
		return t.pad
	}
	return t.EOS()
}

// EndOfText returns the id of <|endoftext|>, the separator of plain-text documents in Qwen
// pre-training, falling back to EOS.
func (t *Tokenizer) EndOfText() int32 {
	if id, ok := t.vocab["<|endoftext|>"]; ok {
		return id
	}
	return t.EOS()
}

// ModelMaxLength returns tokenizer_config.json's model_max_length, or 0 when unset.
func (t *Tokenizer) ModelMaxLength() int { return t.modelMaxLength }

// IsSpecial reports whether id is an added token marked special (<|im_start|>, ...).
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// Encode returns the token ids of text. Added tokens written in the text, special ones
// included, become their ids. No BOS or EOS is added, as Qwen tokenizers add none.
// Invalid UTF-8 bytes are encoded byte by byte, so Decode gives them back unchanged.
func (t *Tokenizer) Encode(text string) []int32 {
	return t.appendEncoded(make([]int32, 0, len(text)/3+1), text, nil)
}

// appendEncoded appends the tokens of text to dst. When starts is not nil, it also
// appends each token's start offset in text.
func (t *Tokenizer) appendEncoded(dst []int32, text string, starts *[]int) []int32 {
	pos := 0
	for pos < len(text) {
		m, ok := t.matcher.next(text, pos)
		end := len(text)
		if ok {
			end = m.start
		}
		dst = t.appendSegment(dst, text[pos:end], pos, starts)
		if !ok {
			break
		}
		dst = append(dst, m.id)
		if starts != nil {
			*starts = append(*starts, m.start)
		}
		pos = m.end
	}
	return dst
}

// appendSegment encodes text between added tokens: NFC, split, byte-level BPE. base is the
// segment's offset in the caller's text.
func (t *Tokenizer) appendSegment(dst []int32, segment string, base int, starts *[]int) []int32 {
	if segment == "" {
		return dst
	}
	if norm.NFC.IsNormalString(segment) {
		return t.appendNormalized(dst, segment, base, nil, starts)
	}
	normalized, units := nfcWithOffsets(segment)
	return t.appendNormalized(dst, normalized, base, units, starts)
}

func (t *Tokenizer) appendNormalized(dst []int32, text string, base int, units []unitOffset, starts *[]int) []int32 {
	for i := 0; i < len(text); {
		end := scanQwen2(text, i)
		first := len(dst)
		dst = t.bpe.encodeWord(dst, text[i:end])
		if starts != nil {
			offset := i
			for _, id := range dst[first:] {
				*starts = append(*starts, base+originalOffset(units, offset))
				offset += len(t.pieces[id])
			}
		}
		i = end
	}
	return dst
}

// unitOffset pairs the start of an NFC normalization unit in the normalized text with its
// start in the original text.
type unitOffset struct{ normalized, original int }

// nfcWithOffsets normalizes s one normalization unit at a time, which gives the same result
// as normalizing it whole, and records where each unit came from.
func nfcWithOffsets(s string) (string, []unitOffset) {
	var b strings.Builder
	var units []unitOffset
	for i := 0; i < len(s); {
		n := norm.NFC.NextBoundaryInString(s[i:], true)
		if n <= 0 {
			n = len(s) - i
		}
		units = append(units, unitOffset{normalized: b.Len(), original: i})
		b.WriteString(norm.NFC.String(s[i : i+n]))
		i += n
	}
	return b.String(), units
}

// originalOffset maps an offset in normalized text to the start of its unit in the
// original text; with no units the texts are the same.
func originalOffset(units []unitOffset, offset int) int {
	if units == nil {
		return offset
	}
	k, found := slices.BinarySearchFunc(units, offset, func(u unitOffset, off int) int { return u.normalized - off })
	if !found {
		k--
	}
	return units[max(k, 0)].original
}

// Decode returns the text of ids, special tokens included. Unknown ids are skipped, as
// Hugging Face does, and byte sequences that are not valid UTF-8 become U+FFFD.
func (t *Tokenizer) Decode(ids []int32) string {
	return t.decode(ids, false)
}

// DecodeSkipSpecial returns the text of ids without the special tokens.
func (t *Tokenizer) DecodeSkipSpecial(ids []int32) string {
	return t.decode(ids, true)
}

func (t *Tokenizer) decode(ids []int32, skipSpecial bool) string {
	var b strings.Builder
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.pieces) || !t.known[id] {
			continue
		}
		if skipSpecial && t.special[id] {
			continue
		}
		b.WriteString(t.pieces[id])
	}
	return lossyUTF8(b.String())
}

// DecodeBytes returns the raw bytes of ids, which may end inside a UTF-8 sequence; a
// streaming caller buffers them until they form complete characters.
func (t *Tokenizer) DecodeBytes(ids []int32) []byte {
	var out []byte
	for _, id := range ids {
		if id >= 0 && int(id) < len(t.pieces) {
			out = append(out, t.pieces[id]...)
		}
	}
	return out
}

// Piece returns the text of one token, with U+FFFD where the token holds part of a
// multi-byte character.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return lossyUTF8(t.pieces[id])
}

// decodeByteLevel maps a byte-level token string back to bytes. A token with a character
// outside the byte-level alphabet keeps its UTF-8 bytes, as Hugging Face's decoder does.
func decodeByteLevel(token string) string {
	out := make([]byte, 0, len(token))
	for _, r := range token {
		b, ok := runeToByte(r)
		if !ok {
			return token
		}
		out = append(out, b)
	}
	return string(out)
}

var runeToByteTable = func() map[rune]byte {
	m := make(map[rune]byte, 256)
	for b, r := range byteToRune {
		m[r] = byte(b)
	}
	return m
}()

func runeToByte(r rune) (byte, bool) {
	b, ok := runeToByteTable[r]
	return b, ok
}

// lossyUTF8 replaces each maximal invalid subsequence of s with one U+FFFD, the Unicode
// recommended practice that Rust's from_utf8_lossy and Python's errors="replace" follow.
// Go's own range loop would emit one U+FFFD per byte instead.
func lossyUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || size > 1 {
			b.WriteString(s[i : i+size])
			i += size
			continue
		}
		b.WriteRune(utf8.RuneError)
		i += invalidPrefixLen(s[i:])
	}
	return b.String()
}

// invalidPrefixLen returns the length of the maximal subpart at the start of s: a lead
// byte and the continuation bytes that could still have completed it.
func invalidPrefixLen(s string) int {
	c := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for ; n <= need && n < len(s); n++ {
		if s[n] < lo || s[n] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	return n
}

// isWordChar reports whether r continues a word for added tokens marked single_word.
func isWordChar(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}
