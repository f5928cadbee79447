package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
	"github.com/ringtune/ringtune/tokenizer"
)

// tinyTokenizerDir holds the committed test tokenizer, vocabulary 1000.
const tinyTokenizerDir = "../../tokenizer/testdata/tiny"

// generateTestConfig is a random Qwen3 small enough to generate in
// milliseconds. Weights of standard deviation 0.3 spread the logits over a
// few units, so greedy decoding has no near ties that float32 rounding could
// flip between the adapter and merged-weights paths.
var generateTestConfig = model.Config{
	VocabSize: 1000, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2,
	NumHeads: 4, NumKVHeads: 2, HeadDim: 8, RMSNormEps: 1e-6, RopeTheta: 10000,
	MaxPositionEmbeddings: 256, TieWordEmbeddings: true, InitializerRange: 0.3,
}

// writeGenerateModel writes a random model with cfg and, when withTokenizer
// is set, the tiny tokenizer's files to dir.
func writeGenerateModel(t *testing.T, dir string, cfg model.Config, withTokenizer bool) {
	t.Helper()
	be, err := cpu.New(cpu.Options{Workers: 1})
	require.NoError(t, err)
	defer be.Close()
	m, err := model.New(be, cfg, model.Options{MaxBatch: 1, MaxSeq: 1})
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.InitRandom(5))
	require.NoError(t, m.SaveBase(dir))
	if !withTokenizer {
		return
	}
	for _, name := range []string{tokenizer.TokenizerFile, tokenizer.TokenizerConfigFile} {
		data, err := os.ReadFile(filepath.Join(tinyTokenizerDir, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
}

// writeGenerateAdapter writes a rank-4 adapter on the attention projections
// with random matrices large enough to change the greedy tokens.
func writeGenerateAdapter(t *testing.T, dir string, rsLoRA bool) {
	t.Helper()
	cfg := peft.Config{Rank: 4, Alpha: 8, TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, UseRSLoRA: rsLoRA}
	a, err := peft.NewAdapter(cfg, generateTestConfig)
	require.NoError(t, err)
	for i := range a.Tensors {
		data := a.Tensors[i].Data
		for j := range data {
			data[j] = float32((j*7919+i*104729)%1000)/1000 - 0.5
		}
	}
	require.NoError(t, peft.Write(dir, a))
}

// newGenerateModelDir writes the standard test model with its tokenizer to a
// new temporary directory.
func newGenerateModelDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeGenerateModel(t, dir, generateTestConfig, true)
	return dir
}

// runGenerateJSON runs generate with --json and returns the decoded object,
// checking that stdout holds exactly it with the documented keys.
func runGenerateJSON(t *testing.T, args ...string) generateOutput {
	t.Helper()
	stdout, stderr, err := runCLI(t, append([]string{"generate", "--json"}, args...)...)
	require.NoError(t, err, stderr)

	var keys map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &keys), stdout)
	assert.ElementsMatch(t, []string{"text", "ids", "prompt_tokens", "new_tokens", "tokens_per_s", "prefill_s", "stop_reason"}, keysOf(keys))
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	var out generateOutput
	require.NoError(t, dec.Decode(&out))
	assert.False(t, dec.More(), "stdout holds more than one JSON value")
	return out
}

func loadTinyTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(tinyTokenizerDir)
	require.NoError(t, err)
	return tok
}

// libraryGreedy generates with package model directly, for comparison with
// the command.
func libraryGreedy(t *testing.T, dir string, prompt []int32, maxNew int, stops []int32) []int32 {
	t.Helper()
	be, err := cpu.New(cpu.Options{})
	require.NoError(t, err)
	defer be.Close()
	m, err := model.New(be, generateTestConfig, model.Options{MaxBatch: 1, MaxSeq: 1})
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.LoadBase(dir))
	d, err := model.NewDecoder(m, model.DecoderOptions{MaxLen: len(prompt) + maxNew})
	require.NoError(t, err)
	defer d.Close()
	gen, err := d.Generate(prompt, model.GenerateConfig{MaxNewTokens: maxNew, StopTokens: stops}, nil)
	require.NoError(t, err)
	return gen.IDs
}

func TestGenerateJSON(t *testing.T) {
	dir := newGenerateModelDir(t)
	tok := loadTinyTokenizer(t)
	const prompt, maxNew = "The quick brown fox", 12
	out := runGenerateJSON(t, "--model", dir, "--prompt", prompt, "--max-new-tokens", "12")

	promptIDs := tok.Encode(prompt)
	assert.Equal(t, len(promptIDs), out.PromptTokens)
	assert.Equal(t, len(out.IDs), out.NewTokens)
	assert.Greater(t, out.TokensPerSec, 0.0)
	assert.Greater(t, out.PrefillSec, 0.0)
	stops := stopTokens(tok)
	assert.ElementsMatch(t, []int32{976, 974}, stops, "<|im_end|> (the EOS) and <|endoftext|>")
	text := out.IDs
	switch out.StopReason {
	case "length":
		assert.Len(t, out.IDs, maxNew)
	case "stop":
		assert.Contains(t, stops, out.IDs[len(out.IDs)-1])
		text = text[:len(text)-1]
	default:
		t.Fatalf("stop_reason %q is neither length nor stop", out.StopReason)
	}
	assert.Equal(t, tok.DecodeSkipSpecial(text), out.Text)
	assert.Equal(t, libraryGreedy(t, dir, promptIDs, maxNew, stops), out.IDs, "the command generates what package model does")

	again := runGenerateJSON(t, "--model", dir, "--prompt", prompt, "--max-new-tokens", "12")
	assert.Equal(t, out.IDs, again.IDs, "greedy decoding repeats")
}

func TestGenerateStreamsText(t *testing.T) {
	dir := newGenerateModelDir(t)
	out := runGenerateJSON(t, "--model", dir, "--prompt", "Hello", "--max-new-tokens", "20")
	stdout, stderr, err := runCLI(t, "generate", "--model", dir, "--prompt", "Hello", "--max-new-tokens", "20")
	require.NoError(t, err, stderr)
	assert.Equal(t, out.Text+"\n", stdout)
}

func TestGeneratePromptSources(t *testing.T) {
	dir := newGenerateModelDir(t)
	tok := loadTinyTokenizer(t)

	thinking := false
	chat, err := tok.ApplyChatTemplate([]tokenizer.Message{
		{Role: tokenizer.RoleSystem, Content: "Be brief."},
		{Role: tokenizer.RoleUser, Content: "What is a ring?"},
	}, tokenizer.ChatOptions{AddGenerationPrompt: true, EnableThinking: &thinking})
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(chat, "<|im_start|>assistant\n<think>\n\n</think>\n\n"), chat)
	out := runGenerateJSON(t, "--model", dir, "--chat", "--system", "Be brief.", "--no-thinking", "--prompt", "What is a ring?", "--max-new-tokens", "4")
	assert.Equal(t, len(tok.Encode(chat)), out.PromptTokens, "chat prompt tokens")

	fromFlag := runGenerateJSON(t, "--model", dir, "--prompt", "piped text", "--max-new-tokens", "5")
	cmd := exec.Command(ringtuneBin, "generate", "--json", "--model", dir, "--max-new-tokens", "5")
	cmd.Env = append(os.Environ(), "RINGTUNE_LOG_LEVEL=warn")
	cmd.Stdin = strings.NewReader("piped text\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	var fromStdin generateOutput
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &fromStdin))
	assert.Equal(t, fromFlag.IDs, fromStdin.IDs, "a prompt on stdin, less its final line break, equals the same --prompt")
	assert.Equal(t, fromFlag.PromptTokens, fromStdin.PromptTokens)

	tokDir := t.TempDir()
	writeGenerateModel(t, tokDir, generateTestConfig, false)
	separate := runGenerateJSON(t, "--model", tokDir, "--tokenizer", tinyTokenizerDir, "--prompt", "piped text", "--max-new-tokens", "5")
	assert.Equal(t, fromFlag.IDs, separate.IDs, "--tokenizer from another directory")
}

func TestGenerateSampling(t *testing.T) {
	dir := newGenerateModelDir(t)
	args := []string{"--model", dir, "--prompt", "Once upon a time", "--max-new-tokens", "16"}
	sample := func(extra ...string) []int32 {
		return runGenerateJSON(t, append(args, extra...)...).IDs
	}
	greedy := sample()
	first := sample("--temperature", "1", "--top-p", "0.9", "--seed", "3")
	assert.Equal(t, first, sample("--temperature", "1", "--top-p", "0.9", "--seed", "3"), "same seed")
	assert.NotEqual(t, first, sample("--temperature", "1", "--top-p", "0.9", "--seed", "4"), "seeds 3 and 4")
	assert.NotEqual(t, greedy, first, "sampling against greedy")
	assert.Equal(t, greedy, sample("--temperature", "1", "--top-p", "1e-9", "--seed", "5"), "a nucleus of one token is greedy")
}

// TestGenerateAdapter checks that an adapter changes the tokens, and that
// applying it in the projections, merging it at load time and running a
// model merged by peft.Merge (what `ringtune merge` runs) generate the same
// tokens.
func TestGenerateAdapter(t *testing.T) {
	base := newGenerateModelDir(t)
	args := []string{"--model", base, "--prompt", "The adapter", "--max-new-tokens", "16"}
	plain := runGenerateJSON(t, args...).IDs

	for _, rsLoRA := range []bool{false, true} {
		adapter := t.TempDir()
		writeGenerateAdapter(t, adapter, rsLoRA)
		merged := filepath.Join(t.TempDir(), "merged")
		_, err := peft.Merge(t.Context(), base, adapter, merged, peft.MergeOptions{})
		require.NoError(t, err)

		withAdapter := runGenerateJSON(t, append(args, "--adapter", adapter)...).IDs
		assert.NotEqual(t, plain, withAdapter, "rs-LoRA %t: the adapter changes the tokens", rsLoRA)
		mergedAtLoad := runGenerateJSON(t, append(args, "--adapter", adapter, "--merge-adapter")...).IDs
		assert.Equal(t, withAdapter, mergedAtLoad, "rs-LoRA %t: --merge-adapter", rsLoRA)
		mergedModel := runGenerateJSON(t, "--model", merged, "--prompt", "The adapter", "--max-new-tokens", "16").IDs
		assert.Equal(t, withAdapter, mergedModel, "rs-LoRA %t: model written by peft.Merge", rsLoRA)
	}
}

func TestGenerateErrors(t *testing.T) {
	dir := newGenerateModelDir(t)
	noConfig := t.TempDir()
	noWeights := t.TempDir()
	require.NoError(t, model.SaveConfig(noWeights, generateTestConfig, "float32"))
	noTokenizer := t.TempDir()
	writeGenerateModel(t, noTokenizer, generateTestConfig, false)
	smallVocab := t.TempDir()
	small := generateTestConfig
	small.VocabSize = 500
	writeGenerateModel(t, smallVocab, small, true)

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--prompt", "x"}, `Required flag "model" not set`},
		{[]string{"--model", "/nonexistent/model", "--prompt", "x"}, "--model /nonexistent/model: directory not found"},
		{[]string{"--model", filepath.Join(dir, "config.json"), "--prompt", "x"}, "is a file: pass the model directory"},
		{[]string{"--model", noConfig, "--prompt", "x"}, "has no config.json"},
		{[]string{"--model", noWeights, "--tokenizer", tinyTokenizerDir, "--prompt", "x"}, "safetensors"},
		{[]string{"--model", noTokenizer, "--prompt", "x"}, "has no tokenizer.json: pass the tokenizer's directory with --tokenizer DIR"},
		{[]string{"--model", dir, "--tokenizer", noConfig, "--prompt", "x"}, "--tokenizer " + noConfig + " has no tokenizer.json"},
		{[]string{"--model", smallVocab, "--prompt", "x"}, "has ids up to 999, but the model's vocab_size is 500"},
		{[]string{"--model", dir, "--prompt", ""}, "the prompt is empty"},
		{[]string{"--model", dir}, "the prompt is empty"}, // stdin is empty
		{[]string{"--model", dir, "--prompt", "x", "--max-new-tokens", "0"}, "--max-new-tokens is 0"},
		{[]string{"--model", dir, "--prompt", "x", "--temperature", "-1"}, "--temperature -1 is invalid"},
		{[]string{"--model", dir, "--prompt", "x", "--top-p", "0"}, "--top-p 0 is invalid"},
		{[]string{"--model", dir, "--prompt", "x", "--top-p", "1.5"}, "--top-p 1.5 is invalid"},
		{[]string{"--model", dir, "--prompt", "x", "--no-thinking"}, "--no-thinking needs --chat"},
		{[]string{"--model", dir, "--prompt", "x", "--system", "s"}, "--system needs --chat"},
		{[]string{"--model", dir, "--prompt", "x", "--merge-adapter"}, "--merge-adapter needs --adapter DIR"},
		{[]string{"--model", dir, "--prompt", "x", "--adapter", noConfig}, "adapter_config.json"},
		{[]string{"--model", dir, "extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		_, stderr, err := runCLI(t, append([]string{"generate"}, tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}

// TestTextStreamHoldsSplitCharacters feeds tokens one at a time and checks
// that each write is whole characters and that the writes join to the
// decoded text.
func TestTextStreamHoldsSplitCharacters(t *testing.T) {
	tok := loadTinyTokenizer(t)
	im, ok := tok.TokenID("<|im_start|>")
	require.True(t, ok)
	cases := []struct {
		name string
		ids  []int32
	}{
		{"multi-byte characters", tok.Encode("héllo wörld — 日本語 🙂 ok")},
		{"special tokens between", append(append(tok.Encode("née"), im), tok.Encode("€ fin")...)},
		{"invalid byte mid-stream", tok.Encode("a\x80b\xe2\x82c")},
		{"unfinished character at the end", tok.Encode("abc\xe2\x82")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			split := false
			for _, id := range tc.ids {
				split = split || !utf8.Valid(tok.DecodeBytes([]int32{id}))
			}
			require.True(t, split, "some token of %q holds part of a character", tok.Decode(tc.ids))

			var writes []string
			w := writerFunc(func(p []byte) (int, error) { writes = append(writes, string(p)); return len(p), nil })
			s := &textStream{tok: tok, w: w}
			for _, id := range tc.ids {
				require.NoError(t, s.add(id))
			}
			require.NoError(t, s.flush())
			for i, piece := range writes {
				assert.True(t, utf8.ValidString(piece), "write %d %q", i, piece)
			}
			assert.Equal(t, tok.DecodeSkipSpecial(tc.ids), strings.Join(writes, ""))
		})
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestGenerateRejectsMismatchedConfig(t *testing.T) {
	dir := newGenerateModelDir(t)
	path := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	// A config for a model a thousand times larger than the weights: the command must
	// fail on the shapes before it allocates the model.
	text := strings.Replace(string(raw), `"hidden_size": 32`, `"hidden_size": 32768`, 1)
	require.NotEqual(t, string(raw), text)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))

	_, stderr, err := runCLI(t, "generate", "--model", dir, "--prompt", "hi")
	require.Error(t, err)
	assert.Contains(t, stderr, "but the config gives")
	assert.NotContains(t, stderr, "goroutine", "no stack trace")
}

func TestGenerateCapsNewTokens(t *testing.T) {
	dir := newGenerateModelDir(t)
	out := runGenerateJSON(t, "--model", dir, "--prompt", "hi", "--max-new-tokens", "9223372036854775807")
	assert.LessOrEqual(t, out.PromptTokens+out.NewTokens, generateTestConfig.MaxPositionEmbeddings)
}
