package demodata

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// source is the corpus folder a poem comes from.
type source int

const (
	sourceTang source = iota
	sourceCi
	sourceParaphrase
)

// poem is a record that passed the filters, in the source's script.
type poem struct {
	source source
	// title is the title, or the tune (rhythmic) for a ci.
	title  string
	author string
	lines  []string
	// paraphrase is the cleaned prologue of a shuimotangshi record, empty otherwise.
	paraphrase string
	// key is the selection order, set by selectPoems.
	key uint64
}

// skipReason is the first filter that rejects a record, or skipNone.
type skipReason int

// The reasons, in the order the filters run and the order of the SourceStats fields.
const (
	skipNone skipReason = iota
	skipFlagged
	skipNoParaphrase
	skipMissingGlyph
	skipSymbol
	skipEmptyLine
	skipTitle
	skipTooLong
	skipDuplicate
)

const (
	missingGlyph       = '□'
	fragmentTitle      = "句"
	allowedPunctuation = "，。？！；：、·"
)

// SourceStats counts the records of one source and why they were skipped. A record
// counts under the first reason in the order of the fields.
type SourceStats struct {
	Read         int // records in the source files
	Flagged      int // id listed in quantangshi/error/ (Tang poems only)
	NoParaphrase int // empty prologue (paraphrases only)
	MissingGlyph int // a line contains □
	Symbol       int // a line contains a character other than Han and ，。？！；：、·
	EmptyLine    int // no lines, or a blank line
	Title        int // empty title, the fragment title 句, or a title with 《 or 》
	TooLong      int // text longer than Options.MaxChars characters
	Duplicate    int // same lines as an earlier record of the same source
	Eligible     int // records that passed every filter
	Selected     int // eligible records kept after the cap
}

func (s *SourceStats) count(reason skipReason) {
	switch reason {
	case skipFlagged:
		s.Flagged++
	case skipNoParaphrase:
		s.NoParaphrase++
	case skipMissingGlyph:
		s.MissingGlyph++
	case skipSymbol:
		s.Symbol++
	case skipEmptyLine:
		s.EmptyLine++
	case skipTitle:
		s.Title++
	case skipTooLong:
		s.TooLong++
	case skipDuplicate:
		s.Duplicate++
	}
}

// filter applies the filters to the records of one source and keeps the first record
// of each text.
type filter struct {
	maxChars int
	stats    *SourceStats
	seen     map[string]bool
}

func newFilter(maxChars int, stats *SourceStats) *filter {
	return &filter{maxChars: maxChars, stats: stats, seen: make(map[string]bool)}
}

// check counts the record and returns its trimmed title and lines, or ok=false when a
// filter rejects it. sourceReason is the result of the source's own checks (flagged id,
// empty prologue), which run first.
func (f *filter) check(title string, paragraphs []string, sourceReason skipReason) (trimmedTitle string, lines []string, ok bool) {
	trimmedTitle = strings.TrimSpace(title)
	lines = make([]string, len(paragraphs))
	for i, p := range paragraphs {
		lines[i] = strings.TrimSpace(p)
	}

	reason := sourceReason
	if reason == skipNone {
		reason = linesReason(lines)
	}
	if reason == skipNone && !validTitle(trimmedTitle) {
		reason = skipTitle
	}
	if reason == skipNone && countChars(lines) > f.maxChars {
		reason = skipTooLong
	}
	if reason == skipNone {
		text := strings.Join(lines, "\n")
		if f.seen[text] {
			reason = skipDuplicate
		}
		f.seen[text] = true
	}

	if reason != skipNone {
		f.stats.count(reason)
		return "", nil, false
	}
	f.stats.Eligible++
	return trimmedTitle, lines, true
}

// linesReason checks for □ before the other symbols, because □ is the corpus's own mark
// of a missing glyph.
func linesReason(lines []string) skipReason {
	for _, line := range lines {
		if strings.ContainsRune(line, missingGlyph) {
			return skipMissingGlyph
		}
	}
	for _, line := range lines {
		for _, r := range line {
			if !unicode.Is(unicode.Han, r) && !strings.ContainsRune(allowedPunctuation, r) {
				return skipSymbol
			}
		}
	}
	if len(lines) == 0 || slices.Contains(lines, "") {
		return skipEmptyLine
	}
	return skipNone
}

func countChars(lines []string) int {
	n := 0
	for _, line := range lines {
		n += utf8.RuneCountInString(line)
	}
	return n
}

// validTitle rejects titles that make a poor prompt: an empty title, the fragment title
// 句 shared by hundreds of unrelated fragments, and titles whose 《》 would nest inside
// the 《》 of the prompt.
func validTitle(title string) bool {
	if title == "" || title == fragmentTitle {
		return false
	}
	if strings.ContainsAny(title, "《》") {
		return false
	}
	for _, r := range title {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// cleanParaphrase trims the prologue and turns each run of white space, such as the
// "\r\n" line ends and the "\u3000\u3000" paragraph indents of some records, into one
// line break, so that the paraphrase never contains a blank line.
func cleanParaphrase(prologue string) string {
	return strings.Join(strings.Fields(prologue), "\n")
}
