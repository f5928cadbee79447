package demodata

import (
	"fmt"
	"path/filepath"
	"slices"
)

// Defaults for the zero fields of Options.
//
// NOTE: the sizes are estimates for a demo that trains in minutes on two CPU cores; no
// training run has measured them. With these defaults the 2.0.1 corpus gives 3,000 Tang
// poems of 134,199 characters in all, 44.7 per poem.
const (
	DefaultMaxPoems     = 3000
	DefaultMaxCi        = 1000
	DefaultMaxChars     = 64
	DefaultEvalFraction = 0.05
	DefaultNumPrompts   = 8
)

// Names of the files that Prepare writes in its output folder.
const (
	PretrainFile     = "pretrain.jsonl"
	PretrainEvalFile = "pretrain_eval.jsonl"
	SFTFile          = "sft.jsonl"
	SFTEvalFile      = "sft_eval.jsonl"
	PromptsFile      = "prompts.txt"
)

// Options configures Prepare. A zero field takes its default.
type Options struct {
	// MaxPoems caps the Tang poems, for pretraining and for the title prompts. Default
	// DefaultMaxPoems.
	MaxPoems int
	// IncludeCi adds Song ci from songci/, up to MaxCi of them, to the pretraining text
	// and the chat records.
	IncludeCi bool
	// MaxCi caps the Song ci when IncludeCi is set. Default DefaultMaxCi.
	MaxCi int
	// MaxChars skips poems whose lines have more characters (Unicode code points,
	// punctuation included) in all. Default DefaultMaxChars, which keeps quatrains and
	// eight-line regulated verse of seven-character lines.
	MaxChars int
	// EvalFraction is the share of distinct titles whose poems go to the eval files, in
	// (0, 1). Default DefaultEvalFraction.
	EvalFraction float64
	// NumPrompts is the maximum number of prompts in prompts.txt. Default DefaultNumPrompts.
	NumPrompts int
	// Seed selects the poems and the eval titles. 0 is a valid seed.
	Seed uint64
}

func (o Options) withDefaults() (Options, error) {
	if o.MaxPoems < 0 || o.MaxCi < 0 || o.MaxChars < 0 || o.NumPrompts < 0 {
		return o, fmt.Errorf("invalid options %+v: MaxPoems, MaxCi, MaxChars and NumPrompts must not be negative", o)
	}
	if o.EvalFraction < 0 || o.EvalFraction >= 1 {
		return o, fmt.Errorf("invalid EvalFraction %v; expected a number in (0, 1), or 0 for %v",
			o.EvalFraction, DefaultEvalFraction)
	}
	if o.MaxPoems == 0 {
		o.MaxPoems = DefaultMaxPoems
	}
	if o.MaxCi == 0 {
		o.MaxCi = DefaultMaxCi
	}
	if o.MaxChars == 0 {
		o.MaxChars = DefaultMaxChars
	}
	if o.EvalFraction == 0 {
		o.EvalFraction = DefaultEvalFraction
	}
	if o.NumPrompts == 0 {
		o.NumPrompts = DefaultNumPrompts
	}
	return o, nil
}

// Stats describes what Prepare read and wrote.
type Stats struct {
	Tang       SourceStats
	Ci         SourceStats // zero unless Options.IncludeCi
	Paraphrase SourceStats
	// TrainTitles and EvalTitles count the distinct titles (tunes for ci) of the selected
	// Tang poems and ci on each side of the split.
	TrainTitles, EvalTitles int
	// ParaphraseTrainTitles and ParaphraseEvalTitles count the same for the paraphrases.
	ParaphraseTrainTitles, ParaphraseEvalTitles int
	// Files lists the written files in the order of the file name constants.
	Files []FileStats
}

// FileStats describes one written file.
type FileStats struct {
	Name    string
	Records int
	Bytes   int64
}

// Prepare reads the chinese-poetry corpus in srcDir, which is the unpacked package or its
// dist/ folder, and writes the demo files into outDir, creating it if needed and replacing
// files of the same names. The package documentation describes the files, the filters
// and the split. Errors name the file and, for an invalid record, its 1-based number in
// the file's JSON array.
func Prepare(srcDir, outDir string, opts Options) (Stats, error) {
	var stats Stats
	opts, err := opts.withDefaults()
	if err != nil {
		return stats, err
	}
	distDir, err := resolveDist(srcDir)
	if err != nil {
		return stats, err
	}

	tang, err := loadTang(distDir, opts.MaxChars, &stats.Tang)
	if err != nil {
		return stats, err
	}
	poems := selectPoems(tang, opts.MaxPoems, opts.Seed)
	stats.Tang.Selected = len(poems)

	if opts.IncludeCi {
		ci, err := loadCi(distDir, opts.MaxChars, &stats.Ci)
		if err != nil {
			return stats, err
		}
		ci = selectPoems(ci, opts.MaxCi, opts.Seed)
		stats.Ci.Selected = len(ci)
		poems = append(poems, ci...)
		slices.SortFunc(poems, comparePoems)
	}

	paraphrases, err := loadParaphrases(distDir, opts.MaxChars, &stats.Paraphrase)
	if err != nil {
		return stats, err
	}
	paraphrases = selectPoems(paraphrases, len(paraphrases), opts.Seed)
	stats.Paraphrase.Selected = len(paraphrases)

	evalTitles, err := splitTitles(poems, opts.EvalFraction, opts.Seed, "poem")
	if err != nil {
		return stats, err
	}
	evalParaphraseTitles, err := splitTitles(paraphrases, opts.EvalFraction, opts.Seed, "paraphrase")
	if err != nil {
		return stats, err
	}
	stats.TrainTitles, stats.EvalTitles = countTitles(poems, evalTitles)
	stats.ParaphraseTrainTitles, stats.ParaphraseEvalTitles = countTitles(paraphrases, evalParaphraseTitles)

	files := buildFiles(poems, paraphrases, evalTitles, evalParaphraseTitles, opts.NumPrompts)
	stats.Files, err = writeFiles(outDir, files)
	return stats, err
}

func countTitles(poems []*poem, eval map[string]bool) (train, evalCount int) {
	seen := make(map[string]bool)
	for _, p := range poems {
		if seen[p.title] {
			continue
		}
		seen[p.title] = true
		if eval[p.title] {
			evalCount++
		} else {
			train++
		}
	}
	return train, evalCount
}

// loadTang reads the eligible Tang poems in corpus order.
func loadTang(distDir string, maxChars int, stats *SourceStats) ([]*poem, error) {
	flagged, err := readFlaggedIDs(distDir)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(distDir, "quantangshi")
	paths, err := listNumbered(dir, "poet.tang.")
	if err != nil {
		return nil, fmt.Errorf("reading the Tang poems: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no poet.tang.N.json files in %s", dir)
	}

	f := newFilter(maxChars, stats)
	var poems []*poem
	for _, path := range paths {
		err := readArray(path, func(_ int, r tangRecord) error {
			stats.Read++
			reason := skipNone
			if flagged[r.ID] {
				reason = skipFlagged
			}
			if title, lines, ok := f.check(r.Title, r.Paragraphs, reason); ok {
				poems = append(poems, &poem{source: sourceTang, title: title, author: r.Author, lines: lines})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return poems, nil
}

// loadCi reads the eligible Song ci in corpus order. The tune (rhythmic) is the title.
func loadCi(distDir string, maxChars int, stats *SourceStats) ([]*poem, error) {
	dir := filepath.Join(distDir, "songci")
	paths, err := listNumbered(dir, "ci.song.")
	if err != nil {
		return nil, fmt.Errorf("reading the Song ci: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no ci.song.N.json files in %s", dir)
	}

	f := newFilter(maxChars, stats)
	var poems []*poem
	for _, path := range paths {
		err := readArray(path, func(_ int, r ciRecord) error {
			stats.Read++
			if title, lines, ok := f.check(r.Rhythmic, r.Paragraphs, skipNone); ok {
				poems = append(poems, &poem{source: sourceCi, title: title, author: r.Author, lines: lines})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return poems, nil
}

// loadParaphrases reads the eligible records of shuimotangshi.json in file order.
func loadParaphrases(distDir string, maxChars int, stats *SourceStats) ([]*poem, error) {
	path := filepath.Join(distDir, "shuimotangshi", "shuimotangshi.json")
	f := newFilter(maxChars, stats)
	var poems []*poem
	err := readArray(path, func(_ int, r paraphraseRecord) error {
		stats.Read++
		paraphrase := cleanParaphrase(r.Prologue)
		reason := skipNone
		if paraphrase == "" {
			reason = skipNoParaphrase
		}
		if title, lines, ok := f.check(r.Title, r.Paragraphs, reason); ok {
			poems = append(poems, &poem{
				source: sourceParaphrase, title: title, author: r.Author, lines: lines, paraphrase: paraphrase,
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return poems, nil
}
