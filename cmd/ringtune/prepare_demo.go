package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/demodata"
)

func prepareDemoCommand() *cli.Command {
	return &cli.Command{
		Name:  "prepare-demo",
		Usage: "build the demo's pretraining and instruction files from the chinese-poetry corpus",
		Description: `Reads the chinese-poetry corpus (npm package chinese-poetry@2.0.1) from --source, the
folder that scripts/fetch-demo-data.sh prints or its dist/ folder, and writes into --out:

  pretrain.jsonl, pretrain_eval.jsonl  {"text"} records, one poem each
  sft.jsonl, sft_eval.jsonl            {"messages"} records, one user and one assistant turn
  prompts.txt                          held-out user prompts separated by blank lines

The poems are Tang poems from quantangshi/ (minus the doubtful ones in
quantangshi/error/), with --ci also Song ci from songci/, and the paraphrased Tang
poems of shuimotangshi/ for the chat records. Damaged, duplicate and over-long poems are
skipped, a seeded hash picks the poems, and the eval files take every poem of a seeded
random share of the titles, 5% by default (--eval-fraction). The same corpus and flags give byte-identical files.
"go doc github.com/ringtune/ringtune/demodata" describes the records and the filters.

Prints the files with their record counts and sizes, and per source the records read,
skipped by each filter, eligible and selected. --json prints one object with the keys
"out", "files" ([{"name", "path", "records", "bytes"}]), "tang", "ci" (only with --ci),
"paraphrase" (each {"read", "flagged", "no_paraphrase", "missing_glyph", "symbol",
"empty_line", "title", "too_long", "duplicate", "eligible", "selected"}) and
"train_titles", "eval_titles", "paraphrase_train_titles", "paraphrase_eval_titles".`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "source", Usage: "corpus `DIR`: the unpacked chinese-poetry package or its dist/ folder", Required: true},
			&cli.StringFlag{Name: "out", Usage: "output `DIR`, created if needed; files of the same names are replaced", Required: true},
			&cli.IntFlag{Name: "poems", Value: demodata.DefaultMaxPoems, Usage: "maximum number of Tang poems, `N`"},
			&cli.IntFlag{Name: "max-chars", Value: demodata.DefaultMaxChars, Usage: "skip poems with more than `N` characters of text, punctuation included"},
			&cli.BoolFlag{Name: "ci", Usage: "also use Song ci from songci/, prompted by their tune"},
			&cli.IntFlag{Name: "max-ci", Value: demodata.DefaultMaxCi, Usage: "with --ci, maximum number of ci, `N`"},
			&cli.Float64Flag{Name: "eval-fraction", Value: demodata.DefaultEvalFraction, Usage: "share of distinct titles whose poems go to the eval files, in (0, 1)"},
			&cli.IntFlag{Name: "prompts", Value: demodata.DefaultNumPrompts, Usage: "maximum number of held-out prompts in prompts.txt, `N`"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed `N` of the poem selection and the eval split"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of text"},
		},
		Action: runPrepareDemo,
	}
}

// prepareDemoOutput is the --json output.
type prepareDemoOutput struct {
	Out                   string            `json:"out"`
	Files                 []prepareDemoFile `json:"files"`
	Tang                  sourceCounts      `json:"tang"`
	Ci                    *sourceCounts     `json:"ci,omitempty"`
	Paraphrase            sourceCounts      `json:"paraphrase"`
	TrainTitles           int               `json:"train_titles"`
	EvalTitles            int               `json:"eval_titles"`
	ParaphraseTrainTitles int               `json:"paraphrase_train_titles"`
	ParaphraseEvalTitles  int               `json:"paraphrase_eval_titles"`
}

// prepareDemoFile describes one written file.
type prepareDemoFile struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Records int    `json:"records"`
	Bytes   int64  `json:"bytes"`
}

// sourceCounts is demodata.SourceStats with the JSON keys of the command's output.
type sourceCounts struct {
	Read         int `json:"read"`
	Flagged      int `json:"flagged"`
	NoParaphrase int `json:"no_paraphrase"`
	MissingGlyph int `json:"missing_glyph"`
	Symbol       int `json:"symbol"`
	EmptyLine    int `json:"empty_line"`
	Title        int `json:"title"`
	TooLong      int `json:"too_long"`
	Duplicate    int `json:"duplicate"`
	Eligible     int `json:"eligible"`
	Selected     int `json:"selected"`
}

func runPrepareDemo(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: pass the corpus with --source DIR and the output folder with --out DIR", c.Args().First())
	}
	opts, err := prepareDemoOptions(c)
	if err != nil {
		return err
	}

	source, out := c.String("source"), c.String("out")
	start := time.Now()
	stats, err := demodata.Prepare(source, out, opts)
	if err != nil {
		return err
	}
	slog.Info("demo data written", "source", source, "out", out, "seconds", time.Since(start).Seconds())

	report := newPrepareDemoOutput(out, stats, opts.IncludeCi)
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(report)
	}
	printPrepareDemo(c.App.Writer, report)
	return nil
}

// prepareDemoOptions checks the flags and converts them into demodata.Options. Every
// field is set explicitly, because a zero field of Options would silently take its
// default.
func prepareDemoOptions(c *cli.Context) (demodata.Options, error) {
	opts := demodata.Options{
		MaxPoems:     c.Int("poems"),
		IncludeCi:    c.Bool("ci"),
		MaxCi:        c.Int("max-ci"),
		MaxChars:     c.Int("max-chars"),
		EvalFraction: c.Float64("eval-fraction"),
		NumPrompts:   c.Int("prompts"),
		Seed:         c.Uint64("seed"),
	}
	switch {
	case c.String("source") == "":
		return opts, errors.New("--source is empty: pass the folder that scripts/fetch-demo-data.sh prints")
	case c.String("out") == "":
		return opts, errors.New("--out is empty: pass the folder to write the demo files into")
	case opts.MaxPoems < 1:
		return opts, fmt.Errorf("--poems is %d: expected at least 1 poem", opts.MaxPoems)
	case opts.MaxChars < 1:
		return opts, fmt.Errorf("--max-chars is %d: expected at least 1 character", opts.MaxChars)
	case opts.MaxCi < 1:
		return opts, fmt.Errorf("--max-ci is %d: expected at least 1 ci", opts.MaxCi)
	case c.IsSet("max-ci") && !opts.IncludeCi:
		return opts, errors.New("--max-ci has no effect without --ci: add --ci or drop --max-ci")
	case !(opts.EvalFraction > 0 && opts.EvalFraction < 1):
		return opts, fmt.Errorf("--eval-fraction is %v: expected a number in (0, 1), such as %v", opts.EvalFraction, demodata.DefaultEvalFraction)
	case opts.NumPrompts < 1:
		return opts, fmt.Errorf("--prompts is %d: expected at least 1 prompt", opts.NumPrompts)
	}
	return opts, nil
}

func newPrepareDemoOutput(out string, stats demodata.Stats, includeCi bool) prepareDemoOutput {
	report := prepareDemoOutput{
		Out:                   out,
		Files:                 make([]prepareDemoFile, len(stats.Files)),
		Tang:                  sourceCounts(stats.Tang),
		Paraphrase:            sourceCounts(stats.Paraphrase),
		TrainTitles:           stats.TrainTitles,
		EvalTitles:            stats.EvalTitles,
		ParaphraseTrainTitles: stats.ParaphraseTrainTitles,
		ParaphraseEvalTitles:  stats.ParaphraseEvalTitles,
	}
	if includeCi {
		ci := sourceCounts(stats.Ci)
		report.Ci = &ci
	}
	for i, f := range stats.Files {
		report.Files[i] = prepareDemoFile{Name: f.Name, Path: filepath.Join(out, f.Name), Records: f.Records, Bytes: f.Bytes}
	}
	return report
}

func printPrepareDemo(w io.Writer, r prepareDemoOutput) {
	table := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(table, "file\trecords\tbytes")
	for _, f := range r.Files {
		fmt.Fprintf(table, "%s\t%d\t%d\n", f.Name, f.Records, f.Bytes)
	}
	table.Flush()
	fmt.Fprintf(w, "written to %s\n\n", r.Out)

	sources := []struct {
		name   string
		counts *sourceCounts
	}{{"tang", &r.Tang}, {"ci", r.Ci}, {"paraphrase", &r.Paraphrase}}
	fmt.Fprintln(table, "source\tread\tflagged\tno_paraphrase\tmissing_glyph\tsymbol\tempty_line\ttitle\ttoo_long\tduplicate\teligible\tselected")
	for _, s := range sources {
		if s.counts == nil {
			continue
		}
		n := s.counts
		fmt.Fprintf(table, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", s.name, n.Read,
			n.Flagged, n.NoParaphrase, n.MissingGlyph, n.Symbol, n.EmptyLine, n.Title, n.TooLong, n.Duplicate, n.Eligible, n.Selected)
	}
	table.Flush()
	fmt.Fprintf(w, "\ntitles: %d train, %d eval (poems); %d train, %d eval (paraphrases)\n",
		r.TrainTitles, r.EvalTitles, r.ParaphraseTrainTitles, r.ParaphraseEvalTitles)
}
