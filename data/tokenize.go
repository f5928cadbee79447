package data

import (
	"fmt"
	"slices"

	"github.com/ringtune/ringtune/tokenizer"
)

// IgnoreIndex marks a label or target that takes no loss, as in PyTorch's cross_entropy.
const IgnoreIndex = tokenizer.IgnoreIndex

// endOfTextToken ends every plain text document.
const endOfTextToken = "<|endoftext|>"

// Tokenizer is the part of *tokenizer.Tokenizer that this package uses. Load calls it
// from several goroutines at once unless Options.Workers is 1.
type Tokenizer interface {
	Encode(text string) []int32
	TokenID(token string) (int32, bool)
	EOS() int32
	Pad() int32
	EncodeChat(msgs []tokenizer.Message, opts tokenizer.ChatOptions) (ids, labels []int32, err error)
}

var _ Tokenizer = (*tokenizer.Tokenizer)(nil)

// Example is one tokenized record.
type Example struct {
	Pos Position
	// IDs are the token ids, at most TokenizeOptions.MaxSeqLen of them.
	IDs []int32
	// Labels are aligned with IDs: Labels[i] is IDs[i] where the token takes loss, and
	// IgnoreIndex elsewhere.
	Labels []int32
	// OriginalLen is the number of tokens before truncation.
	OriginalLen int
	// NextLabel is the label of the first token that truncation removed, which becomes the
	// target of the last kept token. It is IgnoreIndex when nothing was removed.
	NextLabel int32
}

// Truncated reports whether truncation removed tokens from the end of the example.
func (e *Example) Truncated() bool { return e.OriginalLen > len(e.IDs) }

// Targets returns the next-token targets of the example: Targets[i] = Labels[i+1], and
// NextLabel at the last token, so that no target reaches outside the example.
func (e *Example) Targets() []int32 {
	return e.appendTargets(make([]int32, 0, len(e.IDs)))
}

func (e *Example) appendTargets(dst []int32) []int32 {
	if len(e.Labels) == 0 {
		return dst
	}
	dst = append(dst, e.Labels[1:]...)
	return append(dst, e.NextLabel)
}

// TargetTokens counts the targets that take loss.
func (e *Example) TargetTokens() int {
	n := 0
	if len(e.Labels) > 0 {
		n = countLabels(e.Labels[1:])
	}
	if e.NextLabel != IgnoreIndex {
		n++
	}
	return n
}

func countLabels(labels []int32) int {
	n := 0
	for _, l := range labels {
		if l != IgnoreIndex {
			n++
		}
	}
	return n
}

// TokenizeOptions configures Tokenize.
type TokenizeOptions struct {
	// MaxSeqLen truncates longer examples to their first MaxSeqLen tokens; 0 keeps them
	// whole.
	MaxSeqLen int
	// EnableThinking is passed to the chat template. nil leaves the template's default.
	EnableThinking *bool
	// TrainOnAll labels every token of a conversation, prompts included, as torchtune's
	// train_on_input does. Plain text always trains on every token.
	TrainOnAll bool
}

// Tokenize turns a record into token ids and aligned labels.
//
// A text document is encoded as is, with no chat template, followed by <|endoftext|>
// (or the EOS token when the vocabulary has no <|endoftext|>), and every token takes
// loss. A conversation is rendered by the chat template, which labels the assistant
// turns. A truncated example gets no end token, so the model is not taught to stop in
// mid-text. torchtune's truncate, given an eos_id, overwrites the last token instead.
//
// The error is an *InputError naming the record for a conversation the template rejects,
// an example without tokens, and an example without a trainable target, before or after
// truncation.
//
// NOTE: special-token strings written in a document or message, such as "<|im_end|>",
// become their special ids, as with Hugging Face tokenizers' default
// split_special_tokens=False, so the data can inject chat markup.
func Tokenize(tok Tokenizer, rec Record, opts TokenizeOptions) (Example, error) {
	endOfText := endOfTextID(tok)
	if !rec.Format.isChat() && endOfText < 0 {
		return Example{}, errNoEndOfText
	}
	ex, err := tokenize(tok, endOfText, rec, opts)
	if err != nil {
		return Example{}, err
	}
	return ex, nil
}

var errNoEndOfText = fmt.Errorf("the tokenizer has neither %s nor an EOS token, so plain text documents cannot be ended; use a tokenizer that defines one", endOfTextToken)

// endOfTextID returns the id of <|endoftext|>, or EOS, which is -1 when the tokenizer
// has none.
func endOfTextID(tok Tokenizer) int32 {
	if id, ok := tok.TokenID(endOfTextToken); ok {
		return id
	}
	return tok.EOS()
}

func tokenize(tok Tokenizer, endOfText int32, rec Record, opts TokenizeOptions) (Example, *InputError) {
	var ids, labels []int32
	if rec.Format.isChat() {
		chatOpts := tokenizer.ChatOptions{EnableThinking: opts.EnableThinking, TrainOnAll: opts.TrainOnAll}
		var err error
		ids, labels, err = tok.EncodeChat(rec.Messages, chatOpts)
		if err != nil {
			return Example{}, &InputError{File: rec.Pos.File, Line: rec.Pos.Line, Kind: KindChatTemplate, Msg: "chat template: " + err.Error(), Err: err}
		}
		if len(labels) != len(ids) {
			return Example{}, &InputError{File: rec.Pos.File, Line: rec.Pos.Line, Kind: KindChatTemplate, Msg: fmt.Sprintf("chat template returned %d labels for %d tokens", len(labels), len(ids))}
		}
	} else {
		ids = tok.Encode(rec.Text)
		if len(ids) > 0 {
			ids = append(ids, endOfText)
			labels = slices.Clone(ids)
		}
	}

	if len(ids) == 0 {
		return Example{}, &InputError{File: rec.Pos.File, Line: rec.Pos.Line, Kind: KindNoTokens, Msg: "the example tokenizes to no tokens"}
	}
	ex := Example{Pos: rec.Pos, IDs: ids, Labels: labels, OriginalLen: len(ids), NextLabel: IgnoreIndex}
	if ex.TargetTokens() == 0 {
		return Example{}, &InputError{File: rec.Pos.File, Line: rec.Pos.Line, Kind: KindNoTargets, Msg: "the example has no trainable tokens: no assistant turn carries a label; add an assistant reply or train on all tokens"}
	}

	if opts.MaxSeqLen > 0 && len(ids) > opts.MaxSeqLen {
		ex.NextLabel = labels[opts.MaxSeqLen]
		// Clone so that the removed tail does not stay in memory behind the slice.
		ex.IDs = slices.Clone(ids[:opts.MaxSeqLen])
		ex.Labels = slices.Clone(labels[:opts.MaxSeqLen])
		if ex.TargetTokens() == 0 {
			return Example{}, &InputError{
				File: rec.Pos.File, Line: rec.Pos.Line, Kind: KindNoTargets,
				Msg: fmt.Sprintf("no trainable tokens remain after truncating the example from %d to %d tokens; raise the maximum sequence length", ex.OriginalLen, opts.MaxSeqLen),
			}
		}
	}
	return ex, nil
}
