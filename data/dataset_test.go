package data_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/tokenizer"
)

func load(t *testing.T, path string, opts data.Options) (*data.Dataset, *logBuffer) {
	t.Helper()
	logger, logs := newTestLogger()
	opts.Logger = logger
	ds, err := data.Load(context.Background(), path, tinyTokenizer(t), opts)
	require.NoError(t, err)
	return ds, logs
}

func chatLine(user, assistant string) string {
	return fmt.Sprintf(`{"messages": [{"role": "user", "content": %q}, {"role": "assistant", "content": %q}]}`, user, assistant)
}

func TestLoadPlainTextPacksByDefault(t *testing.T) {
	path := writeFile(t, "corpus.txt", "First document.\nStill first.\n\nSecond one.\n\nThird.\n\n\nFourth and last.\n")

	ds, _ := load(t, path, data.Options{MaxSeqLen: 64})

	assert.Equal(t, data.FormatText, ds.Format)
	assert.True(t, ds.Train.Packed())
	assert.Nil(t, ds.Eval)
	require.Len(t, ds.Files, 1)
	assert.Equal(t, data.FileStats{Path: path, Format: data.FormatText, Records: 4, Examples: 4, Skipped: map[data.ErrorKind]int{}}, ds.Files[0])
	assert.Equal(t, 1, ds.Train.Len(), "four short documents share one row")
	row := ds.Train.Row(0)
	require.Len(t, row.Starts, 4)
	pad := tinyTokenizer(t).Pad()
	for k := range row.Starts {
		end := row.Length
		if k+1 < len(row.Starts) {
			end = int(row.Starts[k+1])
		}
		assert.Equal(t, pad, row.IDs[end-1], "document %d ends with <|endoftext|>", k)
		assert.Equal(t, int32(data.IgnoreIndex), row.Targets[end-1], "document %d does not predict the next one", k)
	}
}

func TestLoadChatUnpackedByDefault(t *testing.T) {
	path := writeFile(t, "chat.jsonl", jsonl(chatLine("hi", "hello"), chatLine("2+2?", "4"), chatLine("name?", "ringtune")))

	unpacked, _ := load(t, path, data.Options{MaxSeqLen: 128})
	packed, _ := load(t, path, data.Options{MaxSeqLen: 128, Packing: data.PackingOn})
	textUnpacked, _ := load(t, writeFile(t, "c.txt", "a\n\nb\n"), data.Options{MaxSeqLen: 128, Packing: data.PackingOff})

	assert.False(t, unpacked.Train.Packed())
	assert.Equal(t, 3, unpacked.Train.Len())
	assert.True(t, packed.Train.Packed())
	assert.Equal(t, 1, packed.Train.Len())
	assert.Equal(t, unpacked.Train.Stats().TargetTokens, packed.Train.Stats().TargetTokens, "packing keeps every target")
	assert.Equal(t, 2, textUnpacked.Train.Len())
}

func TestLoadAlpacaThroughChatTemplate(t *testing.T) {
	path := writeFile(t, "alpaca.jsonl", jsonl(`{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "Be exact."}`))
	tok := tinyTokenizer(t)
	wantIDs, wantLabels, err := tok.EncodeChat([]tokenizer.Message{
		msg("system", "Be exact."), msg("user", "Add the numbers.\n\n2 and 3"), msg("assistant", "5"),
	}, tokenizer.ChatOptions{})
	require.NoError(t, err)

	ds, _ := load(t, path, data.Options{MaxSeqLen: 256})

	require.Len(t, ds.Train.Examples(), 1)
	assert.Equal(t, data.FormatAlpaca, ds.Format)
	assert.Equal(t, wantIDs, ds.Train.Examples()[0].IDs)
	assert.Equal(t, wantLabels, ds.Train.Examples()[0].Labels)
}

func TestLoadSkipsInvalidRecords(t *testing.T) {
	path := writeFile(t, "train.jsonl", jsonl(
		chatLine("q1", "a1"),
		`{"messages": [`,
		`{"messages": [{"role": "bot", "content": "x"}]}`,
		`{"messages": [{"role": "user", "content": "no answer"}]}`,
		`not json`,
		chatLine("q2", "a2"),
		`{"messages": [{"role": "user", "content": 5}]}`,
	))

	ds, logs := load(t, path, data.Options{MaxSeqLen: 128, SkipInvalid: true})

	assert.Equal(t, map[data.ErrorKind]int{
		data.KindMalformedJSON: 2,
		data.KindInvalidValue:  1,
		data.KindNoTargets:     1,
		data.KindWrongType:     1,
	}, ds.Files[0].Skipped)
	assert.Equal(t, 5, ds.Files[0].SkippedTotal())
	assert.Equal(t, 7, ds.Files[0].Records)
	assert.Equal(t, 2, ds.Files[0].Examples)
	assert.Equal(t, []int{1, 6}, lines(ds.Train.Examples()))
	assert.Equal(t, 4, strings.Count(logs.String(), "skipping invalid record"), "one warning per kind:\n%s", logs)
	assert.Contains(t, logs.String(), "train.jsonl:2: malformed JSON")
	assert.NotContains(t, logs.String(), "train.jsonl:5:", "the second malformed line is only counted")
	assert.Contains(t, logs.String(), `msg="skipped invalid records"`)
	assert.Contains(t, logs.String(), "by_kind.malformed_json=2")
}

func TestLoadFailsAtFirstInvalidRecord(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{
			name:    "tokenization error before read error",
			content: jsonl(chatLine("q", "a"), `{"messages": [{"role": "user", "content": "only"}]}`, chatLine("q", "a"), `{broken`),
			want:    ":2: the example has no trainable tokens",
		},
		{
			name:    "read error before tokenization error",
			content: jsonl(chatLine("q", "a"), `{broken`, `{"messages": [{"role": "user", "content": "only"}]}`),
			want:    ":2: malformed JSON",
		},
		{
			name:    "unknown role",
			content: jsonl(chatLine("q", "a"), `{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "bot", "content": "x"}]}`),
			want:    `:2: field "messages[2].role": unknown role "bot"; expected system, user, assistant or tool`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "train.jsonl", tt.content)

			_, err := data.Load(context.Background(), path, tinyTokenizer(t), data.Options{MaxSeqLen: 64, Logger: discardLogger()})

			require.Error(t, err)
			assert.Contains(t, err.Error(), path+tt.want)
		})
	}
}

func TestLoadReportsErrorsBeyondFirstChunk(t *testing.T) {
	records := make([]string, 0, 3000)
	for i := range 3000 {
		records = append(records, `{"text": "document `+fmt.Sprint(i)+`"}`)
	}
	records[2500] = `{"text": 7}`
	path := writeFile(t, "big.jsonl", jsonl(records...))

	_, err := data.Load(context.Background(), path, tinyTokenizer(t), data.Options{MaxSeqLen: 64, Logger: discardLogger()})

	assert.EqualError(t, err, path+`:2501: field "text": expected a string, got number`)
}

func TestLoadSameRowsForAnyWorkerCount(t *testing.T) {
	var records []string
	for i := range 2500 {
		records = append(records, fmt.Sprintf(`{"text": "%s"}`, strings.Repeat("word ", 1+i%37)))
	}
	path := writeFile(t, "many.jsonl", jsonl(records...))

	serial, _ := load(t, path, data.Options{MaxSeqLen: 96, Workers: 1})
	parallel, _ := load(t, path, data.Options{MaxSeqLen: 96, Workers: 5})

	require.Equal(t, serial.Train.Len(), parallel.Train.Len())
	assert.Equal(t, serial.Train.Examples(), parallel.Train.Examples())
	for i := range serial.Train.Len() {
		require.Equal(t, serial.Train.RowExamples(i), parallel.Train.RowExamples(i), "row %d", i)
	}
	assert.Equal(t, 2500, serial.Files[0].Examples)
}

func TestLoadCountsAndLogsTruncation(t *testing.T) {
	path := writeFile(t, "train.jsonl", jsonl(
		`{"text": "short"}`,
		`{"text": "`+strings.Repeat("long text ", 20)+`"}`,
		`{"text": "`+strings.Repeat("longer text ", 40)+`"}`,
	))

	ds, logs := load(t, path, data.Options{MaxSeqLen: 16})

	assert.Equal(t, 2, ds.Files[0].Truncated)
	assert.Contains(t, logs.String(), `msg="truncated examples to the maximum sequence length"`)
	assert.Contains(t, logs.String(), "truncated=2 max_seq_len=16")
	for _, ex := range ds.Train.Examples() {
		assert.LessOrEqual(t, len(ex.IDs), 16)
	}
}

func TestLoadEvalFraction(t *testing.T) {
	var records []string
	for i := range 40 {
		records = append(records, chatLine(fmt.Sprintf("question %d", i), fmt.Sprintf("answer %d", i)))
	}
	path := writeFile(t, "chat.jsonl", jsonl(records...))

	ds, _ := load(t, path, data.Options{MaxSeqLen: 128, EvalFraction: 0.25, Seed: 3})
	again, _ := load(t, path, data.Options{MaxSeqLen: 128, EvalFraction: 0.25, Seed: 3})
	other, _ := load(t, path, data.Options{MaxSeqLen: 128, EvalFraction: 0.25, Seed: 4})

	require.NotNil(t, ds.Eval)
	assert.Len(t, ds.Eval.Examples(), 10)
	assert.Len(t, ds.Train.Examples(), 30)
	trainLines := map[int]bool{}
	for _, line := range lines(ds.Train.Examples()) {
		trainLines[line] = true
	}
	for _, line := range lines(ds.Eval.Examples()) {
		assert.False(t, trainLines[line], "line %d is in both splits", line)
	}
	assert.Equal(t, lines(ds.Eval.Examples()), lines(again.Eval.Examples()))
	assert.NotEqual(t, lines(ds.Eval.Examples()), lines(other.Eval.Examples()))
	assert.Equal(t, 40, ds.Files[0].Examples)
}

func TestLoadEvalSplitBeforePacking(t *testing.T) {
	var docs []string
	for i := range 30 {
		docs = append(docs, fmt.Sprintf("document number %d", i))
	}
	path := writeFile(t, "corpus.txt", strings.Join(docs, "\n\n"))

	ds, _ := load(t, path, data.Options{MaxSeqLen: 64, EvalFraction: 0.2, Seed: 1})

	evalLines := map[int]bool{}
	for _, line := range lines(ds.Eval.Examples()) {
		evalLines[line] = true
	}
	for i := range ds.Train.Len() {
		for _, e := range ds.Train.RowExamples(i) {
			assert.False(t, evalLines[ds.Train.Examples()[e].Pos.Line], "train row %d holds an eval example", i)
		}
	}
	assert.True(t, ds.Eval.Packed())
}

func TestLoadEvalFile(t *testing.T) {
	train := writeFile(t, "train.jsonl", jsonl(chatLine("q1", "a1"), chatLine("q2", "a2")))
	eval := writeFile(t, "eval.jsonl", jsonl(chatLine("q3", "a3")))
	textEval := writeFile(t, "eval.jsonl", jsonl(`{"text": "plain"}`))

	ds, _ := load(t, train, data.Options{MaxSeqLen: 128, EvalPath: eval})
	_, err := data.Load(context.Background(), train, tinyTokenizer(t), data.Options{MaxSeqLen: 128, EvalPath: textEval, Logger: discardLogger()})

	require.NotNil(t, ds.Eval)
	assert.Len(t, ds.Train.Examples(), 2)
	assert.Len(t, ds.Eval.Examples(), 1)
	require.Len(t, ds.Files, 2)
	assert.Equal(t, eval, ds.Files[1].Path)
	assert.Equal(t, data.FormatChat, ds.Files[1].Format)
	assert.EqualError(t, err, textEval+`:1: field "messages": missing; expected an array of messages`, "the eval file has the training file's format")
}

func TestLoadRejectsEmptyInput(t *testing.T) {
	empty := writeFile(t, "empty.jsonl", "\n\n")
	allInvalid := writeFile(t, "bad.jsonl", jsonl(`{"messages": 1}`, `oops`))

	_, errEmpty := data.Load(context.Background(), empty, tinyTokenizer(t), data.Options{MaxSeqLen: 64, SkipInvalid: true, Logger: discardLogger()})
	_, errInvalid := data.Load(context.Background(), allInvalid, tinyTokenizer(t), data.Options{MaxSeqLen: 64, SkipInvalid: true, Logger: discardLogger()})

	assert.EqualError(t, errEmpty, empty+": the file contains no records")
	assert.EqualError(t, errInvalid, allInvalid+": no valid examples among 2 records (2 skipped as invalid)")
}

func TestLoadRejectsBadOptions(t *testing.T) {
	path := writeFile(t, "train.jsonl", jsonl(`{"text": "a"}`))
	tests := []struct {
		name string
		opts data.Options
		want string
	}{
		{name: "no sequence length", opts: data.Options{}, want: "invalid maximum sequence length 0; expected at least 2 tokens"},
		{name: "unknown format", opts: data.Options{MaxSeqLen: 8, Format: "csv"}, want: `unknown dataset format "csv"; expected text, alpaca, chat, sharegpt or auto`},
		{name: "unknown packing", opts: data.Options{MaxSeqLen: 8, Packing: "maybe"}, want: `unknown packing mode "maybe"; expected auto, on or off`},
		{name: "eval fraction", opts: data.Options{MaxSeqLen: 8, EvalFraction: 1.5}, want: "invalid eval fraction 1.5; expected 0 (no split) or a number between 0 and 1"},
		{name: "both evals", opts: data.Options{MaxSeqLen: 8, EvalFraction: 0.1, EvalPath: path}, want: "both an eval fraction and an eval file are set; choose one"},
		{name: "eval fraction NaN", opts: data.Options{MaxSeqLen: 8, EvalFraction: math.NaN()}, want: "invalid eval fraction NaN; expected 0 (no split) or a number between 0 and 1"},
		{name: "eval file is training file", opts: data.Options{MaxSeqLen: 8, EvalPath: path}, want: "the eval file " + path + " is the training file; name a separate file or use an eval fraction"},
		{name: "workers", opts: data.Options{MaxSeqLen: 8, Workers: -1}, want: "invalid worker count -1; expected 0 (one per CPU) or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = discardLogger()

			_, err := data.Load(context.Background(), path, tinyTokenizer(t), tt.opts)

			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestLoadStopsWhenCanceled(t *testing.T) {
	path := writeFile(t, "train.jsonl", jsonl(`{"text": "a"}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	_, err := data.Load(ctx, path, tinyTokenizer(t), data.Options{MaxSeqLen: 8, Logger: discardLogger()})

	assert.ErrorIs(t, err, context.Canceled)
}

func TestLoadStopsReadingAfterEarlyError(t *testing.T) {
	records := []string{`{"messages": [{"role": "user", "content": "no answer"}]}`}
	for i := range 5000 {
		records = append(records, chatLine(fmt.Sprint("q", i), "a"))
	}
	path := writeFile(t, "train.jsonl", jsonl(records...))

	_, err := data.Load(context.Background(), path, tinyTokenizer(t), data.Options{MaxSeqLen: 64, Logger: discardLogger()})

	require.Error(t, err)
	assert.Contains(t, err.Error(), path+":1: the example has no trainable tokens")
	goleak.VerifyNone(t)
}
