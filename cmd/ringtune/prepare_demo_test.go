package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Sizes of the corpus that writeDemoCorpus builds.
const (
	demoShortPoems = 30 // quatrains of 24 characters
	demoLongPoems  = 10 // 80 characters, over the default --max-chars of 64
	demoTangRead   = demoShortPoems + demoLongPoems + 2
	demoCi         = 4
	demoParaphrase = 4 // one of them with an empty prologue
)

// demoLine returns a line of n distinct Han characters followed by punct. Seeds below
// 9000 start with distinct characters, so no two poems share their text.
func demoLine(seed, n int, punct string) string {
	var b strings.Builder
	for j := range n {
		b.WriteRune(rune(0x4E00 + (seed*11+j*3)%9000))
	}
	return b.String() + punct
}

func demoPoemLines(seed, lines, chars int) []string {
	out := make([]string, lines)
	for i := range out {
		punct := "，"
		if i%2 == 1 {
			punct = "。"
		}
		out[i] = demoLine(seed*lines+i, chars, punct)
	}
	return out
}

func writeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	content, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, content, 0o644))
}

// writeDemoCorpus builds a small corpus in the layout of the chinese-poetry package and
// returns its folder. The Tang poems are split over two numbered files, and two of them
// are rejected by filters: one listed in quantangshi/error/ and one with □.
func writeDemoCorpus(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	dist := filepath.Join(root, "dist")

	type record = map[string]any
	var tang []record
	for i := range demoShortPoems {
		tang = append(tang, record{"title": fmt.Sprintf("無題%d", i), "author": "佚名",
			"paragraphs": demoPoemLines(i, 4, 5), "id": fmt.Sprintf("short-%d", i)})
	}
	for i := range demoLongPoems {
		tang = append(tang, record{"title": fmt.Sprintf("長歌%d", i), "author": "佚名",
			"paragraphs": demoPoemLines(100+i, 10, 7), "id": fmt.Sprintf("long-%d", i)})
	}
	flagged := record{"title": "存疑", "author": "佚名", "paragraphs": demoPoemLines(200, 4, 5), "id": "flagged"}
	damaged := record{"title": "殘篇", "author": "佚名", "paragraphs": []string{"□□□□□，", "□□□□□。"}, "id": "damaged"}
	tang = append(tang, flagged, damaged)

	half := len(tang) / 2
	writeJSONFile(t, filepath.Join(dist, "quantangshi", "poet.tang.0.json"), tang[:half])
	writeJSONFile(t, filepath.Join(dist, "quantangshi", "poet.tang.1000.json"), tang[half:])
	writeJSONFile(t, filepath.Join(dist, "quantangshi", "error", "poet.tang.0.json"), []record{flagged})

	var ci []record
	for i := range demoCi {
		ci = append(ci, record{"rhythmic": fmt.Sprintf("詞牌%d", i), "author": "佚名", "paragraphs": demoPoemLines(300+i, 4, 4)})
	}
	writeJSONFile(t, filepath.Join(dist, "songci", "ci.song.0.json"), ci)

	var paraphrases []record
	for i := range demoParaphrase {
		prologue := demoLine(400+i, 12, "。")
		if i == 0 {
			prologue = ""
		}
		paraphrases = append(paraphrases, record{"title": fmt.Sprintf("白話%d", i), "author": "佚名",
			"paragraphs": demoPoemLines(500+i, 4, 5), "prologue": prologue})
	}
	writeJSONFile(t, filepath.Join(dist, "shuimotangshi", "shuimotangshi.json"), paraphrases)
	return root
}

// countLines returns the non-empty lines of a JSON Lines file.
func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			n++
		}
	}
	require.NoError(t, sc.Err())
	return n
}

// prepareDemoJSON runs prepare-demo with --json and decodes its output.
func prepareDemoJSON(t *testing.T, args ...string) prepareDemoOutput {
	t.Helper()
	stdout, stderr, err := runCLI(t, append([]string{"prepare-demo", "--json"}, args...)...)
	require.NoError(t, err, stderr)

	var out prepareDemoOutput
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&out), stdout)
	assert.False(t, dec.More(), "stdout holds more than one JSON value")
	return out
}

func TestPrepareDemoJSON(t *testing.T) {
	src, out := writeDemoCorpus(t), t.TempDir()
	report := prepareDemoJSON(t, "--source", src, "--out", out)

	assert.Equal(t, out, report.Out)
	assert.Equal(t, sourceCounts{
		Read:         demoTangRead,
		Flagged:      1,
		MissingGlyph: 1,
		TooLong:      demoLongPoems,
		Eligible:     demoShortPoems,
		Selected:     demoShortPoems,
	}, report.Tang)
	assert.Nil(t, report.Ci, "ci without --ci")
	assert.Equal(t, sourceCounts{
		Read:         demoParaphrase,
		NoParaphrase: 1,
		Eligible:     demoParaphrase - 1,
		Selected:     demoParaphrase - 1,
	}, report.Paraphrase)

	// ceil(0.05·30) = 2 of the 30 distinct titles, and ceil(0.05·3) = 1 of 3, go to eval.
	assert.Equal(t, 28, report.TrainTitles)
	assert.Equal(t, 2, report.EvalTitles)
	assert.Equal(t, 2, report.ParaphraseTrainTitles)
	assert.Equal(t, 1, report.ParaphraseEvalTitles)

	names := []string{"pretrain.jsonl", "pretrain_eval.jsonl", "sft.jsonl", "sft_eval.jsonl", "prompts.txt"}
	require.Len(t, report.Files, len(names))
	for i, f := range report.Files {
		assert.Equal(t, names[i], f.Name)
		assert.Equal(t, filepath.Join(out, names[i]), f.Path)
		info, err := os.Stat(f.Path)
		require.NoError(t, err)
		assert.Equal(t, info.Size(), f.Bytes, f.Name)
	}
	for _, f := range report.Files[:4] {
		assert.Equal(t, countLines(t, f.Path), f.Records, f.Name)
	}
	assert.Equal(t, demoShortPoems, report.Files[0].Records+report.Files[1].Records)
	assert.Equal(t, demoShortPoems+demoParaphrase-1, report.Files[2].Records+report.Files[3].Records)
	assert.Equal(t, 2+1, report.Files[4].Records, "prompts: the eval titles and the eval paraphrase")
}

func TestPrepareDemoText(t *testing.T) {
	src, out := writeDemoCorpus(t), t.TempDir()
	stdout, stderr, err := runCLI(t, "prepare-demo", "--source", src, "--out", out)
	require.NoError(t, err, stderr)

	lines := strings.Split(stdout, "\n")
	require.Greater(t, len(lines), 6, stdout)
	assert.Equal(t, []string{"file", "records", "bytes"}, strings.Fields(lines[0]))
	for i, name := range []string{"pretrain.jsonl", "pretrain_eval.jsonl", "sft.jsonl", "sft_eval.jsonl", "prompts.txt"} {
		fields := strings.Fields(lines[1+i])
		require.Len(t, fields, 3, "line %q", lines[1+i])
		assert.Equal(t, name, fields[0])
		info, err := os.Stat(filepath.Join(out, name))
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint(info.Size()), fields[2], name)
	}
	assert.Equal(t, "written to "+out, lines[6])
	assert.Contains(t, stdout, "\ntang ")
	assert.Contains(t, stdout, "\nparaphrase ")
	assert.NotContains(t, stdout, "\nci ", "ci row without --ci")
	assert.Contains(t, stdout, "titles: 28 train, 2 eval (poems); 2 train, 1 eval (paraphrases)")
}

func TestPrepareDemoFlags(t *testing.T) {
	src, out := writeDemoCorpus(t), t.TempDir()
	report := prepareDemoJSON(t, "--source", src, "--out", out, "--poems", "12", "--max-chars", "80",
		"--ci", "--max-ci", "3", "--eval-fraction", "0.25", "--prompts", "2")

	assert.Equal(t, 0, report.Tang.TooLong, "--max-chars 80 keeps the long poems")
	assert.Equal(t, demoShortPoems+demoLongPoems, report.Tang.Eligible)
	assert.Equal(t, 12, report.Tang.Selected)
	require.NotNil(t, report.Ci)
	assert.Equal(t, demoCi, report.Ci.Eligible)
	assert.Equal(t, 3, report.Ci.Selected)
	// 12 poem titles and 3 tunes give ceil(0.25·15) = 4 eval titles.
	assert.Equal(t, 4, report.EvalTitles)
	assert.Equal(t, 2, report.Files[4].Records)

	sft, err := os.ReadFile(filepath.Join(out, "sft.jsonl"))
	require.NoError(t, err)
	sftEval, err := os.ReadFile(filepath.Join(out, "sft_eval.jsonl"))
	require.NoError(t, err)
	assert.Contains(t, string(sft)+string(sftEval), "为词牌写一首词。")
}

func TestPrepareDemoSeed(t *testing.T) {
	src := writeDemoCorpus(t)
	pretrain := func(seed string) string {
		out := t.TempDir()
		prepareDemoJSON(t, "--source", src, "--out", out, "--poems", "5", "--seed", seed)
		content, err := os.ReadFile(filepath.Join(out, "pretrain.jsonl"))
		require.NoError(t, err)
		return string(content)
	}

	first := pretrain("1")
	assert.Equal(t, first, pretrain("1"), "same seed")
	assert.NotEqual(t, first, pretrain("2"), "another seed")
}

func TestPrepareDemoBadFlags(t *testing.T) {
	src := writeDemoCorpus(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--out", t.TempDir()}, `"source"`},
		{[]string{"--source", src}, `"out"`},
		{[]string{"--source", "", "--out", t.TempDir()}, "--source is empty"},
		{[]string{"--source", src, "--out", t.TempDir(), "extra"}, `unexpected argument "extra"`},
		{[]string{"--source", src, "--out", t.TempDir(), "--poems", "0"}, "--poems is 0"},
		{[]string{"--source", src, "--out", t.TempDir(), "--max-chars", "-1"}, "--max-chars is -1"},
		{[]string{"--source", src, "--out", t.TempDir(), "--ci", "--max-ci", "0"}, "--max-ci is 0"},
		{[]string{"--source", src, "--out", t.TempDir(), "--max-ci", "5"}, "--max-ci has no effect without --ci"},
		{[]string{"--source", src, "--out", t.TempDir(), "--eval-fraction", "1"}, "--eval-fraction is 1"},
		{[]string{"--source", src, "--out", t.TempDir(), "--eval-fraction", "0"}, "--eval-fraction is 0"},
		{[]string{"--source", src, "--out", t.TempDir(), "--prompts", "0"}, "--prompts is 0"},
		{[]string{"--source", src, "--out", t.TempDir(), "--seed", "-1"}, "seed"},
		{[]string{"--source", t.TempDir(), "--out", t.TempDir()}, "no quantangshi folder"},
		{[]string{"--source", src, "--out", t.TempDir(), "--max-chars", "10"}, "no poem passed the filters"},
	}
	for _, tc := range cases {
		_, stderr, err := runCLI(t, append([]string{"prepare-demo"}, tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}

func TestPrepareDemoOutputNotWritable(t *testing.T) {
	src := writeDemoCorpus(t)
	blocker := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(blocker, nil, 0o644))

	_, stderr, err := runCLI(t, "prepare-demo", "--source", src, "--out", filepath.Join(blocker, "out"))
	require.Error(t, err)
	assert.Contains(t, stderr, blocker)
	assert.Contains(t, stderr, "not a directory")
}
