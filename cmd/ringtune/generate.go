package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
	"github.com/ringtune/ringtune/tokenizer"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "generate text from a prompt with a Qwen3 model, optionally with a LoRA adapter",
		Description: `Loads config.json, the safetensors weights and the tokenizer from --model, runs the
prompt through the model and samples up to --max-new-tokens tokens on the CPU with a
KV cache. Generation stops early at the tokenizer's EOS, <|im_end|> or <|endoftext|>.

The prompt is --prompt, or stdin when --prompt is not given. With --chat it becomes a
user message rendered with the model's chat template and an assistant header
(add_generation_prompt). The text is printed as it is generated, without special
tokens, and a multi-byte character split over tokens is printed once complete.
--json prints nothing while generating and then one object with "text", "ids"
(the new tokens, a stop token included), "prompt_tokens", "new_tokens",
"tokens_per_s" (tokens per second of the decoding steps after the first new token),
"prefill_s" and "stop_reason" ("stop" or "length").

--temperature 0, the default, selects greedy decoding, which repeats exactly. Sampling
with --temperature T > 0 draws from softmax(logits/T), restricted by --top-p, from a
generator seeded by --seed, so a seed repeats its text on the same machine.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "Hugging Face model `DIR` with config.json, model.safetensors (or shards and model.safetensors.index.json) and the tokenizer files", Required: true},
			&cli.StringFlag{Name: "tokenizer", Usage: "`DIR` with tokenizer.json and tokenizer_config.json (default: --model)"},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT LoRA adapter `DIR` with adapter_config.json and adapter_model.safetensors"},
			&cli.BoolFlag{Name: "merge-adapter", Usage: "add the adapter to the base weights at load time instead of applying it in each projection, which saves two small products per projection and step and gives the same output up to float32 rounding. Adapters with use_rslora or layers_to_transform are always merged"},
			&cli.StringFlag{Name: "prompt", Usage: "prompt `TEXT` (default: read stdin)"},
			&cli.BoolFlag{Name: "chat", Usage: "render the prompt as a user message with the chat template and an assistant header"},
			&cli.StringFlag{Name: "system", Usage: "with --chat, a system message `TEXT` before the user message"},
			&cli.BoolFlag{Name: "no-thinking", Usage: "with --chat, set enable_thinking false, which tells Qwen3 to answer without a thinking block"},
			&cli.IntFlag{Name: "max-new-tokens", Value: 256, Usage: "most tokens to generate, a stop token included"},
			&cli.Float64Flag{Name: "temperature", Value: 0, Usage: "sampling temperature ≥ 0; 0 selects greedy decoding"},
			&cli.Float64Flag{Name: "top-p", Value: 1, Usage: "nucleus sampling: draw from the most likely tokens that hold this share of the probability, in (0, 1]"},
			&cli.Uint64Flag{Name: "seed", Value: 0, Usage: "seed of the sampling generator"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object at the end instead of streaming the text"},
		},
		Action: runGenerate,
	}
}

// generateOutput is the --json output.
type generateOutput struct {
	Text         string  `json:"text"`
	IDs          []int32 `json:"ids"`
	PromptTokens int     `json:"prompt_tokens"`
	NewTokens    int     `json:"new_tokens"`
	TokensPerSec float64 `json:"tokens_per_s"`
	PrefillSec   float64 `json:"prefill_s"`
	StopReason   string  `json:"stop_reason"`
}

func runGenerate(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: pass the prompt with --prompt TEXT or on stdin", c.Args().First())
	}
	gen := model.GenerateConfig{
		MaxNewTokens: c.Int("max-new-tokens"),
		Sampling:     model.SamplingConfig{Temperature: c.Float64("temperature"), TopP: c.Float64("top-p"), Seed: c.Uint64("seed")},
	}
	if err := checkGenerateFlags(c, gen); err != nil {
		return err
	}

	modelDir := c.String("model")
	cfg, err := loadModelConfig(modelDir)
	if err != nil {
		return err
	}
	tok, err := loadGenerateTokenizer(c, cfg)
	if err != nil {
		return err
	}
	prompt, err := generatePrompt(c, tok)
	if err != nil {
		return err
	}
	// The KV cache is allocated for the prompt and every new token, so the new tokens stop
	// at max_position_embeddings, past which the model was not trained anyway.
	if limit := cfg.MaxPositionEmbeddings; len(prompt) >= limit {
		return fmt.Errorf("the prompt has %d tokens, at or above max_position_embeddings %d of config.json: shorten it", len(prompt), limit)
	} else if gen.MaxNewTokens > limit-len(prompt) {
		slog.Warn("lowering --max-new-tokens to fit max_position_embeddings of config.json",
			"prompt_tokens", len(prompt), "requested", gen.MaxNewTokens, "max_new_tokens", limit-len(prompt), "max_position_embeddings", limit)
		gen.MaxNewTokens = limit - len(prompt)
	}

	// Reject weights that do not match config.json before allocating the model for it.
	if err := model.CheckWeights(cfg, modelDir); err != nil {
		return err
	}

	be, err := cpu.New(cpu.Options{})
	if err != nil {
		return err
	}
	defer be.Close()
	start := time.Now()
	// The decoder keeps its own activations, so the training activations are
	// sized for one token.
	m, err := loadInferenceModel(be, cfg, modelDir, c.String("adapter"), c.Bool("merge-adapter"), model.Options{MaxBatch: 1, MaxSeq: 1})
	if err != nil {
		return err
	}
	defer m.Close()
	slog.Info("model loaded", "model", modelDir, "adapter", c.String("adapter"), "mode", m.Options().Mode,
		"layers", cfg.NumLayers, "parameters", cfg.NumParams(), "seconds", time.Since(start).Seconds())

	// The last new token is never fed back, so it needs no cache position.
	decoder, err := model.NewDecoder(m, model.DecoderOptions{MaxLen: len(prompt) + gen.MaxNewTokens - 1})
	if err != nil {
		return err
	}
	defer decoder.Close()
	gen.StopTokens = stopTokens(tok)
	return generateText(c, tok, decoder, prompt, gen)
}

// checkGenerateFlags rejects flag values and combinations before anything is
// loaded.
func checkGenerateFlags(c *cli.Context, gen model.GenerateConfig) error {
	if gen.MaxNewTokens < 1 {
		return fmt.Errorf("--max-new-tokens is %d: want at least 1", gen.MaxNewTokens)
	}
	if t := gen.Sampling.Temperature; !(t >= 0) || math.IsInf(t, 1) {
		return fmt.Errorf("--temperature %v is invalid: want a finite value ≥ 0 (0 selects greedy decoding)", t)
	}
	if p := gen.Sampling.TopP; !(p > 0 && p <= 1) {
		return fmt.Errorf("--top-p %v is invalid: want a value in (0, 1], where 1 keeps every token", p)
	}
	if !c.Bool("chat") {
		for _, name := range []string{"system", "no-thinking"} {
			if c.IsSet(name) {
				return fmt.Errorf("--%s needs --chat: it sets a part of the chat template", name)
			}
		}
	}
	if c.Bool("merge-adapter") && c.String("adapter") == "" {
		return errors.New("--merge-adapter needs --adapter DIR")
	}
	return nil
}

// loadModelConfig reads dir/config.json, with errors that describe what a
// model directory contains.
func loadModelConfig(dir string) (model.Config, error) {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return model.Config{}, fmt.Errorf("--model %s: directory not found", dir)
	case err != nil:
		return model.Config{}, fmt.Errorf("--model: %w", err)
	case !info.IsDir():
		return model.Config{}, fmt.Errorf("--model %s is a file: pass the model directory, which contains config.json and the weights", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, model.ConfigFile)); errors.Is(err, fs.ErrNotExist) {
		return model.Config{}, fmt.Errorf("--model %s has no %s: pass a Hugging Face model directory with config.json and safetensors weights", dir, model.ConfigFile)
	}
	return model.LoadConfig(dir)
}

// loadGenerateTokenizer loads the tokenizer from --tokenizer or --model and
// checks that its ids fit the model's vocabulary.
func loadGenerateTokenizer(c *cli.Context, cfg model.Config) (*tokenizer.Tokenizer, error) {
	dir, flag := c.String("model"), "--model"
	if c.IsSet("tokenizer") {
		dir, flag = c.String("tokenizer"), "--tokenizer"
	}
	if _, err := os.Stat(filepath.Join(dir, tokenizer.TokenizerFile)); errors.Is(err, fs.ErrNotExist) {
		hint := "pass the tokenizer's directory with --tokenizer DIR"
		if flag == "--tokenizer" {
			hint = "pass a directory with tokenizer.json and tokenizer_config.json"
		}
		return nil, fmt.Errorf("%s %s has no %s: %s", flag, dir, tokenizer.TokenizerFile, hint)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("the tokenizer in %s has ids up to %d, but the model's vocab_size is %d: pass the tokenizer of this model", dir, tok.VocabSize()-1, cfg.VocabSize)
	}
	return tok, nil
}

// generatePrompt reads the prompt text, renders it with the chat template
// when --chat is set and returns its token ids.
func generatePrompt(c *cli.Context, tok *tokenizer.Tokenizer) ([]int32, error) {
	text := c.String("prompt")
	if !c.IsSet("prompt") {
		if term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, errors.New("no prompt: pass --prompt TEXT or pipe the prompt on stdin")
		}
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("reading the prompt from stdin: %w", err)
		}
		// One final line break ends the input, as echo and heredocs add it; it is not
		// part of the prompt, as in the shell's $(...).
		text = strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	}
	if text == "" {
		return nil, errors.New("the prompt is empty: pass --prompt TEXT or pipe the prompt on stdin")
	}
	if c.Bool("chat") {
		var msgs []tokenizer.Message
		if c.IsSet("system") {
			msgs = append(msgs, tokenizer.Message{Role: tokenizer.RoleSystem, Content: c.String("system")})
		}
		msgs = append(msgs, tokenizer.Message{Role: tokenizer.RoleUser, Content: text})
		opts := tokenizer.ChatOptions{AddGenerationPrompt: true}
		if c.Bool("no-thinking") {
			thinking := false
			opts.EnableThinking = &thinking
		}
		rendered, err := tok.ApplyChatTemplate(msgs, opts)
		if err != nil {
			return nil, err
		}
		text = rendered
	}
	return tok.Encode(text), nil
}

// loadInferenceModel builds a model with the activation shape of opts and
// loads its weights and, when adapterDir is set, the adapter. The adapter
// runs in the projections as in LoRA training, or is merged into the weights
// when merge is set or LoRA mode cannot express it (rs-LoRA scaling, a subset
// of layers). generate and eval use it.
func loadInferenceModel(be *cpu.Backend, cfg model.Config, modelDir, adapterDir string, merge bool, opts model.Options) (*model.Model, error) {
	var adapter *peft.Adapter
	if adapterDir != "" {
		var err error
		if adapter, err = peft.Load(adapterDir, cfg); err != nil {
			return nil, err
		}
		lora, err := adapter.Config.LoRA()
		if err != nil && !merge {
			slog.Info("merging the adapter into the weights, because LoRA mode cannot apply it", "adapter", adapterDir, "reason", err)
			merge = true
		}
		if !merge {
			lora.Dropout = 0 // dropout acts in training only, so skip its buffers
			opts.Mode, opts.LoRA = model.ModeLoRA, lora
		}
	}

	m, err := model.New(be, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := loadWeights(m, modelDir, adapter, merge); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func loadWeights(m *model.Model, modelDir string, adapter *peft.Adapter, merge bool) error {
	if err := m.LoadBase(modelDir); err != nil {
		return err
	}
	if adapter == nil {
		return nil
	}
	if !merge {
		return peft.Apply(m, adapter)
	}
	scaling := adapter.Config.Scaling()
	for _, a := range adapter.Tensors {
		if !a.IsA {
			continue
		}
		b := adapter.Find(a.Module, false)
		if b == nil {
			return fmt.Errorf("adapter module %s has lora_A but no lora_B", a.Module)
		}
		if err := m.MergeLoRA(a.Module+".weight", a.Data, b.Data, scaling); err != nil {
			return err
		}
	}
	return nil
}

// stopTokens returns the ids that end a generation: the tokenizer's EOS,
// <|im_end|> and <|endoftext|>, those that exist.
func stopTokens(tok *tokenizer.Tokenizer) []int32 {
	var ids []int32
	add := func(id int32) {
		if id >= 0 && !containsID(ids, id) {
			ids = append(ids, id)
		}
	}
	add(tok.EOS())
	for _, name := range []string{"<|im_end|>", "<|endoftext|>"} {
		if id, ok := tok.TokenID(name); ok {
			add(id)
		}
	}
	return ids
}

func containsID(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// generateText runs the generation, streaming the text unless --json is set,
// and prints the result.
func generateText(c *cli.Context, tok *tokenizer.Tokenizer, decoder *model.Decoder, prompt []int32, cfg model.GenerateConfig) error {
	w := c.App.Writer
	asJSON := c.Bool("json")
	stream := &textStream{tok: tok, w: w}
	stops := cfg.StopTokens
	onToken := func(id int32) error {
		if err := context.Cause(c.Context); err != nil {
			return err
		}
		if asJSON || containsID(stops, id) {
			return nil
		}
		return stream.add(id)
	}

	slog.Info("generate started", "prompt_tokens", len(prompt), "max_new_tokens", cfg.MaxNewTokens,
		"temperature", cfg.Sampling.Temperature, "top_p", cfg.Sampling.TopP, "seed", cfg.Sampling.Seed)
	result, err := decoder.Generate(prompt, cfg, onToken)
	if err != nil {
		return err
	}
	newTokens := len(result.IDs)
	var tokensPerSec float64
	if result.DecodeTime > 0 && newTokens > 1 {
		// The first new token comes from the prompt's forward pass, so decoding
		// produced the other newTokens-1.
		tokensPerSec = float64(newTokens-1) / result.DecodeTime.Seconds()
	}
	slog.Info("generate finished", "prompt_tokens", len(prompt), "new_tokens", newTokens, "stop_reason", result.StopReason,
		"prefill_tokens_per_s", float64(len(prompt))/result.PrefillTime.Seconds(), "tokens_per_s", tokensPerSec)

	text := result.IDs
	if result.StopReason == model.StopToken {
		text = text[:newTokens-1]
	}
	if !asJSON {
		if err := stream.flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintln(w)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(generateOutput{
		Text:         tok.DecodeSkipSpecial(text),
		IDs:          result.IDs,
		PromptTokens: len(prompt),
		NewTokens:    newTokens,
		TokensPerSec: tokensPerSec,
		PrefillSec:   result.PrefillTime.Seconds(),
		StopReason:   string(result.StopReason),
	})
}

// textStream writes the text of tokens as they arrive, without special
// tokens. It holds back tokens whose bytes end inside a UTF-8 character until
// the character is complete, and then writes the text of the held tokens,
// so the pieces it writes join to the DecodeSkipSpecial text of all tokens.
type textStream struct {
	tok     *tokenizer.Tokenizer
	w       io.Writer
	pending []int32 // tokens not yet written
	bytes   []byte  // raw bytes of the pending tokens that are not special
}

// add appends a token and writes the pending text unless it ends inside a
// character.
func (s *textStream) add(id int32) error {
	s.pending = append(s.pending, id)
	if !s.tok.IsSpecial(id) {
		s.bytes = append(s.bytes, s.tok.DecodeBytes([]int32{id})...)
	}
	if endsInsideCharacter(s.bytes) {
		return nil
	}
	return s.flush()
}

// flush writes the pending text, with U+FFFD for an unfinished character.
func (s *textStream) flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	text := s.tok.DecodeSkipSpecial(s.pending)
	s.pending, s.bytes = s.pending[:0], s.bytes[:0]
	_, err := io.WriteString(s.w, text)
	return err
}

// endsInsideCharacter reports whether b ends with the start of a multi-byte
// UTF-8 character that more bytes could still complete. Bytes that no
// continuation can make valid do not count.
func endsInsideCharacter(b []byte) bool {
	// A character is at most 4 bytes, so its first byte is among the last 3
	// of an unfinished one.
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		if utf8.RuneStart(b[i]) {
			return !utf8.FullRune(b[i:])
		}
	}
	return false
}
