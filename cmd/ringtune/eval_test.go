package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

// evalTestRecords are plain text records of different lengths. Two of them
// are longer than 24 tokens of the tiny tokenizer, so --seq-len 24 truncates
// them.
var evalTestRecords = []string{
	"The quick brown fox jumps over the lazy dog.",
	"Hello world",
	"A model that predicts the next token well has a low loss.",
	"Short",
	"Perplexity is the exponential of the mean cross-entropy, so a uniform guess over a vocabulary of one thousand tokens gives a perplexity of one thousand.",
}

// writeEvalData writes records as {"text": ...} JSON Lines to a new file.
func writeEvalData(t *testing.T, records []string) string {
	t.Helper()
	var b strings.Builder
	for _, text := range records {
		line, err := json.Marshal(map[string]string{"text": text})
		require.NoError(t, err)
		b.Write(line)
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "eval.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	return path
}

// runEvalJSON runs eval with --json and returns the decoded object,
// checking that stdout contains exactly it with the documented keys.
func runEvalJSON(t *testing.T, args ...string) evalOutput {
	t.Helper()
	stdout, stderr, err := runCLI(t, append([]string{"eval", "--json"}, args...)...)
	require.NoError(t, err, stderr)

	var keys map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &keys), stdout)
	assert.ElementsMatch(t, []string{"loss", "perplexity", "target_tokens", "examples", "rows"}, keysOf(keys))
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	var out evalOutput
	require.NoError(t, dec.Decode(&out))
	assert.False(t, dec.More(), "stdout holds more than one JSON value")
	return out
}

// libraryLoss computes the mean loss per target token with packages data and
// model directly, one row per batch, for comparison with the command.
func libraryLoss(t *testing.T, modelDir, dataPath string, seqLen int, packing data.Packing) (loss float64, targets, rows int) {
	t.Helper()
	ds, err := data.Load(t.Context(), dataPath, loadTinyTokenizer(t), data.Options{MaxSeqLen: seqLen, Packing: packing, Workers: 1})
	require.NoError(t, err)
	be, err := cpu.New(cpu.Options{})
	require.NoError(t, err)
	defer be.Close()
	m, err := model.New(be, generateTestConfig, model.Options{MaxBatch: 1, MaxSeq: seqLen})
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.LoadBase(modelDir))

	var sum float64
	for i := range ds.Train.Len() {
		batch, err := data.NewBatch(ds.Train, []int{i})
		require.NoError(t, err)
		rowSum, count, err := m.Loss(batch)
		require.NoError(t, err)
		sum += rowSum
		targets += count
	}
	require.Positive(t, targets)
	return sum / float64(targets), targets, ds.Train.Len()
}

func assertRelativeClose(t *testing.T, want, got, tolerance float64, msg string) {
	t.Helper()
	assert.LessOrEqual(t, math.Abs(got-want), tolerance*math.Abs(want), "%s: want %v, got %v", msg, want, got)
}

func TestEvalJSON(t *testing.T) {
	dir := newGenerateModelDir(t)
	path := writeEvalData(t, evalTestRecords)

	for _, tc := range []struct {
		flag    string
		packing data.Packing
	}{{"--packing", data.PackingOn}, {"--packing=false", data.PackingOff}} {
		packing := tc.packing
		args := []string{"--model", dir, "--data", path, "--seq-len", "24", "--batch", "2", tc.flag}
		out := runEvalJSON(t, args...)

		wantLoss, wantTargets, wantRows := libraryLoss(t, dir, path, 24, packing)
		assertRelativeClose(t, wantLoss, out.Loss, 1e-6, "loss against model.Loss, packing "+string(packing))
		assert.Equal(t, wantTargets, out.TargetTokens, "packing %s", packing)
		assert.Equal(t, wantRows, out.Rows, "packing %s", packing)
		assert.Equal(t, len(evalTestRecords), out.Examples, "packing %s", packing)
		assertRelativeClose(t, math.Exp(out.Loss), out.Perplexity, 1e-12, "perplexity is exp(loss)")
		// The random test weights spread the logits over a few units, so the loss
		// stays within a few nats of a uniform guess over 1000 tokens, ln 1000 ≈ 6.9.
		assert.InDelta(t, math.Log(1000), out.Loss, 3, "packing %s", packing)
	}
}

func TestEvalBatchSizeKeepsLoss(t *testing.T) {
	dir := newGenerateModelDir(t)
	path := writeEvalData(t, evalTestRecords)
	args := []string{"--model", dir, "--data", path, "--seq-len", "24", "--packing=false"}

	oneRow := runEvalJSON(t, append(args, "--batch", "1")...)
	threeRows := runEvalJSON(t, append(args, "--batch", "3")...)
	allRows := runEvalJSON(t, append(args, "--batch", "64")...)
	assertRelativeClose(t, oneRow.Loss, threeRows.Loss, 1e-6, "--batch 3 against --batch 1")
	assertRelativeClose(t, oneRow.Loss, allRows.Loss, 1e-6, "--batch 64 against --batch 1")
	assert.Equal(t, oneRow.TargetTokens, threeRows.TargetTokens)
}

func TestEvalText(t *testing.T) {
	dir := newGenerateModelDir(t)
	path := writeEvalData(t, evalTestRecords)
	stdout, stderr, err := runCLI(t, "eval", "--model", dir, "--data", path, "--seq-len", "24", "--packing=false")
	require.NoError(t, err, stderr)

	out := runEvalJSON(t, "--model", dir, "--data", path, "--seq-len", "24", "--packing=false")
	for _, want := range []string{
		fmt.Sprintf("loss           %.6f (mean cross-entropy per target token, nats)", out.Loss),
		fmt.Sprintf("perplexity     %.4f", out.Perplexity),
		fmt.Sprintf("target tokens  %d", out.TargetTokens),
		"examples       5 (2 truncated to --seq-len 24)",
		"rows           5",
	} {
		assert.Contains(t, stdout, want)
	}
}

// TestEvalAdapter checks that an adapter changes the loss, and that applying
// it in the projections gives the loss of the model that peft.Merge writes.
func TestEvalAdapter(t *testing.T) {
	base := newGenerateModelDir(t)
	path := writeEvalData(t, evalTestRecords)
	args := []string{"--data", path, "--seq-len", "24", "--batch", "2"}
	plain := runEvalJSON(t, append(args, "--model", base)...)

	for _, rsLoRA := range []bool{false, true} {
		adapter := t.TempDir()
		writeGenerateAdapter(t, adapter, rsLoRA)
		merged := filepath.Join(t.TempDir(), "merged")
		_, err := peft.Merge(t.Context(), base, adapter, merged, peft.MergeOptions{})
		require.NoError(t, err)

		withAdapter := runEvalJSON(t, append(args, "--model", base, "--adapter", adapter)...)
		assert.Greater(t, math.Abs(withAdapter.Loss-plain.Loss), 1e-3, "rs-LoRA %t: the adapter changes the loss", rsLoRA)
		assert.Equal(t, plain.TargetTokens, withAdapter.TargetTokens, "rs-LoRA %t", rsLoRA)
		mergedModel := runEvalJSON(t, append(args, "--model", merged)...)
		assertRelativeClose(t, mergedModel.Loss, withAdapter.Loss, 1e-5, "adapter against the merged model")
	}
}

func TestEvalAlpacaFormat(t *testing.T) {
	dir := newGenerateModelDir(t)
	path := filepath.Join(t.TempDir(), "alpaca.jsonl")
	records := `{"instruction": "Name a colour.", "output": "Blue."}
{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
`
	require.NoError(t, os.WriteFile(path, []byte(records), 0o644))

	detected := runEvalJSON(t, "--model", dir, "--data", path, "--seq-len", "64")
	named := runEvalJSON(t, "--model", dir, "--data", path, "--seq-len", "64", "--format", "alpaca")
	assert.Equal(t, detected, named)
	assert.Equal(t, 2, named.Examples)
	assert.Equal(t, 2, named.Rows, "conversations are not packed by default")
	assert.Positive(t, named.TargetTokens)

	_, stderr, err := runCLI(t, "eval", "--model", dir, "--data", path, "--seq-len", "64", "--format", "chat")
	require.Error(t, err)
	assert.Contains(t, stderr, "alpaca.jsonl:1")
}

func TestEvalErrors(t *testing.T) {
	dir := newGenerateModelDir(t)
	path := writeEvalData(t, evalTestRecords)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte("{\"text\": \"fine\"}\n{\"text\": \n"), 0o644))
	noConfig := t.TempDir()

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--data", path}, `Required flag "model" not set`},
		{[]string{"--model", dir}, `Required flag "data" not set`},
		{[]string{"--model", dir, "--data", ""}, "--data is empty"},
		{[]string{"--model", noConfig, "--data", path}, "has no config.json"},
		{[]string{"--model", dir, "--data", path, "--format", "csv"}, `--format: unknown dataset format "csv"`},
		{[]string{"--model", dir, "--data", path, "--seq-len", "1"}, "--seq-len is 1: want at least 2"},
		{[]string{"--model", dir, "--data", path, "--seq-len", "512"}, "--seq-len 512 is above max_position_embeddings 256"},
		{[]string{"--model", dir, "--data", path, "--batch", "0"}, "--batch is 0: want at least 1"},
		{[]string{"--model", dir, "--data", path, "--adapter", noConfig}, "adapter_config.json"},
		{[]string{"--model", dir, "--data", filepath.Join(noConfig, "missing.jsonl")}, "missing.jsonl"},
		{[]string{"--model", dir, "--data", bad}, "bad.jsonl:2"},
		{[]string{"--model", dir, "--data", path, "extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		_, stderr, err := runCLI(t, append([]string{"eval"}, tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}
