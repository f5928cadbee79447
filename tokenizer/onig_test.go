package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// The tests in this file compare splitPieces with testdata/onig/split.c, which splits
// text with the same pattern through the system's Oniguruma, the regex engine of Hugging
// Face tokenizers. They need cc and Debian's libonig-dev and skip without them, unless
// RINGTUNE_REQUIRE_ONIG=1 makes that a failure.

// maxReportedMismatches caps the mismatches printed per input set, so that a broken
// scanner does not flood the log. The total count is still reported.
const maxReportedMismatches = 10

// buildOnigOracle compiles split.c into a temporary directory and returns the binary.
func buildOnigOracle(t *testing.T) string {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("RINGTUNE_REQUIRE_ONIG") == "1" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}

	cc, err := exec.LookPath("cc")
	if err != nil {
		skip("cc not found, so the Oniguruma oracle cannot be built: install a C compiler and libonig-dev")
	}
	binary := filepath.Join(t.TempDir(), "split")
	out, err := exec.Command(cc, "-O2", "-o", binary, filepath.Join("testdata", "onig", "split.c"), "-lonig").CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("oniguruma.h")) || bytes.Contains(out, []byte("-lonig")) {
			skip("Oniguruma headers or library not found: install libonig-dev (apt-get install -y libonig-dev)\n%s", out)
		}
		t.Fatalf("compiling testdata/onig/split.c failed: %v\n%s", err, out)
	}

	version, err := exec.Command(binary, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version failed: %v", binary, err)
	}
	t.Logf("oracle: %s", bytes.TrimSpace(version))
	return binary
}

// onigSplit returns the pieces that the oracle makes of each text. Every text must be
// valid UTF-8, as in Hugging Face, whose input is a Rust &str.
func onigSplit(t *testing.T, oracle string, texts []string) [][]string {
	t.Helper()
	var input bytes.Buffer
	for _, text := range texts {
		if len(text) > 1<<31 {
			t.Fatalf("text of %d bytes does not fit the oracle's 32-bit length prefix", len(text))
		}
		input.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(text))))
		input.WriteString(text)
	}

	cmd := exec.Command(oracle)
	cmd.Stdin = &input
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("oracle failed: %v\n%s", err, stderr.Bytes())
	}

	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(texts) == 0 {
		lines = nil
	}
	if len(lines) != len(texts) {
		t.Fatalf("oracle returned %d lines for %d texts", len(lines), len(texts))
	}
	splits := make([][]string, len(texts))
	for i, line := range lines {
		start := 0
		for _, field := range strings.Fields(line) {
			end, err := strconv.Atoi(field)
			if err != nil || end <= start || end > len(texts[i]) {
				t.Fatalf("oracle line %d: invalid offset %q in %q", i, field, line)
			}
			splits[i] = append(splits[i], texts[i][start:end])
			start = end
		}
		if start != len(texts[i]) {
			t.Fatalf("oracle line %d: pieces end at byte %d of %d", i, start, len(texts[i]))
		}
	}
	return splits
}

// compareWithOnig checks splitPieces against the oracle on every text and reports each
// mismatch with the input and both splits.
func compareWithOnig(t *testing.T, oracle string, texts []string) {
	t.Helper()
	want := onigSplit(t, oracle, texts)
	mismatches := 0
	for i, text := range texts {
		got := nonEmpty(splitPieces(text))
		if strings.Join(got, "") != text {
			t.Errorf("splitPieces(%q) = %q: the pieces do not concatenate to the input", text, got)
			mismatches++
			continue
		}
		if equalPieces(got, want[i]) {
			continue
		}
		mismatches++
		if mismatches <= maxReportedMismatches {
			t.Errorf("split of %q differs from Oniguruma\n  splitPieces: %q\n  Oniguruma:   %q", text, got, want[i])
		}
	}
	if mismatches > maxReportedMismatches {
		t.Errorf("%d of %d texts split differently from Oniguruma; the first %d are above",
			mismatches, len(texts), maxReportedMismatches)
	}
}

// nonEmpty drops empty pieces, which carry no bytes and so no tokens. Oniguruma never
// makes one.
func nonEmpty(pieces []string) []string {
	out := pieces[:0:0]
	for _, p := range pieces {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func equalPieces(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSplitPiecesMatchesOniguruma(t *testing.T) {
	oracle := buildOnigOracle(t)

	t.Run("encode_fixtures", func(t *testing.T) {
		texts := fixtureTexts(t, filepath.Join("testdata", "reference", "qwen3_encode.jsonl"))
		compareWithOnig(t, oracle, texts)
	})
	t.Run("chat_fixtures", func(t *testing.T) {
		texts := fixtureTexts(t, filepath.Join("testdata", "reference", "qwen3_chat.jsonl"))
		compareWithOnig(t, oracle, texts)
	})
	t.Run("random", func(t *testing.T) {
		compareWithOnig(t, oracle, randomSplitInputs(20000, 1))
	})
	t.Run("repository_files", func(t *testing.T) {
		compareWithOnig(t, oracle, repositoryTexts(t))
	})
}

// fixtureTexts returns the "text" field of every record in a JSONL fixture. It leaves out
// records with "unicode_added", because they contain characters newer than Unicode 14.0,
// which Debian's Oniguruma 6.9.8 classifies differently from Go and Hugging Face.
func fixtureTexts(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("opening fixture: %v", err)
	}
	defer f.Close()

	var texts []string
	skipped := 0
	scanner := bufio.NewScanner(f)
	scanner.Buffer(nil, 16<<20)
	for line := 1; scanner.Scan(); line++ {
		var record struct {
			Text         *string `json:"text"`
			UnicodeAdded string  `json:"unicode_added"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &record); err != nil {
			t.Fatalf("%s:%d: invalid JSON: %v", path, line, err)
		}
		if record.Text == nil {
			t.Fatalf("%s:%d: record has no \"text\"", path, line)
		}
		if record.UnicodeAdded != "" {
			skipped++
			continue
		}
		texts = append(texts, *record.Text)
	}
	if err := scanner.Err(); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	if len(texts) == 0 {
		t.Fatalf("%s has no records", path)
	}
	t.Logf("%s: %d texts, %d with characters newer than Unicode 14.0 left out", path, len(texts), skipped)
	return texts
}

// repositoryTexts returns the Go and Markdown files of this module as real-world text.
func repositoryTexts(t *testing.T) []string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root with go.mod not found at %s: %v", root, err)
	}

	var texts []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".go" && ext != ".md" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if utf8.Valid(data) {
			texts = append(texts, string(data))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	if len(texts) == 0 {
		t.Fatalf("no .go or .md files under %s", root)
	}
	return texts
}

// splitInputClasses are the character classes that the random inputs mix. Each entry is
// a fixed string or a code point range. Every character here was assigned by Unicode 14.0
// and keeps its letter, number or White_Space class in later versions, so Debian's
// Oniguruma 6.9.8 (Unicode 14.0) and Go's unicode package (15.0) classify it alike.
var splitInputClasses = [][]any{
	// ASCII letters, digits and punctuation.
	{rangeOf('a', 'z'), rangeOf('A', 'Z'), rangeOf('0', '9'), rangeOf('!', '/'), rangeOf(':', '@'), rangeOf('[', '`'), rangeOf('{', '~')},
	// Apostrophes followed by contraction letters in several cases, and look-alikes.
	{"'s", "'S", "'ſ", "'t", "'T", "'re", "'RE", "'Re", "'rE", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D", "'", "''", "’s", "'x", "'ss", "'ſſ", "'K"},
	// Unicode White_Space, with U+FEFF, U+200B, U+180E and U+2060, which are not.
	{"\t", "\n", "\v", "\f", "\r", " ", "\u0085", "\u00a0", "\u1680", rangeOf(0x2000, 0x200a), "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
		"\ufeff", "\u200b", "\u180e", "\u2060", "\r\n", "  ", "\n\n", " \n"},
	// Letters of many scripts, including Lm, Lt and Lo.
	{rangeOf(0xc0, 0xff), rangeOf(0x100, 0x17f), rangeOf(0x391, 0x3c9), rangeOf(0x410, 0x44f), rangeOf(0x531, 0x556),
		rangeOf(0x5d0, 0x5ea), rangeOf(0x627, 0x64a), rangeOf(0x905, 0x939), rangeOf(0x985, 0x9b9), rangeOf(0xe01, 0xe30),
		rangeOf(0x10d0, 0x10fa), rangeOf(0x1200, 0x1248), rangeOf(0x13a0, 0x13f4), rangeOf(0x1401, 0x166c), rangeOf(0x1820, 0x1878),
		rangeOf(0x3041, 0x3096), rangeOf(0x30a1, 0x30fa), rangeOf(0x4e00, 0x9fa5), rangeOf(0xac00, 0xd7a3), rangeOf(0x2b0, 0x2c1),
		"ǅ", "ǈ", "ǋ", "ᾈ", rangeOf(0x1d400, 0x1d454), rangeOf(0x20000, 0x2a6d6), rangeOf(0x10300, 0x1031f), rangeOf(0x12000, 0x12399)},
	// Marks: Mn, Mc and Me.
	{rangeOf(0x300, 0x36f), rangeOf(0x591, 0x5bd), rangeOf(0x93e, 0x94c), "\u0903", "\u093b", "\u0982", rangeOf(0x20d0, 0x20dc),
		rangeOf(0x20dd, 0x20e0), "\u0488", "\u0489", "\u302a", "\u3099", rangeOf(0xfe20, 0xfe2f), rangeOf(0x1d167, 0x1d169)},
	// Numbers: Nd, Nl and No.
	{rangeOf(0x660, 0x669), rangeOf(0x6f0, 0x6f9), rangeOf(0x966, 0x96f), rangeOf(0xe50, 0xe59), rangeOf(0xff10, 0xff19),
		rangeOf(0x1d7ce, 0x1d7ff), rangeOf(0x2160, 0x2188), "\u3007", rangeOf(0x3021, 0x3029), rangeOf(0x10140, 0x10174),
		"½", "¼", "¾", "²", "³", "¹", rangeOf(0x2460, 0x249b), rangeOf(0x2070, 0x2079), rangeOf(0x2150, 0x215f), rangeOf(0xf2a, 0xf33)},
	// Symbols and punctuation beyond ASCII.
	{rangeOf(0xa1, 0xbf), rangeOf(0x2010, 0x2027), rangeOf(0x2030, 0x205e), rangeOf(0x20a0, 0x20bf), rangeOf(0x2190, 0x21ff),
		rangeOf(0x2200, 0x22ff), rangeOf(0x2500, 0x257f), rangeOf(0x3001, 0x3003), rangeOf(0x300c, 0x300f), rangeOf(0xff01, 0xff0f),
		"^", "`", "¨", "´", "˜", "\u00ad", "\ufffd", "\ue000", "\U0010fffd"},
	// Emoji: single, with modifiers, ZWJ sequences, flags and keycaps.
	{rangeOf(0x1f600, 0x1f64f), rangeOf(0x1f300, 0x1f3fa), "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "❤️", "1️⃣", "\ufe0f", "\u200d",
		"🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"},
	// Controls other than White_Space.
	{rangeOf(0x0, 0x8), rangeOf(0xe, 0x1f), "\u007f", rangeOf(0x80, 0x84), rangeOf(0x86, 0x9f), "\u200c", "\u200d", "\u202e"},
	// Special tokens, which splitPieces treats as plain text.
	{"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"},
}

// codePointRange is an inclusive range of code points.
type codePointRange struct{ lo, hi rune }

func rangeOf(lo, hi rune) codePointRange { return codePointRange{lo, hi} }

// randomSplitInputs returns n deterministic strings of 1 to 40 items, each item drawn
// from a random class of splitInputClasses.
func randomSplitInputs(n int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	texts := make([]string, n)
	var b strings.Builder
	for i := range texts {
		b.Reset()
		items := 1 + rng.IntN(40)
		for range items {
			class := splitInputClasses[rng.IntN(len(splitInputClasses))]
			switch item := class[rng.IntN(len(class))].(type) {
			case string:
				b.WriteString(item)
			case codePointRange:
				b.WriteRune(item.lo + rune(rng.IntN(int(item.hi-item.lo+1))))
			default:
				panic(fmt.Sprintf("splitInputClasses: unexpected item %T", item))
			}
		}
		texts[i] = b.String()
	}
	return texts
}
