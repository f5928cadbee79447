package data

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
)

// chunkRecords is how many records are read before they are tokenized together. It
// bounds the raw text held in memory.
const chunkRecords = 1024

// loadExamples reads and tokenizes one file. One goroutine reads the next chunk of
// records while the workers tokenize the current one. Errors come in file order,
// because a chunk is tokenized before a read error that follows it is returned.
func loadExamples(ctx context.Context, path string, format Format, tok Tokenizer, opts Options) ([]Example, FileStats, error) {
	reader, err := Open(path, ReadOptions{Format: format, MaxLineBytes: opts.MaxLineBytes})
	if err != nil {
		return nil, FileStats{}, err
	}
	defer reader.Close()

	ctx, cancel := context.WithCancel(ctx)
	skips := newSkipCounter(opts.Logger, path)
	var records int
	chunks := make(chan recordChunk, 1)
	var readerDone sync.WaitGroup
	readerDone.Go(func() {
		defer close(chunks)
		for {
			chunk := readChunk(ctx, reader, skips, opts.SkipInvalid, &records)
			select {
			case chunks <- chunk:
			case <-ctx.Done():
				return
			}
			if chunk.err != nil {
				return
			}
		}
	})
	// Stop the reading goroutine before the deferred Close of its file.
	defer readerDone.Wait()
	defer cancel()

	tokOpts := TokenizeOptions{MaxSeqLen: opts.MaxSeqLen, EnableThinking: opts.EnableThinking, TrainOnAll: opts.TrainOnAll}
	endOfText := endOfTextID(tok)
	stats := FileStats{Path: path}
	var examples []Example
	longest := 0

	for chunk := range chunks {
		if endOfText < 0 && len(chunk.records) > 0 && chunk.records[0].Format == FormatText {
			return nil, stats, fmt.Errorf("%s: %w", path, errNoEndOfText)
		}
		results, errs, err := tokenizeChunk(ctx, tok, endOfText, chunk.records, tokOpts, opts.Workers)
		if err != nil {
			return nil, stats, err
		}
		for i := range results {
			if errs[i] != nil {
				if !opts.SkipInvalid {
					return nil, stats, errs[i]
				}
				skips.add(errs[i])
				continue
			}
			if results[i].Truncated() {
				stats.Truncated++
				longest = max(longest, results[i].OriginalLen)
			}
			examples = append(examples, results[i])
		}
		if chunk.err != nil && !errors.Is(chunk.err, io.EOF) {
			return nil, stats, chunk.err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, stats, err
	}

	stats.Records = records
	stats.Format = reader.Format()
	stats.Examples = len(examples)
	stats.Skipped = skips.snapshot()
	skips.logSummary()
	if stats.Truncated > 0 {
		opts.Logger.Warn("truncated examples to the maximum sequence length", "file", path, "truncated", stats.Truncated,
			"max_seq_len", opts.MaxSeqLen, "longest_tokens", longest)
	}
	if len(examples) == 0 {
		return nil, stats, fmt.Errorf("%s: no valid examples among %d records (%d skipped as invalid)", path, stats.Records, stats.SkippedTotal())
	}
	opts.Logger.Info("read dataset file", "file", path, "format", stats.Format, "records", stats.Records,
		"examples", stats.Examples, "skipped", stats.SkippedTotal(), "truncated", stats.Truncated)
	return examples, stats, nil
}

// recordChunk is up to chunkRecords valid records and the error that ended the chunk
// early: io.EOF at the end of the file, or an error that is not skipped.
type recordChunk struct {
	records []Record
	err     error
}

// readChunk reads the next chunk and adds the records it reads, valid or not, to count.
func readChunk(ctx context.Context, reader *Reader, skips *skipCounter, skipInvalid bool, count *int) recordChunk {
	records := make([]Record, 0, chunkRecords)
	for len(records) < chunkRecords {
		if err := ctx.Err(); err != nil {
			return recordChunk{records, err}
		}
		rec, err := reader.Next()
		if errors.Is(err, io.EOF) {
			return recordChunk{records, io.EOF}
		}
		var inputErr *InputError
		if errors.As(err, &inputErr) && inputErr.Kind != KindEmptyFile {
			*count++
			if !skipInvalid {
				return recordChunk{records, err}
			}
			skips.add(inputErr)
			continue
		}
		if err != nil {
			return recordChunk{records, err}
		}
		*count++
		records = append(records, rec)
	}
	return recordChunk{records, nil}
}

// tokenizeChunk tokenizes records on several goroutines. results[i] and errs[i] belong
// to records[i].
func tokenizeChunk(ctx context.Context, tok Tokenizer, endOfText int32, records []Record, opts TokenizeOptions, workers int) ([]Example, []*InputError, error) {
	results := make([]Example, len(records))
	errs := make([]*InputError, len(records))
	const step = 16
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, (len(records)+step-1)/step) {
		wg.Go(func() {
			for ctx.Err() == nil {
				start := int(next.Add(step)) - step
				if start >= len(records) {
					return
				}
				for i := start; i < min(start+step, len(records)); i++ {
					results[i], errs[i] = tokenize(tok, endOfText, records[i], opts)
				}
			}
		})
	}
	wg.Wait()
	return results, errs, ctx.Err()
}

// skipCounter counts skipped records by kind and logs the first of each kind. The
// reading goroutine and the tokenizing loop share it.
type skipCounter struct {
	logger *slog.Logger
	file   string
	mu     sync.Mutex
	counts map[ErrorKind]int
}

func newSkipCounter(logger *slog.Logger, file string) *skipCounter {
	return &skipCounter{logger: logger, file: file, counts: map[ErrorKind]int{}}
}

func (s *skipCounter) add(err *InputError) {
	s.mu.Lock()
	s.counts[err.Kind]++
	first := s.counts[err.Kind] == 1
	s.mu.Unlock()
	if first {
		s.logger.Warn("skipping invalid record; later records of this kind are only counted", "kind", string(err.Kind), "error", err.Error())
	}
}

// snapshot returns a copy of the counts.
func (s *skipCounter) snapshot() map[ErrorKind]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := make(map[ErrorKind]int, len(s.counts))
	for kind, n := range s.counts {
		counts[kind] = n
	}
	return counts
}

func (s *skipCounter) logSummary() {
	counts := s.snapshot()
	if len(counts) == 0 {
		return
	}
	kinds := make([]string, 0, len(counts))
	for kind := range counts {
		kinds = append(kinds, string(kind))
	}
	sort.Strings(kinds)
	attrs := make([]any, 0, len(kinds))
	total := 0
	for _, kind := range kinds {
		attrs = append(attrs, slog.Int(kind, counts[ErrorKind(kind)]))
		total += counts[ErrorKind(kind)]
	}
	s.logger.Warn("skipped invalid records", "file", s.file, "total", total, slog.Group("by_kind", attrs...))
}
