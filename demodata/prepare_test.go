package demodata

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
)

// fixtureDir mimics the unpacked package: a dist/ folder with a few records per file.
// Its edge cases are listed in the expected counts of TestPrepareFixtureCounts.
const fixtureDir = "testdata/corpus"

var outputNames = []string{PretrainFile, PretrainEvalFile, SFTFile, SFTEvalFile, PromptsFile}

func prepareFixture(t *testing.T, opts Options) (string, Stats) {
	t.Helper()
	out := t.TempDir()
	stats, err := Prepare(fixtureDir, out, opts)
	require.NoError(t, err)
	return out, stats
}

// readRecords reads a written file with package data, failing the test on any error.
func readRecords(t *testing.T, path string) []data.Record {
	t.Helper()
	r, err := data.Open(path, data.ReadOptions{})
	require.NoError(t, err)
	defer r.Close()

	var records []data.Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return records
		}
		require.NoError(t, err, "reading %s", path)
		records = append(records, rec)
	}
}

func texts(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, rec := range readRecords(t, path) {
		require.Equal(t, data.FormatText, rec.Format, "%s record %d", path, rec.Pos.Line)
		out = append(out, rec.Text)
	}
	return out
}

// chatPairs returns the user and assistant turns of each chat record.
func chatPairs(t *testing.T, path string) (users, assistants []string) {
	t.Helper()
	for _, rec := range readRecords(t, path) {
		require.Equal(t, data.FormatChat, rec.Format, "%s line %d", path, rec.Pos.Line)
		require.Len(t, rec.Messages, 2, "%s line %d", path, rec.Pos.Line)
		require.Equal(t, "user", rec.Messages[0].Role)
		require.Equal(t, "assistant", rec.Messages[1].Role)
		users = append(users, rec.Messages[0].Content)
		assistants = append(assistants, rec.Messages[1].Content)
	}
	return users, assistants
}

// pretrainTitle returns the title between 《 and 》 on the first line of a text record.
func pretrainTitle(t *testing.T, text string) string {
	t.Helper()
	header, _, _ := strings.Cut(text, "\n")
	require.True(t, strings.HasPrefix(header, "《"), "header %q", header)
	title, _, found := strings.Cut(strings.TrimPrefix(header, "《"), "》")
	require.True(t, found, "header %q", header)
	return title
}

// outputContents returns the text, or the turns, of every record of every output file.
func outputContents(t *testing.T, out string) []string {
	t.Helper()
	var contents []string
	for _, name := range outputNames {
		for _, rec := range readRecords(t, filepath.Join(out, name)) {
			if rec.Format == data.FormatChat {
				for _, m := range rec.Messages {
					contents = append(contents, m.Content)
				}
				continue
			}
			contents = append(contents, rec.Text)
		}
	}
	return contents
}

// assertNoneContains reports the first content that contains substr.
func assertNoneContains(t *testing.T, contents []string, substr, reason string) {
	t.Helper()
	for _, c := range contents {
		if strings.Contains(c, substr) {
			t.Errorf("output contains %q (%s) in %q", substr, reason, c)
			return
		}
	}
}

func TestPrepareFixtureCounts(t *testing.T) {
	_, stats := prepareFixture(t, Options{IncludeCi: true})

	assert.Equal(t, SourceStats{
		Read:         22,
		Flagged:      1, // 郊廟歌辭 郊天舊樂章 豫和, listed in error/
		MissingGlyph: 1, // 宮中題 with □
		Symbol:       1, // 送僧之靈夏 with {孛支}
		EmptyLine:    2, // 失題 without lines, 夏日聯句 with a blank line
		Title:        1, // 句
		TooLong:      1, // 初夏, 72 characters
		Duplicate:    1, // 詠弓 又, the text of 詠弓
		Eligible:     14,
		Selected:     14,
	}, stats.Tang)
	assert.Equal(t, SourceStats{Read: 6, MissingGlyph: 1, Eligible: 5, Selected: 5}, stats.Ci)
	assert.Equal(t, SourceStats{Read: 6, NoParaphrase: 1, MissingGlyph: 1, Eligible: 4, Selected: 4}, stats.Paraphrase)

	// 13 Tang titles (古意 twice) and 4 tunes give ceil(0.05·17) = 1 eval title.
	assert.Equal(t, 16, stats.TrainTitles)
	assert.Equal(t, 1, stats.EvalTitles)
	assert.Equal(t, 3, stats.ParaphraseTrainTitles)
	assert.Equal(t, 1, stats.ParaphraseEvalTitles)

	require.Len(t, stats.Files, len(outputNames))
	for i, name := range outputNames {
		assert.Equal(t, name, stats.Files[i].Name)
	}
	pretrain, pretrainEval := stats.Files[0].Records, stats.Files[1].Records
	sft, sftEval := stats.Files[2].Records, stats.Files[3].Records
	assert.Equal(t, 14+5, pretrain+pretrainEval)
	assert.Equal(t, 14+5+4, sft+sftEval)
}

func TestPrepareDeterministic(t *testing.T) {
	opts := Options{IncludeCi: true, Seed: 7}
	first, _ := prepareFixture(t, opts)
	second, _ := prepareFixture(t, opts)

	for _, name := range outputNames {
		a, err := os.ReadFile(filepath.Join(first, name))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(second, name))
		require.NoError(t, err)
		assert.Equal(t, string(a), string(b), name)
	}
}

func TestPrepareSeedChangesOrder(t *testing.T) {
	first, _ := prepareFixture(t, Options{Seed: 1})
	second, _ := prepareFixture(t, Options{Seed: 2})

	a := texts(t, filepath.Join(first, PretrainFile))
	b := texts(t, filepath.Join(second, PretrainFile))
	assert.NotEqual(t, a, b)
}

func TestPrepareFiltersDamagedPoems(t *testing.T) {
	out, _ := prepareFixture(t, Options{IncludeCi: true})
	contents := outputContents(t, out)
	require.NotEmpty(t, contents)

	assertNoneContains(t, contents, "□", "missing glyph")
	assertNoneContains(t, contents, "孛支", "glyph description in braces")
	assertNoneContains(t, contents, "蘋蘩禮著", "poem listed in error/")
	assertNoneContains(t, contents, "《句》", "fragment title")
	assertNoneContains(t, contents, "《失題》", "poem without lines")
	assertNoneContains(t, contents, "人皆苦炎熱", "poem with a blank line")
	assertNoneContains(t, contents, "《初夏》", "poem over MaxChars")
	assertNoneContains(t, contents, "《詠弓 又》", "duplicate text")
	assertNoneContains(t, contents, "千山鸟飞绝", "paraphrase record with an empty prologue")
	assertNoneContains(t, contents, "此處不讀", "poet.song.N.json is not a source")
	assertNoneContains(t, contents, "\r", "carriage return")
	assertNoneContains(t, contents, "\u3000", "ideographic space")
	assertNoneContains(t, contents, "\n\n", "blank line")
}

func TestPrepareRecordFormats(t *testing.T) {
	out, _ := prepareFixture(t, Options{IncludeCi: true})

	pretrain := append(texts(t, filepath.Join(out, PretrainFile)), texts(t, filepath.Join(out, PretrainEvalFile))...)
	assert.Contains(t, pretrain, "《詠弓》 太宗皇帝\n上弦明月半，激箭流星遠。\n落雁帶書驚，啼猿映枝轉。")

	users, assistants := chatPairs(t, filepath.Join(out, SFTFile))
	evalUsers, evalAssistants := chatPairs(t, filepath.Join(out, SFTEvalFile))
	turns := make(map[string][]string)
	for i, user := range append(users, evalUsers...) {
		turns[user] = append(turns[user], append(assistants, evalAssistants...)[i])
	}
	assert.Equal(t, []string{"上弦明月半，激箭流星遠。\n落雁帶書驚，啼猿映枝轉。"}, turns["写一首题为《詠弓》的诗。"])
	assert.Len(t, turns["以《浣溪沙》为词牌写一首词。"], 2)
	assert.Equal(t,
		[]string{"此诗摹拟商人妻子的口吻写别离的哀怨。\n嫁给瞿塘的商人，每天都耽误约定的时期。"},
		turns["请用白话解释这首诗：\n嫁得瞿塘贾，朝朝误妾期。\n早知潮有信，嫁与弄潮儿。"],
		"the prologue's \\r\\n becomes one line break")
	assert.Equal(t,
		[]string{"此诗朴素生动地刻划了封建社会媳妇对婆婆，特别是新嫁娘初到婆婆家，那种畏惧谨慎的心理状态。\n按照习俗，新嫁娘婚后的第三天要下厨做菜。"},
		turns["请用白话解释这首诗：\n三日入厨下，洗手作羹汤。\n未谙姑食性，先遣小姑尝。"],
		"the prologue's ideographic spaces become one line break")
}

func TestPrepareSplitByTitle(t *testing.T) {
	for _, seed := range []uint64{0, 1, 2, 3, 4, 5} {
		out, _ := prepareFixture(t, Options{IncludeCi: true, Seed: seed, EvalFraction: 0.3})

		trainTitles := make(map[string]bool)
		for _, text := range texts(t, filepath.Join(out, PretrainFile)) {
			trainTitles[pretrainTitle(t, text)] = true
		}
		evalTexts := texts(t, filepath.Join(out, PretrainEvalFile))
		require.NotEmpty(t, evalTexts)
		for _, text := range evalTexts {
			title := pretrainTitle(t, text)
			assert.False(t, trainTitles[title], "seed %d: title %q in both pretraining files", seed, title)
		}

		users, _ := chatPairs(t, filepath.Join(out, SFTFile))
		trainPrompts := make(map[string]bool)
		for _, user := range users {
			trainPrompts[user] = true
		}
		evalUsers, _ := chatPairs(t, filepath.Join(out, SFTEvalFile))
		require.NotEmpty(t, evalUsers)
		for _, user := range evalUsers {
			assert.False(t, trainPrompts[user], "seed %d: prompt %q in both SFT files", seed, user)
		}

		// A title held out from pretraining is held out from SFT too.
		for _, text := range evalTexts {
			title := pretrainTitle(t, text)
			assert.NotContains(t, trainPrompts, "写一首题为《"+title+"》的诗。", "seed %d", seed)
			assert.NotContains(t, trainPrompts, "以《"+title+"》为词牌写一首词。", "seed %d", seed)
		}

		evalPrompts := make(map[string]bool)
		for _, user := range evalUsers {
			evalPrompts[user] = true
		}
		prompts := texts(t, filepath.Join(out, PromptsFile))
		require.NotEmpty(t, prompts)
		for _, prompt := range prompts {
			assert.True(t, evalPrompts[prompt], "seed %d: prompts.txt entry %q is not an eval prompt", seed, prompt)
		}
	}
}

func TestPrepareKeepsDuplicateTitlesTogether(t *testing.T) {
	for _, seed := range []uint64{0, 1, 2, 3, 4, 5, 6, 7} {
		out, _ := prepareFixture(t, Options{Seed: seed, EvalFraction: 0.5})

		counts := make(map[string]int)
		for _, name := range []string{PretrainFile, PretrainEvalFile} {
			for _, text := range texts(t, filepath.Join(out, name)) {
				if pretrainTitle(t, text) == "古意" {
					counts[name]++
				}
			}
		}
		assert.Len(t, counts, 1, "seed %d: the two poems titled 古意 are split %v", seed, counts)
	}
}

func TestPrepareOutputReadableByData(t *testing.T) {
	out, stats := prepareFixture(t, Options{IncludeCi: true})

	for _, file := range stats.Files {
		path := filepath.Join(out, file.Name)
		records := readRecords(t, path)
		assert.Len(t, records, file.Records, file.Name)

		info, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, file.Bytes, info.Size(), file.Name)
	}
}

func TestPrepareMaxPoemsSelectsPrefix(t *testing.T) {
	_, small := prepareFixture(t, Options{MaxPoems: 5, Seed: 3})
	assert.Equal(t, 5, small.Tang.Selected)
	assert.Equal(t, 14, small.Tang.Eligible)

	// A smaller cap keeps a subset of the poems of a larger one, because each poem's key
	// depends only on the poem and the seed.
	smallOut, _ := prepareFixture(t, Options{MaxPoems: 5, Seed: 3, EvalFraction: 0.5})
	largeOut, _ := prepareFixture(t, Options{MaxPoems: 10, Seed: 3, EvalFraction: 0.5})
	large := make(map[string]bool)
	for _, name := range []string{PretrainFile, PretrainEvalFile} {
		for _, text := range texts(t, filepath.Join(largeOut, name)) {
			large[text] = true
		}
	}
	for _, name := range []string{PretrainFile, PretrainEvalFile} {
		for _, text := range texts(t, filepath.Join(smallOut, name)) {
			assert.True(t, large[text], "%q selected with MaxPoems 5 but not 10", text)
		}
	}
}

func TestPrepareWithoutCi(t *testing.T) {
	out, stats := prepareFixture(t, Options{})

	assert.Equal(t, SourceStats{}, stats.Ci)
	assertNoneContains(t, outputContents(t, out), "为词牌", "ci prompt without IncludeCi")
}

func TestPrepareNumPrompts(t *testing.T) {
	out, stats := prepareFixture(t, Options{IncludeCi: true, EvalFraction: 0.5, NumPrompts: 3})

	prompts := texts(t, filepath.Join(out, PromptsFile))
	assert.Len(t, prompts, 3)
	assert.Equal(t, 3, stats.Files[4].Records)
	assert.True(t, strings.HasPrefix(prompts[0], "写一首题为《"), "first prompt %q", prompts[0])
	assert.True(t, strings.HasPrefix(prompts[1], "以《"), "second prompt %q", prompts[1])
	assert.True(t, strings.HasPrefix(prompts[2], "请用白话解释这首诗："), "third prompt %q", prompts[2])
}

func TestPrepareAcceptsDistFolder(t *testing.T) {
	a, _ := prepareFixture(t, Options{})
	b := t.TempDir()
	_, err := Prepare(filepath.Join(fixtureDir, "dist"), b, Options{})
	require.NoError(t, err)

	for _, name := range outputNames {
		want, err := os.ReadFile(filepath.Join(a, name))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(b, name))
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), name)
	}
}

// copyFixture copies the fixture into a temporary folder that a test may damage.
func copyFixture(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	require.NoError(t, os.CopyFS(dst, os.DirFS(fixtureDir)))
	return dst
}

func TestPrepareErrorNamesFileAndRecord(t *testing.T) {
	src := copyFixture(t)
	path := filepath.Join(src, "dist", "quantangshi", "poet.tang.1000.json")
	bad := `[{"title": "潼關口號", "author": "明皇帝", "paragraphs": ["河曲回千里，關門限二京。"], "id": "a"},
	         {"title": "傀儡吟", "author": "明皇帝", "paragraphs": "刻木牽絲作老翁", "id": "b"}]`
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o644))

	_, err := Prepare(src, t.TempDir(), Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "record 2")
	assert.Contains(t, err.Error(), "paragraphs")
}

func TestPrepareErrorOnTruncatedFile(t *testing.T) {
	src := copyFixture(t)
	path := filepath.Join(src, "dist", "shuimotangshi", "shuimotangshi.json")
	content, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, content[:len(content)/2], 0o644))

	_, err = Prepare(src, t.TempDir(), Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "record ")
}

func TestPrepareErrorOnFlaggedRecordWithoutID(t *testing.T) {
	src := copyFixture(t)
	path := filepath.Join(src, "dist", "quantangshi", "error", "poet.tang.0.json")
	require.NoError(t, os.WriteFile(path, []byte(`[{"title": "守歲"}]`), 0o644))

	_, err := Prepare(src, t.TempDir(), Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+": record 1: missing \"id\"")
}

func TestPrepareErrorOnMissingFolders(t *testing.T) {
	_, err := Prepare(t.TempDir(), t.TempDir(), Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no quantangshi folder")

	src := copyFixture(t)
	require.NoError(t, os.RemoveAll(filepath.Join(src, "dist", "quantangshi", "error")))
	_, err = Prepare(src, t.TempDir(), Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "error")

	src = copyFixture(t)
	require.NoError(t, os.RemoveAll(filepath.Join(src, "dist", "songci")))
	_, err = Prepare(src, t.TempDir(), Options{})
	require.NoError(t, err, "songci/ is read only with IncludeCi")
	_, err = Prepare(src, t.TempDir(), Options{IncludeCi: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "songci")
}

func TestPrepareInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"negative MaxPoems", Options{MaxPoems: -1}},
		{"negative MaxChars", Options{MaxChars: -1}},
		{"negative EvalFraction", Options{EvalFraction: -0.1}},
		{"EvalFraction of 1", Options{EvalFraction: 1}},
		{"no train title", Options{EvalFraction: 0.99}},
		{"no poem within MaxChars", Options{MaxChars: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			_, err := Prepare(fixtureDir, out, tt.opts)
			assert.Error(t, err)
			_, statErr := os.Stat(filepath.Join(out, PretrainFile))
			assert.True(t, os.IsNotExist(statErr), "a failed run wrote %s", PretrainFile)
		})
	}
}

func TestPrepareLeavesNoTemporaryFiles(t *testing.T) {
	out, _ := prepareFixture(t, Options{})
	entries, err := os.ReadDir(out)
	require.NoError(t, err)

	var names []string
	for _, entry := range entries {
		names = append(names, entry.Name())
	}
	assert.ElementsMatch(t, outputNames, names)
}

func TestListNumberedSortsByNumber(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"ci.song.2019y.json", "ci.song.10000.json", "ci.song.2000.json", "ci.song.0.json", "author.song.json"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("[]"), 0o644))
	}

	paths, err := listNumbered(dir, "ci.song.")
	require.NoError(t, err)
	var names []string
	for _, path := range paths {
		names = append(names, filepath.Base(path))
	}
	assert.Equal(t, []string{"ci.song.0.json", "ci.song.2000.json", "ci.song.10000.json", "ci.song.2019y.json"}, names)
}

// TestPrepareFetchedCorpus runs Prepare on the corpus that scripts/fetch-demo-data.sh
// unpacks. Set RINGTUNE_DEMO_CORPUS to its folder to run it.
func TestPrepareFetchedCorpus(t *testing.T) {
	src := os.Getenv("RINGTUNE_DEMO_CORPUS")
	if src == "" {
		t.Skip("RINGTUNE_DEMO_CORPUS is not set; set it to the folder printed by scripts/fetch-demo-data.sh")
	}
	out := t.TempDir()
	stats, err := Prepare(src, out, Options{IncludeCi: true})
	require.NoError(t, err)

	assert.Equal(t, DefaultMaxPoems, stats.Tang.Selected)
	assert.Equal(t, DefaultMaxCi, stats.Ci.Selected)
	assert.Positive(t, stats.Paraphrase.Selected)
	for _, file := range stats.Files {
		assert.Len(t, readRecords(t, filepath.Join(out, file.Name)), file.Records, file.Name)
		t.Logf("%s: %d records, %d bytes", file.Name, file.Records, file.Bytes)
	}
	t.Logf("Tang %+v", stats.Tang)
	t.Logf("Ci %+v", stats.Ci)
	t.Logf("Paraphrase %+v", stats.Paraphrase)
}
