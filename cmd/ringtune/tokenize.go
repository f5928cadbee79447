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
		if line == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\ufeff")) // a UTF-8 byte order mark
		}
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
	// Keys are matched exactly, as Hugging Face's datasets do; encoding/json would also
	// accept "TEXT" for "text".
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("invalid JSON: expected one object per line: %w", err)
	}

	result := &tokenizeOutput{}
	if chat {
		msgs, opts, err := parseChatLine(fields)
		if err != nil {
			return nil, err
		}
		opts.TrainOnAll = trainOnAll
		if result.IDs, result.Labels, err = tok.EncodeChat(msgs, opts); err != nil {
			return nil, err
		}
	} else {
		text, present, err := stringField(fields, "", "text")
		switch {
		case err != nil:
			return nil, err
		case !present && fields["messages"] != nil:
			return nil, errors.New(`field "text" is missing; this line has "messages": pass --chat to render conversations`)
		case !present:
			return nil, errors.New(`field "text" is missing: each line needs {"text": "..."}`)
		}
		result.IDs = tok.Encode(text)
	}

	result.Tokens = make([]string, len(result.IDs))
	for i, id := range result.IDs {
		result.Tokens[i] = tok.Piece(id)
	}
	return result, nil
}

// parseChatLine reads the apply_chat_template arguments of one --chat line, naming the
// field of any error.
func parseChatLine(fields map[string]json.RawMessage) ([]tokenizer.Message, tokenizer.ChatOptions, error) {
	var opts tokenizer.ChatOptions
	if tools, ok := fields["tools"]; ok && !isEmptyJSON(tools) {
		return nil, opts, errors.New(`field "tools": tool definitions are not supported; remove them or render the prompt yourself and pass it as "text"`)
	}

	rawMessages, ok := fields["messages"]
	if !ok {
		return nil, opts, errors.New(`field "messages" is missing: with --chat each line needs a list of {"role", "content"} messages`)
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(rawMessages, &items); err != nil {
		return nil, opts, errors.New(`field "messages": expected a list of {"role", "content"} objects`)
	}

	msgs := make([]tokenizer.Message, len(items))
	for i, item := range items {
		name := fmt.Sprintf("messages[%d]", i)
		if item == nil {
			return nil, opts, fmt.Errorf("field %q: expected an object with \"role\" and \"content\"", name)
		}
		role, present, err := stringField(item, name+".", "role")
		if err != nil {
			return nil, opts, err
		}
		if !present {
			return nil, opts, fmt.Errorf("field %q is missing", name+".role")
		}
		content, _, err := stringField(item, name+".", "content") // a null or missing content is ""
		if err != nil {
			return nil, opts, err
		}
		msgs[i] = tokenizer.Message{Role: role, Content: content}

		if calls, ok := item["tool_calls"]; ok && !isEmptyJSON(calls) {
			return nil, opts, fmt.Errorf("field %q: tool calls are not supported, and dropping them would misrepresent the turn", name+".tool_calls")
		}
		if reasoning, present, err := stringField(item, name+".", "reasoning_content"); err != nil {
			return nil, opts, err
		} else if present {
			msgs[i].ReasoningContent = &reasoning
		}
	}

	if raw, ok := fields["add_generation_prompt"]; ok && !isEmptyJSON(raw) {
		if err := json.Unmarshal(raw, &opts.AddGenerationPrompt); err != nil {
			return nil, opts, errors.New(`field "add_generation_prompt": expected true or false`)
		}
	}
	if raw, ok := fields["enable_thinking"]; ok && !isEmptyJSON(raw) {
		var thinking bool
		if err := json.Unmarshal(raw, &thinking); err != nil {
			return nil, opts, errors.New(`field "enable_thinking": expected true, false or null`)
		}
		opts.EnableThinking = &thinking
	}
	return msgs, opts, nil
}

// stringField reads an optional string field; null counts as absent. prefix is the path
// of the enclosing object in errors, such as "messages[2]."
func stringField(fields map[string]json.RawMessage, prefix, key string) (string, bool, error) {
	raw, ok := fields[key]
	if !ok || isEmptyJSON(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, fmt.Errorf("field %q: expected a string, found %s", prefix+key, truncateJSON(raw))
	}
	return s, true, nil
}

// isEmptyJSON reports whether raw is null or an empty list.
func isEmptyJSON(raw json.RawMessage) bool {
	trimmed := string(bytes.TrimSpace(raw))
	return trimmed == "null" || trimmed == "[]"
}

func truncateJSON(raw json.RawMessage) string {
	const maxLen = 40
	if len(raw) > maxLen {
		return string(raw[:maxLen]) + "..."
	}
	return string(raw)
}
