package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/tokenizer"
)

// maxTokenizeLine bounds one input line of `ringtune tokenize`.
const maxTokenizeLine = 64 << 20

func tokenizeCommand() *cli.Command {
	return &cli.Command{
		Name:  "tokenize",
		Usage: "print the tokens the model sees for JSONL input, one output line per input line",
		Description: `Reads JSONL from stdin or --input. Each line is {"text": "..."}, or with --chat
{"messages": [{"role": "user", "content": "..."}, ...], "add_generation_prompt": false,
"enable_thinking": true} as Hugging Face's apply_chat_template takes them. Prints one
JSON line per input with "ids", "tokens" (the text of each token) and, with --chat,
"labels" (-100 where the loss is masked).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tokenizer", Usage: "Hugging Face model or tokenizer `DIR` with tokenizer.json and tokenizer_config.json", Required: true, EnvVars: []string{"RINGTUNE_TOKENIZER"}},
			&cli.StringFlag{Name: "input", Usage: "JSONL `FILE` to read instead of stdin"},
			&cli.BoolFlag{Name: "chat", Usage: "read conversations and render them with the chat template"},
			&cli.BoolFlag{Name: "train-on-all", Usage: "with --chat, label every token instead of only the assistant turns"},
		},
		Action: runTokenize,
	}
}

// tokenizeInput is one input line; pointer fields tell a missing key from an empty value.
type tokenizeInput struct {
	Text                *string              `json:"text"`
	Messages            *[]tokenizer.Message `json:"messages"`
	AddGenerationPrompt bool                 `json:"add_generation_prompt"`
	EnableThinking      *bool                `json:"enable_thinking"`
}

type tokenizeOutput struct {
	IDs    []int32  `json:"ids"`
	Tokens []string `json:"tokens"`
	Labels []int32  `json:"labels,omitempty"`
}

func runTokenize(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: pass the input with --input FILE or on stdin", c.Args().First())
	}
	tok, err := tokenizer.Load(c.String("tokenizer"))
	if err != nil {
		return err
	}

	in, name := io.Reader(os.Stdin), "stdin"
	if path := c.String("input"); path != "" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, path
	}

	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)

	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 0, 1<<20), maxTokenizeLine)
	line := 0
	for scanner.Scan() {
		line++
		raw := bytes.TrimSpace(scanner.Bytes())
		if len(raw) == 0 {
			continue
		}
		result, err := tokenizeLine(tok, raw, c.Bool("chat"), c.Bool("train-on-all"))
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if err := enc.Encode(result); err != nil {
			return err
		}
	}
	if err := scanner.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s:%d: line longer than %d MiB", name, line+1, maxTokenizeLine>>20)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func tokenizeLine(tok *tokenizer.Tokenizer, raw []byte, chat, trainOnAll bool) (*tokenizeOutput, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("line is not valid UTF-8")
	}
	var in tokenizeInput
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}

	result := &tokenizeOutput{}
	switch {
	case chat:
		if in.Messages == nil {
			return nil, errors.New(`field "messages" is missing: with --chat each line needs a list of {"role", "content"} messages`)
		}
		opts := tokenizer.ChatOptions{
			AddGenerationPrompt: in.AddGenerationPrompt,
			EnableThinking:      in.EnableThinking,
			TrainOnAll:          trainOnAll,
		}
		ids, labels, err := tok.EncodeChat(*in.Messages, opts)
		if err != nil {
			return nil, err
		}
		result.IDs, result.Labels = ids, labels
	case in.Text == nil && in.Messages != nil:
		return nil, errors.New(`field "text" is missing; this line has "messages": pass --chat to render conversations`)
	case in.Text == nil:
		return nil, errors.New(`field "text" is missing: each line needs {"text": "..."}`)
	default:
		result.IDs = tok.Encode(*in.Text)
	}

	result.Tokens = make([]string, len(result.IDs))
	for i, id := range result.IDs {
		result.Tokens[i] = tok.Piece(id)
	}
	return result, nil
}
