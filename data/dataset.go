package data

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Packing selects whether rows hold one example or several.
type Packing string

// Packing modes. PackingAuto packs plain text and leaves conversations unpacked.
const (
	PackingAuto Packing = ""
	PackingOn   Packing = "on"
	PackingOff  Packing = "off"
)

// ParsePacking parses a packing mode as given on a command line: auto, on or off.
func ParsePacking(name string) (Packing, error) {
	switch p := Packing(strings.ToLower(strings.TrimSpace(name))); p {
	case PackingAuto, "auto":
		return PackingAuto, nil
	case PackingOn, PackingOff:
		return p, nil
	default:
		return "", fmt.Errorf("unknown packing mode %q; expected auto, on or off", name)
	}
}

// Options configures Load.
type Options struct {
	// Format of the records. FormatAuto detects it as ReadOptions.Format describes.
	Format Format
	// MaxSeqLen is the row length in tokens. Longer examples are truncated to it.
	MaxSeqLen int
	// Packing selects packed rows. PackingAuto packs FormatText and not the chat formats.
	Packing Packing
	// SkipInvalid skips invalid records and examples instead of failing, logs the first
	// of each kind and counts them in FileStats.Skipped. An empty file still fails.
	SkipInvalid bool
	// MaxLineBytes limits one line of input; 0 means DefaultMaxLineBytes.
	MaxLineBytes int
	// EnableThinking and TrainOnAll are passed to Tokenize.
	EnableThinking *bool
	TrainOnAll     bool

	// EvalFraction moves a seeded random fraction of the examples to the eval rows; see
	// SplitEval. EvalPath reads the eval rows from a separate file instead, in the format
	// of the training file. Set at most one of them.
	EvalFraction float64
	EvalPath     string
	// Seed selects the eval split.
	Seed uint64

	// Workers is the number of goroutines that tokenize; 0 means GOMAXPROCS.
	Workers int
	// Logger receives progress and warnings; nil means slog.Default().
	Logger *slog.Logger
}

// FileStats describes one file read by Load.
type FileStats struct {
	Path   string
	Format Format
	// Records counts the non-blank records read, valid or not.
	Records int
	// Examples counts the valid examples, before any eval split.
	Examples int
	// Skipped counts the invalid records and examples skipped, by kind.
	Skipped map[ErrorKind]int
	// Truncated counts the examples cut to Options.MaxSeqLen.
	Truncated int
}

// SkippedTotal returns the number of skipped records of all kinds.
func (s FileStats) SkippedTotal() int {
	n := 0
	for _, c := range s.Skipped {
		n += c
	}
	return n
}

// Dataset holds the rows of a training run.
type Dataset struct {
	Format Format
	Train  *Rows
	// Eval is nil without an eval split.
	Eval *Rows
	// Files describes the training file, then the eval file, if any.
	Files []FileStats
}

// Load reads a dataset file, tokenizes it and builds the training rows and, optionally,
// the eval rows. The result depends only on the file, the tokenizer and opts, so every
// rank can call Load on its own and get the same rows.
func Load(ctx context.Context, path string, tok Tokenizer, opts Options) (*Dataset, error) {
	opts, err := checkOptions(opts)
	if err != nil {
		return nil, err
	}
	padID := tok.Pad()
	if padID < 0 {
		return nil, errors.New("the tokenizer has neither a pad token nor an EOS token to fill rows with; use a tokenizer that defines one")
	}

	if opts.EvalPath != "" && sameFile(opts.EvalPath, path) {
		return nil, fmt.Errorf("the eval file %s is the training file; name a separate file or use an eval fraction", path)
	}

	train, trainStats, err := loadExamples(ctx, path, opts.Format, tok, opts)
	if err != nil {
		return nil, err
	}
	ds := &Dataset{Format: trainStats.Format, Files: []FileStats{trainStats}}

	var eval []Example
	switch {
	case opts.EvalPath != "":
		var evalStats FileStats
		eval, evalStats, err = loadExamples(ctx, opts.EvalPath, ds.Format, tok, opts)
		if err != nil {
			return nil, err
		}
		ds.Files = append(ds.Files, evalStats)
	case opts.EvalFraction > 0:
		train, eval, err = SplitEval(train, opts.EvalFraction, opts.Seed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}

	packed := opts.Packing == PackingOn || (opts.Packing == PackingAuto && !ds.Format.isChat())
	if ds.Train, err = buildRows(train, packed, padID, opts.MaxSeqLen); err != nil {
		return nil, err
	}
	logRows(opts.Logger, "train", ds.Train)
	if eval != nil {
		if ds.Eval, err = buildRows(eval, packed, padID, opts.MaxSeqLen); err != nil {
			return nil, err
		}
		logRows(opts.Logger, "eval", ds.Eval)
	}
	return ds, nil
}

func checkOptions(opts Options) (Options, error) {
	var err error
	if opts.Format, err = ParseFormat(string(opts.Format)); err != nil {
		return opts, err
	}
	if opts.Packing, err = ParsePacking(string(opts.Packing)); err != nil {
		return opts, err
	}
	if opts.MaxSeqLen < 2 {
		return opts, fmt.Errorf("invalid maximum sequence length %d; expected at least 2 tokens", opts.MaxSeqLen)
	}
	if !(opts.EvalFraction >= 0 && opts.EvalFraction < 1) {
		return opts, fmt.Errorf("invalid eval fraction %v; expected 0 (no split) or a number between 0 and 1", opts.EvalFraction)
	}
	if opts.EvalFraction > 0 && opts.EvalPath != "" {
		return opts, errors.New("both an eval fraction and an eval file are set; choose one")
	}
	if opts.Workers < 0 {
		return opts, fmt.Errorf("invalid worker count %d; expected 0 (one per CPU) or more", opts.Workers)
	}
	if opts.Workers == 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return opts, nil
}

func buildRows(examples []Example, packed bool, padID int32, seqLen int) (*Rows, error) {
	if packed {
		return PackRows(examples, seqLen, padID)
	}
	return PadRows(examples, seqLen, padID)
}

func logRows(logger *slog.Logger, split string, rows *Rows) {
	st := rows.Stats()
	logger.Info("built rows", "split", split, "rows", st.Rows, "examples", st.Examples, "packed", rows.Packed(),
		"seq_len", rows.SeqLen(), "tokens", st.Tokens, "target_tokens", st.TargetTokens,
		"padding", fmt.Sprintf("%.1f%%", 100*float64(st.PaddingTokens)/float64(st.Rows*rows.SeqLen())))
}

// sameFile reports whether two paths name one file, through links too.
func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	infoA, errA := os.Stat(a)
	infoB, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(infoA, infoB)
}
