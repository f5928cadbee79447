package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// minimalTokenizerJSON is a valid Qwen-style tokenizer.json with a four-token vocabulary.
const minimalTokenizerJSON = `{
  "added_tokens": [{"id": 3, "content": "<|endoftext|>", "special": true}],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": ` + "QWEN_PATTERN" + `}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
  "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}
}`

func minimalJSON(t testing.TB) string {
	quoted, err := jsonString(qwen2SplitPattern)
	require.NoError(t, err)
	return strings.Replace(minimalTokenizerJSON, "QWEN_PATTERN", quoted, 1)
}

func TestParseMinimal(t *testing.T) {
	tok, err := Parse([]byte(minimalJSON(t)), "tokenizer.json", nil, "")
	require.NoError(t, err)
	assert.Equal(t, []int32{2, 0, 3}, tok.Encode("aba<|endoftext|>"))
	assert.Equal(t, int32(-1), tok.EOS(), "no tokenizer_config.json, no eos_token")
}

func TestParseMergesStringForm(t *testing.T) {
	text := strings.Replace(minimalJSON(t), `[["a", "b"]]`, `["a b"]`, 1)
	tok, err := Parse([]byte(text), "tokenizer.json", nil, "")
	require.NoError(t, err)
	assert.Equal(t, []int32{2}, tok.Encode("ab"))
}

func TestParseErrors(t *testing.T) {
	base := minimalJSON(t)
	cases := []struct {
		name, old, new, want string
	}{
		{"invalid JSON", `"model"`, `"model`, "invalid JSON"},
		{"model type", `"type": "BPE"`, `"type": "Unigram"`, `model.type "Unigram" is not supported`},
		{"normalizer", `{"type": "NFC"}`, `{"type": "NFKC"}`, "normalizer [NFKC] is not supported"},
		{"pattern", `"behavior": "Isolated"`, `"behavior": "Removed"`, `Split behavior "Removed"`},
		{"merge missing token", `[["a", "b"]]`, `[["a", "c"]]`, `model.merges[0] ("a", "c") names a token missing`},
		{"merge arity", `[["a", "b"]]`, `[["a", "b", "c"]]`, "model.merges[0]: expected 2 tokens"},
		{"negative id", `"ab": 2`, `"ab": -2`, `model.vocab["ab"] = -2 is out of range`},
		{"huge id", `"ab": 2`, `"ab": 900000000`, "largest token id 900000000"},
		{"empty vocab", `{"a": 0, "b": 1, "ab": 2}`, `{}`, "model.vocab is empty"},
		{"empty added", `"content": "<|endoftext|>"`, `"content": ""`, "added_tokens[0] (id 3) has empty content"},
		{"dropout", `"type": "BPE",`, `"type": "BPE", "dropout": 0.1,`, "model.dropout 0.1"},
		{"decoder", `"decoder": {"type": "ByteLevel"`, `"decoder": {"type": "Metaspace"`, "decoder [Metaspace]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(base, c.old, c.new, 1)
			require.NotEqual(t, base, text, "the replacement must apply")
			_, err := Parse([]byte(text), "dir/tokenizer.json", nil, "")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "dir/tokenizer.json")
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := []byte(minimalJSON(t))
	cases := []struct{ cfg, want string }{
		{`{"eos_token": "<|im_end|>"}`, `field "eos_token" names "<|im_end|>", which is not in the vocabulary`},
		{`{"pad_token": 7}`, `field "pad_token": expected a string`},
		{`{"add_bos_token": true}`, "add_bos_token true is not supported"},
		{`{"chat_template": [{"name": "default", "template": "x"}]}`, `field "chat_template" must be a string`},
		{`{`, "invalid JSON"},
	}
	for _, c := range cases {
		_, err := Parse(base, "tokenizer.json", []byte(c.cfg), "dir/tokenizer_config.json")
		require.Error(t, err, c.cfg)
		assert.Contains(t, err.Error(), "dir/tokenizer_config.json")
		assert.Contains(t, err.Error(), c.want)
	}

	tok, err := Parse(base, "tokenizer.json", []byte(`{"eos_token": {"content": "<|endoftext|>", "lstrip": false}}`), "c.json")
	require.NoError(t, err)
	assert.Equal(t, int32(3), tok.EOS(), "eos_token in object form")
	assert.Equal(t, int32(3), tok.Pad(), "pad falls back to eos")
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tokenizer.json not found")
}

func TestLoadFilePath(t *testing.T) {
	tok, err := Load(filepath.Join(tinyDir, TokenizerFile))
	require.NoError(t, err)
	assert.Equal(t, 1000, tok.VocabSize())
}

func TestParseTrailingData(t *testing.T) {
	_, err := Parse([]byte(minimalJSON(t)+"garbage"), "tokenizer.json", nil, "")
	assert.ErrorContains(t, err, "data after the top-level object")
	_, err = Parse([]byte(minimalJSON(t)[:200]), "tokenizer.json", nil, "")
	assert.ErrorContains(t, err, "may be truncated")
}

func TestLoadWithoutConfig(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, TokenizerFile), []byte(minimalJSON(t)), 0o644))
	tok, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, int32(-1), tok.Pad())
}

// FuzzParse feeds mutated tokenizer.json and tokenizer_config.json bytes to Parse, which
// must return a tokenizer or an error and never panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimalJSON(f)), []byte(`{"eos_token": "<|endoftext|>"}`))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a a"]}}`), []byte(`null`))
	f.Fuzz(func(t *testing.T, tokJSON, cfgJSON []byte) {
		tok, err := Parse(tokJSON, "tokenizer.json", cfgJSON, "tokenizer_config.json")
		if err != nil {
			return
		}
		ids := tok.Encode("ab <|endoftext|> b\n")
		_ = tok.Decode(ids)
	})
}
