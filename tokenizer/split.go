package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// qwen2SplitPattern is the pre-tokenizer regex of Qwen2 and Qwen3 tokenizer.json files.
// Go's regexp has no negative lookahead, so scanQwen2 implements it by hand.
const qwen2SplitPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// Character classes of the split pattern. Whitespace is Unicode White_Space, which is what
// Oniguruma's \s matches on UTF-8 text (it includes U+0085 and excludes U+FEFF).
const (
	classOther  uint8 = 0
	classLetter uint8 = 1 << iota
	classNumber
	classSpace
	classNewline // \r or \n; always classSpace too
)

var asciiClass [utf8.RuneSelf]uint8

func init() {
	for r := rune(0); r < utf8.RuneSelf; r++ {
		asciiClass[r] = unicodeClass(r)
	}
}

func unicodeClass(r rune) uint8 {
	switch {
	case r == '\r' || r == '\n':
		return classSpace | classNewline
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.Is(unicode.White_Space, r):
		return classSpace
	}
	return classOther
}

// charAt decodes the character at s[i]: its class and its size in bytes. An invalid UTF-8
// byte is a one-byte character of classOther, so byte-level encoding keeps it unchanged.
func charAt(s string, i int) (rune, uint8, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return rune(c), asciiClass[c], 1
	}
	r, size := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && size == 1 {
		return r, classOther, 1
	}
	return r, unicodeClass(r), size
}

// scanQwen2 returns the end of the piece that starts at s[i], following the alternatives
// of qwen2SplitPattern in order, as a backtracking engine picks the first that matches.
func scanQwen2(s string, i int) int {
	r0, c0, n0 := charAt(s, i)

	// (?i:'s|'t|'re|'ve|'m|'ll|'d). Under case folding, 's' also matches U+017F (long s).
	if r0 == '\'' && i+1 < len(s) {
		if end := contractionEnd(s, i+1); end > 0 {
			return end
		}
	}

	// [^\r\n\p{L}\p{N}]?\p{L}+
	if c0 == classLetter {
		return letterRunEnd(s, i+n0)
	}
	if c0&(classLetter|classNumber|classNewline) == 0 && i+n0 < len(s) {
		if _, c1, n1 := charAt(s, i+n0); c1 == classLetter {
			return letterRunEnd(s, i+n0+n1)
		}
	}

	// \p{N}
	if c0 == classNumber {
		return i + n0
	}

	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	p := i
	if r0 == ' ' && i+1 < len(s) {
		p = i + 1
	}
	if _, c, n := charAt(s, p); c == classOther {
		p += n
		for p < len(s) {
			_, c, n := charAt(s, p)
			if c != classOther {
				break
			}
			p += n
		}
		for p < len(s) && (s[p] == '\r' || s[p] == '\n') {
			p++
		}
		return p
	}

	// Only whitespace is left: c0 is classSpace.
	runEnd, lastNewline, lastStart := i, -1, i
	for runEnd < len(s) {
		_, c, n := charAt(s, runEnd)
		if c&classSpace == 0 {
			break
		}
		if c&classNewline != 0 {
			lastNewline = runEnd
		}
		lastStart = runEnd
		runEnd += n
	}

	// \s*[\r\n]+ ends at the last newline of the run.
	if lastNewline >= 0 {
		return lastNewline + 1
	}

	// \s+(?!\S) takes the run at the end of the text, else all of it but its last
	// character, which then starts the next piece (" word" or " 1").
	if runEnd == len(s) || lastStart == i {
		// \s+ when the run is one character followed by non-space.
		return runEnd
	}
	return lastStart
}

// contractionEnd returns the end of a contraction suffix starting at s[i] (just after the
// apostrophe), or 0 if none matches.
func contractionEnd(s string, i int) int {
	r1, n1 := utf8.DecodeRuneInString(s[i:])
	switch r1 {
	case 's', 'S', 'ſ', 't', 'T', 'm', 'M', 'd', 'D':
		return i + n1
	}
	if i+1 >= len(s) {
		return 0
	}
	c2 := s[i+1] | 0x20 // ASCII lower case; the second letters are all ASCII
	switch {
	case (r1 == 'r' || r1 == 'R') && c2 == 'e':
		return i + 2
	case (r1 == 'v' || r1 == 'V') && c2 == 'e':
		return i + 2
	case (r1 == 'l' || r1 == 'L') && c2 == 'l':
		return i + 2
	}
	return 0
}

func letterRunEnd(s string, i int) int {
	for i < len(s) {
		_, c, n := charAt(s, i)
		if c != classLetter {
			break
		}
		i += n
	}
	return i
}

// splitPieces splits text with the Qwen2 pattern and returns the pieces; tests use it.
func splitPieces(text string) []string {
	var pieces []string
	for i := 0; i < len(text); {
		end := scanQwen2(text, i)
		pieces = append(pieces, text[i:end])
		i = end
	}
	return pieces
}
