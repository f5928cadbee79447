package tokenizer

import (
	"cmp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedMatcher finds added tokens in text, leftmost first and longest at a position, as
// Hugging Face's Aho-Corasick matcher does.
//
// NOTE: Hugging Face matches tokens marked normalized on the NFC text and the others on
// the raw text; this matcher uses the raw text for both, which differs only when NFC
// changes the characters of a normalized added token. Qwen's added tokens are all
// unnormalized ASCII.
type addedMatcher struct {
	byFirst [256][]addedToken // candidates by first byte, longest first
}

type addedMatch struct {
	id         int32
	start, end int
}

func newAddedMatcher(tokens []addedToken) *addedMatcher {
	m := &addedMatcher{}
	for _, tok := range tokens {
		first := tok.content[0]
		m.byFirst[first] = append(m.byFirst[first], tok)
	}
	for i := range m.byFirst {
		slices.SortStableFunc(m.byFirst[i], func(a, b addedToken) int {
			return cmp.Compare(len(b.content), len(a.content))
		})
	}
	return m
}

// next returns the first added token in text at or after from.
func (m *addedMatcher) next(text string, from int) (addedMatch, bool) {
	for i := from; i < len(text); i++ {
		candidates := m.byFirst[text[i]]
		for _, tok := range candidates {
			if !strings.HasPrefix(text[i:], tok.content) {
				continue
			}
			start, end := i, i+len(tok.content)
			if tok.singleWord && !atWordBoundaries(text, start, end) {
				continue
			}
			if tok.lstrip {
				start = skipSpaceBackward(text, start, from)
			}
			if tok.rstrip {
				end = skipSpaceForward(text, end)
			}
			return addedMatch{id: tok.id, start: start, end: end}, true
		}
	}
	return addedMatch{}, false
}

func atWordBoundaries(text string, start, end int) bool {
	if start > 0 {
		if r, _ := utf8.DecodeLastRuneInString(text[:start]); isWordChar(r) {
			return false
		}
	}
	if end < len(text) {
		if r, _ := utf8.DecodeRuneInString(text[end:]); isWordChar(r) {
			return false
		}
	}
	return true
}

func skipSpaceBackward(text string, i, limit int) int {
	for i > limit {
		r, n := utf8.DecodeLastRuneInString(text[limit:i])
		if !unicode.IsSpace(r) {
			break
		}
		i -= n
	}
	return i
}

func skipSpaceForward(text string, i int) int {
	for i < len(text) {
		r, n := utf8.DecodeRuneInString(text[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += n
	}
	return i
}
