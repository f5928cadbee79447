package tokenizer

import (
	"cmp"
	"fmt"
	"strings"
)

// Message is one turn of a conversation, with the fields Hugging Face's
// apply_chat_template reads for Qwen3.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`

	// ReasoningContent is the thinking of an assistant turn. When nil, the template takes
	// it from a "<think>...</think>" prefix of Content, if any.
	ReasoningContent *string `json:"reasoning_content,omitempty"`
}

// ChatOptions are the apply_chat_template arguments ringtune supports.
type ChatOptions struct {
	// AddGenerationPrompt ends the text with the header of a new assistant turn.
	AddGenerationPrompt bool

	// EnableThinking false puts an empty thinking block in the generation prompt, so
	// Qwen3 replies without thinking. nil leaves it undefined, as the template's
	// default.
	EnableThinking *bool

	// TrainOnAll gives every token a label in EncodeChat, not only the assistant turns.
	TrainOnAll bool
}

// Roles of a chat message.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// span is a byte range [start, end) of rendered text that carries labels.
type span struct{ start, end int }

// ApplyChatTemplate renders msgs as Qwen3's chat template in tokenizer_config.json does.
func (t *Tokenizer) ApplyChatTemplate(msgs []Message, opts ChatOptions) (string, error) {
	text, _, err := t.renderChat(msgs, opts)
	return text, err
}

// EncodeChat renders msgs and returns the token ids and, aligned with them, the labels:
// the token id for tokens of assistant turns (from the token after the
// "<|im_start|>assistant\n" header up to and including the <|im_end|> that closes the
// turn, thinking block included) and IgnoreIndex elsewhere. With opts.TrainOnAll every
// token carries its label.
//
// The labels are not shifted: labels[i] is the target of the prediction made at i-1,
// as in Hugging Face's causal language models.
func (t *Tokenizer) EncodeChat(msgs []Message, opts ChatOptions) (ids, labels []int32, err error) {
	text, spans, err := t.renderChat(msgs, opts)
	if err != nil {
		return nil, nil, err
	}

	var starts []int
	ids = t.appendEncoded(make([]int32, 0, len(text)/3+1), text, &starts)
	labels = make([]int32, len(ids))
	k := 0
	for i, id := range ids {
		labels[i] = IgnoreIndex
		if opts.TrainOnAll {
			labels[i] = id
			continue
		}
		// A token belongs to the span that contains its first byte; spans and tokens
		// are both in text order.
		for k < len(spans) && starts[i] >= spans[k].end {
			k++
		}
		if k < len(spans) && starts[i] >= spans[k].start {
			labels[i] = id
		}
	}
	return ids, labels, nil
}

// checkChatTemplate accepts only Qwen3's ChatML template with thinking blocks, the one
// template that renderChat implements in Go; other templates would need a Jinja engine.
func (t *Tokenizer) checkChatTemplate() error {
	switch {
	case t.chatTemplate == "" && !t.hasConfigFile:
		return fmt.Errorf("%s not found: chat data needs the Qwen3 tokenizer_config.json with its chat_template", cmp.Or(t.configPath, TokenizerConfigFile))
	case t.chatTemplate == "":
		return fmt.Errorf("%s has no chat_template: chat data needs the Qwen3 tokenizer_config.json", t.configPath)
	case !strings.Contains(t.chatTemplate, "<|im_start|>") ||
		!strings.Contains(t.chatTemplate, "last_query_index") ||
		!strings.Contains(t.chatTemplate, "<think>"):
		return fmt.Errorf("%s: chat_template is not Qwen3's ChatML template; ringtune renders only that template", cmp.Or(t.configPath, TokenizerConfigFile))
	}
	return nil
}

// renderChat renders msgs and returns the byte spans that carry labels. It follows
// Qwen3's template line by line; tools and tool_calls are not supported.
func (t *Tokenizer) renderChat(msgs []Message, opts ChatOptions) (string, []span, error) {
	if err := t.checkChatTemplate(); err != nil {
		return "", nil, err
	}
	if len(msgs) == 0 && !opts.AddGenerationPrompt {
		return "", nil, fmt.Errorf("conversation has no messages")
	}
	for i, m := range msgs {
		switch m.Role {
		case RoleSystem, RoleUser, RoleAssistant, RoleTool:
		default:
			return "", nil, fmt.Errorf("messages[%d].role: unknown role %q; expected system, user, assistant or tool", i, m.Role)
		}
	}

	var b strings.Builder
	var spans []span

	if len(msgs) > 0 && msgs[0].Role == RoleSystem {
		b.WriteString("<|im_start|>system\n" + msgs[0].Content + "<|im_end|>\n")
	}

	// The last user message that is not a tool response: assistant turns after it are
	// the current answer and show their thinking.
	lastQuery := len(msgs) - 1
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		isToolResponse := strings.HasPrefix(m.Content, "<tool_response>") && strings.HasSuffix(m.Content, "</tool_response>")
		if m.Role == RoleUser && !isToolResponse {
			lastQuery = i
			break
		}
	}

	for i, m := range msgs {
		last := i == len(msgs)-1
		switch {
		case m.Role == RoleUser || (m.Role == RoleSystem && i > 0):
			b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")

		case m.Role == RoleAssistant:
			content, reasoning := splitReasoning(m)
			b.WriteString("<|im_start|>assistant\n")
			start := b.Len()
			if i > lastQuery && (last || reasoning != "") {
				b.WriteString("<think>\n" + strings.Trim(reasoning, "\n") + "\n</think>\n\n" + strings.TrimLeft(content, "\n"))
			} else {
				b.WriteString(content)
			}
			b.WriteString("<|im_end|>")
			spans = append(spans, span{start: start, end: b.Len()})
			b.WriteString("\n")

		case m.Role == RoleTool:
			if i == 0 || msgs[i-1].Role != RoleTool {
				b.WriteString("<|im_start|>user")
			}
			b.WriteString("\n<tool_response>\n" + m.Content + "\n</tool_response>")
			if last || msgs[i+1].Role != RoleTool {
				b.WriteString("<|im_end|>\n")
			}
		}
	}

	if opts.AddGenerationPrompt {
		b.WriteString("<|im_start|>assistant\n")
		if opts.EnableThinking != nil && !*opts.EnableThinking {
			b.WriteString("<think>\n\n</think>\n\n")
		}
	}
	return b.String(), spans, nil
}

// splitReasoning returns an assistant message's answer and its thinking, taking the
// thinking from a "<think>...</think>" prefix of the content when ReasoningContent is nil.
func splitReasoning(m Message) (content, reasoning string) {
	content = m.Content
	if m.ReasoningContent != nil {
		return content, *m.ReasoningContent
	}
	if !strings.Contains(content, "</think>") {
		return content, ""
	}
	parts := strings.Split(content, "</think>")
	answer := strings.TrimLeft(parts[len(parts)-1], "\n")
	before := strings.TrimRight(parts[0], "\n")
	thinkParts := strings.Split(before, "<think>")
	reasoning = strings.TrimLeft(thinkParts[len(thinkParts)-1], "\n")
	return answer, reasoning
}
