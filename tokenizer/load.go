package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Hugging Face file names inside a model or tokenizer directory.
const (
	TokenizerFile       = "tokenizer.json"
	TokenizerConfigFile = "tokenizer_config.json"
)

// Load reads tokenizer.json and, when present, tokenizer_config.json from dir. dir may
// also name the tokenizer.json file itself.
func Load(dir string) (*Tokenizer, error) {
	if info, err := os.Stat(dir); err == nil && !info.IsDir() && filepath.Base(dir) == TokenizerFile {
		dir = filepath.Dir(dir)
	}
	tokPath := filepath.Join(dir, TokenizerFile)
	tokJSON, err := os.ReadFile(tokPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s not found: pass a Hugging Face model or tokenizer directory", tokPath)
		}
		return nil, err
	}

	cfgPath := filepath.Join(dir, TokenizerConfigFile)
	cfgJSON, err := os.ReadFile(cfgPath)
	if errors.Is(err, fs.ErrNotExist) {
		cfgJSON = nil
	} else if err != nil {
		return nil, err
	}
	return Parse(tokJSON, tokPath, cfgJSON, cfgPath)
}

// fileJSON is the part of a tokenizer.json file that ringtune reads.
type fileJSON struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	Decoder       json.RawMessage  `json:"decoder"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Model         struct {
		Type                    string           `json:"type"`
		Vocab                   map[string]int64 `json:"vocab"`
		Merges                  []json.RawMessage
		Dropout                 *float64 `json:"dropout"`
		UnkToken                *string  `json:"unk_token"`
		ContinuingSubwordPrefix string   `json:"continuing_subword_prefix"`
		EndOfWordSuffix         string   `json:"end_of_word_suffix"`
		ByteFallback            bool     `json:"byte_fallback"`
		IgnoreMerges            bool     `json:"ignore_merges"`
	} `json:"model"`
}

type addedTokenJSON struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// configJSON is the part of tokenizer_config.json that ringtune reads. Token fields are
// either a string or an object with "content", as transformers writes them.
type configJSON struct {
	EOSToken     json.RawMessage `json:"eos_token"`
	PadToken     json.RawMessage `json:"pad_token"`
	BOSToken     json.RawMessage `json:"bos_token"`
	AddBOSToken  bool            `json:"add_bos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
	MaxLength    float64         `json:"model_max_length"`
}

// Parse builds a Tokenizer from the bytes of tokenizer.json and tokenizer_config.json
// (cfgJSON may be nil). The paths only name the files in errors.
func Parse(tokJSON []byte, tokPath string, cfgJSON []byte, cfgPath string) (*Tokenizer, error) {
	var f fileJSON
	dec := json.NewDecoder(bytes.NewReader(tokJSON))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: invalid JSON (%w): the file may be truncated; download it again", tokPath, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: invalid JSON: data after the top-level object at byte %d; download the file again", tokPath, dec.InputOffset())
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", tokPath, fmt.Sprintf(format, args...))
	}

	if err := checkPipeline(&f, fail); err != nil {
		return nil, err
	}
	t, err := buildModel(&f, fail)
	if err != nil {
		return nil, err
	}
	if err := t.addTokens(f.AddedTokens, fail); err != nil {
		return nil, err
	}

	t.configPath, t.hasConfigFile = cfgPath, cfgJSON != nil
	if cfgJSON != nil {
		if err := t.applyConfig(cfgJSON, cfgPath); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// checkPipeline accepts the normalizer, pre-tokenizer and decoder of Qwen2 and Qwen3
// tokenizers and rejects anything else, since encoding with a different pipeline would
// silently produce other tokens.
func checkPipeline(f *fileJSON, fail func(string, ...any) error) error {
	if f.Model.Type != "BPE" {
		return fail("model.type %q is not supported: ringtune reads byte-level BPE tokenizers (Qwen2, Qwen3)", f.Model.Type)
	}
	if f.Model.Dropout != nil && *f.Model.Dropout != 0 {
		return fail("model.dropout %v is not supported: BPE dropout is for training tokenizers", *f.Model.Dropout)
	}
	if f.Model.ContinuingSubwordPrefix != "" || f.Model.EndOfWordSuffix != "" || f.Model.ByteFallback || f.Model.IgnoreMerges {
		return fail("model options continuing_subword_prefix, end_of_word_suffix, byte_fallback and ignore_merges are not supported")
	}

	norm, err := componentTypes(f.Normalizer, "normalizers")
	if err != nil {
		return fail("normalizer: %v", err)
	}
	if !(len(norm) == 0 || (len(norm) == 1 && norm[0].Type == "NFC")) {
		return fail("normalizer %s is not supported: expected NFC or none", describe(norm))
	}

	pre, err := componentTypes(f.PreTokenizer, "pretokenizers")
	if err != nil {
		return fail("pre_tokenizer: %v", err)
	}
	if len(pre) != 2 || pre[0].Type != "Split" || pre[1].Type != "ByteLevel" {
		return fail("pre_tokenizer %s is not supported: expected Sequence[Split, ByteLevel] as in Qwen2 and Qwen3", describe(pre))
	}
	split := pre[0]
	if split.Pattern.Regex != qwen2SplitPattern {
		return fail("pre_tokenizer Split pattern %q is not supported: ringtune implements only the Qwen2/Qwen3 pattern", split.Pattern.Regex)
	}
	if split.Behavior != "Isolated" || split.Invert {
		return fail("pre_tokenizer Split behavior %q (invert %v) is not supported: expected Isolated", split.Behavior, split.Invert)
	}
	if pre[1].AddPrefixSpace || pre[1].UseRegex {
		return fail("pre_tokenizer ByteLevel with add_prefix_space or use_regex is not supported")
	}

	decoders, err := componentTypes(f.Decoder, "decoders")
	if err != nil {
		return fail("decoder: %v", err)
	}
	if len(decoders) != 1 || decoders[0].Type != "ByteLevel" {
		return fail("decoder %s is not supported: expected ByteLevel", describe(decoders))
	}
	return nil
}

// component is a normalizer, pre-tokenizer or decoder entry of tokenizer.json.
type component struct {
	Type           string `json:"type"`
	Pattern        struct{ Regex, String string }
	Behavior       string `json:"behavior"`
	Invert         bool   `json:"invert"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	UseRegex       bool   `json:"use_regex"`
}

// componentTypes flattens a component that may be null, a single entry or a Sequence
// whose children sit under listKey.
func componentTypes(raw json.RawMessage, listKey string) ([]component, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var head component
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, err
	}
	if head.Type != "Sequence" {
		return []component{head}, nil
	}

	var seq map[string]json.RawMessage
	if err := json.Unmarshal(raw, &seq); err != nil {
		return nil, err
	}
	var children []json.RawMessage
	if err := json.Unmarshal(seq[listKey], &children); err != nil {
		return nil, fmt.Errorf("Sequence without a valid %q list: %v", listKey, err)
	}
	var out []component
	for _, c := range children {
		flat, err := componentTypes(c, listKey)
		if err != nil {
			return nil, err
		}
		out = append(out, flat...)
	}
	return out, nil
}

func describe(cs []component) string {
	if len(cs) == 0 {
		return "none"
	}
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Type
	}
	return "[" + strings.Join(names, ", ") + "]"
}

// buildModel reads the vocabulary and merges and checks that every id fits in int32 and
// every merge names tokens of the vocabulary.
func buildModel(f *fileJSON, fail func(string, ...any) error) (*Tokenizer, error) {
	vocab := f.Model.Vocab
	if len(vocab) == 0 {
		return nil, fail("model.vocab is empty")
	}

	maxID := int64(-1)
	for tok, id := range vocab {
		if id < 0 || id >= math.MaxInt32 {
			return nil, fail("model.vocab[%q] = %d is out of range", tok, id)
		}
		maxID = max(maxID, id)
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.ID >= math.MaxInt32 {
			return nil, fail("added_tokens id %d (%q) is out of range", a.ID, a.Content)
		}
		maxID = max(maxID, a.ID)
	}
	// NOTE: ids index dense tables, so a file with a few huge ids would allocate a lot;
	// the bound keeps a corrupt file from exhausting memory.
	if maxID >= 1<<24 {
		return nil, fail("largest token id %d is above the supported 16777215", maxID)
	}

	t := &Tokenizer{
		vocab:   make(map[string]int32, len(vocab)),
		pieces:  make([]string, maxID+1),
		special: make([]bool, maxID+1),
		known:   make([]bool, maxID+1),
	}
	t.bpe.cache = make(map[string][]int32)
	t.bpe.merges = make(map[uint64]merge, len(f.Model.Merges))
	for tok, id := range vocab {
		t.vocab[tok] = int32(id)
		t.pieces[id] = decodeByteLevel(tok)
		t.known[id] = true
	}
	for b := range t.bpe.byteIDs {
		id, ok := t.vocab[string(byteToRune[b])]
		if !ok {
			id = -1
		}
		t.bpe.byteIDs[b] = id
	}

	for i, raw := range f.Model.Merges {
		left, right, err := parseMerge(raw)
		if err != nil {
			return nil, fail("model.merges[%d]: %v", i, err)
		}
		leftID, okLeft := t.vocab[left]
		rightID, okRight := t.vocab[right]
		mergedID, okMerged := t.vocab[left+right]
		if !okLeft || !okRight || !okMerged {
			return nil, fail("model.merges[%d] (%q, %q) names a token missing from model.vocab", i, left, right)
		}
		key := pairKey(leftID, rightID)
		if _, dup := t.bpe.merges[key]; !dup {
			t.bpe.merges[key] = merge{rank: int32(i), id: mergedID}
		}
	}
	return t, nil
}

// parseMerge reads one merge, either ["a", "b"] or the older "a b" string form.
func parseMerge(raw json.RawMessage) (string, string, error) {
	var pair []string
	if err := json.Unmarshal(raw, &pair); err == nil {
		if len(pair) != 2 {
			return "", "", fmt.Errorf("expected 2 tokens, found %d", len(pair))
		}
		return pair[0], pair[1], nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", "", fmt.Errorf("expected [left, right] or \"left right\", found %s", truncate(string(raw), 40))
	}
	left, right, ok := strings.Cut(s, " ")
	if !ok || strings.Contains(right, " ") {
		return "", "", fmt.Errorf("expected \"left right\", found %q", s)
	}
	return left, right, nil
}

func (t *Tokenizer) addTokens(added []addedTokenJSON, fail func(string, ...any) error) error {
	for i, a := range added {
		if a.Content == "" {
			return fail("added_tokens[%d] (id %d) has empty content", i, a.ID)
		}
		if prev, ok := t.vocab[a.Content]; ok && prev != int32(a.ID) && t.isAdded(prev) {
			return fail("added_tokens[%d] %q has id %d but was already added with id %d", i, a.Content, a.ID, prev)
		}
		id := int32(a.ID)
		t.vocab[a.Content] = id
		t.pieces[id] = a.Content
		t.known[id] = true
		t.special[id] = a.Special
		t.added = append(t.added, addedToken{
			id: id, content: a.Content, singleWord: a.SingleWord,
			lstrip: a.LStrip, rstrip: a.RStrip, normalized: a.Normalized,
		})
	}
	t.matcher = newAddedMatcher(t.added)
	return nil
}

func (t *Tokenizer) isAdded(id int32) bool {
	for _, a := range t.added {
		if a.id == id {
			return true
		}
	}
	return false
}

func (t *Tokenizer) applyConfig(raw []byte, path string) error {
	var c configJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%s: invalid JSON (%w): the file may be truncated; download it again", path, err)
	}
	if c.AddBOSToken {
		return fmt.Errorf("%s: add_bos_token true is not supported: Qwen tokenizers add no BOS token", path)
	}

	lookup := func(field string, raw json.RawMessage) (int32, bool, error) {
		name, err := tokenName(raw)
		if err != nil {
			return 0, false, fmt.Errorf("%s: field %q: %v", path, field, err)
		}
		if name == "" {
			return 0, false, nil
		}
		id, ok := t.vocab[name]
		if !ok {
			return 0, false, fmt.Errorf("%s: field %q names %q, which is not in the vocabulary", path, field, name)
		}
		return id, true, nil
	}
	var err error
	if t.eos, t.hasEOS, err = lookup("eos_token", c.EOSToken); err != nil {
		return err
	}
	if t.pad, t.hasPad, err = lookup("pad_token", c.PadToken); err != nil {
		return err
	}

	if len(c.ChatTemplate) > 0 && string(c.ChatTemplate) != "null" {
		if err := json.Unmarshal(c.ChatTemplate, &t.chatTemplate); err != nil {
			// A list of named templates is the other form transformers writes.
			return fmt.Errorf("%s: field \"chat_template\" must be a string: %v", path, err)
		}
	}
	if c.MaxLength > 0 && c.MaxLength < math.MaxInt32 {
		t.modelMaxLength = int(c.MaxLength)
	}
	return nil
}

// tokenName reads a special-token field: null, "text" or {"content": "text", ...}.
func tokenName(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("expected a string or an object with \"content\"")
	}
	return obj.Content, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
