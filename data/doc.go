// Package data turns a dataset file into the token rows that each rank of a
// data-parallel job trains on.
//
// The pipeline is: Reader (records) → Tokenize (examples of ids and aligned labels) →
// SplitEval (optional) → PackRows or PadRows (fixed-length rows) → Sampler (each rank's
// share of the rows, in micro-batches) → Batch. Load runs the steps up to the rows.
// Every step is deterministic, so each rank calls Load on its own and builds the same
// rows without communicating.
//
// # Formats
//
// A .txt file holds plain text documents separated by blank lines. The blank line is
// the unit because a fine-tuning corpus usually keeps many short documents in one file.
// Making the whole file one document would truncate all but its first MaxSeqLen tokens.
// Splitting at every line would cut paragraphs, code and poems apart. Put documents
// that contain blank lines in JSON Lines records instead.
//
// JSON Lines files (.jsonl, .ndjson, .json, each optionally .gz) hold one object per
// line, in one of these formats:
//
//	text      {"text": "..."}
//	alpaca    {"instruction": "...", "input": "...", "output": "...", "system": "..."}
//	chat      {"messages": [{"role": "user", "content": "...", "reasoning_content": "..."}]}
//	sharegpt  {"conversations": [{"from": "human", "value": "..."}], "system": "..."}
//
// "input" and "system" are optional, and so is "reasoning_content". An Alpaca record
// becomes the turns system (when present), user (the instruction, then "\n\n" and the
// input when the input is not empty) and assistant (the output). Chat roles are system,
// user, assistant and tool. ShareGPT speakers, compared in lower case, map to them:
//
//	human, user                       user
//	gpt, assistant, chatgpt, model    assistant
//	system                            system
//	tool, function, observation       tool
//
// Any other role or speaker is an error.
//
// Unless the format is given, the first record that is a JSON object with one of these
// fields decides it, checking them in this order: "messages" (chat), "conversations" (sharegpt), "instruction" (alpaca),
// "text". "text" comes last because structured datasets often carry a rendered "text"
// column next to their real fields.
//
// # Invalid input
//
// These records fail: malformed JSON, a missing or wrongly typed field, an unknown
// role, non-UTF-8 bytes, a line over the maximum length, an example without tokens and
// an example without a trainable target. The *InputError names the file, the line and
// the field, such as
//
//	train.jsonl:17: field "messages[2].role": unknown role "bot"; expected system, user, assistant or tool
//
// With Options.SkipInvalid, Load skips such records, logs the first of each kind through
// log/slog and returns the counts in FileStats. A file without records always fails.
//
// # Tokens, targets and packing
//
// Plain text trains on every token and ends with <|endoftext|> (or EOS when the
// vocabulary lacks it). Conversations are
// rendered by the tokenizer's chat template, which labels the assistant turns (and their
// closing <|im_end|>). Examples longer than MaxSeqLen lose their tail, which FileStats
// counts and Load logs.
//
// Rows are MaxSeqLen tokens long. Targets are shifted once, per example, so that
// Targets[t] = Labels[t+1] of the same example, and the last token of an example never
// predicts the first token of the next one. Positions restart at 0 for each example, and
// Row.Starts lists where each example begins, for the attention mask. Padding is always
// found by Row.Length, never by comparing ids with the pad id: Qwen's pad id is
// <|endoftext|>, which also ends every plain text document.
//
// Packing is on by default for plain text, whose documents are often short and would
// otherwise leave most of each row as padding. It is off by default for conversations,
// as in torchtune's chat_dataset. With the boundaries and restarted positions honoured, a packed
// row computes the same per-example loss as unpacked rows.
//
// # Sampling
//
// Sampler follows torch.utils.data.DistributedSampler: a permutation of the rows per
// epoch, seeded by (seed, epoch) with SplitMix64 and Fisher-Yates, implemented here so
// that the order does not change with the Go release. Rank r takes entries r, r+W, r+2W,
// ... of the permutation, after padding or dropping the tail so that every rank gets the
// same number of rows. SamplerState saves the position in an epoch for a checkpoint.
package data
