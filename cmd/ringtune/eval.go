package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
)

// defaultEvalSeqLen caps the row length when --seq-len is not given, so a
// model with a long context does not allocate activations for all of it.
const defaultEvalSeqLen = 2048

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "compute the loss and perplexity of a Qwen3 model, optionally with a LoRA adapter, on a dataset",
		Description: `Loads config.json, the safetensors weights and the tokenizer from --model, builds
the rows of --data as training does (the same formats, truncation, targets and
packing), runs the forward pass over every row in file order, --batch rows at a
time on the CPU, and prints the mean cross-entropy per target token and the
perplexity exp(loss). Only the tokens that training takes loss on count, so a chat
dataset is scored on its assistant turns.

--json prints one object with "loss", "perplexity", "target_tokens", "examples" and
"rows".`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "Hugging Face model `DIR` with config.json, model.safetensors (or shards and model.safetensors.index.json) and the tokenizer files", Required: true},
			&cli.StringFlag{Name: "tokenizer", Usage: "`DIR` with tokenizer.json and tokenizer_config.json (default: --model)"},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT LoRA adapter `DIR` with adapter_config.json and adapter_model.safetensors"},
			&cli.StringFlag{Name: "data", Usage: "dataset `FILE`: .txt, or JSON Lines (.jsonl, .ndjson, .json, optionally .gz)", Required: true},
			&cli.StringFlag{Name: "format", Value: "auto", Usage: "record format of --data: auto, text, alpaca, chat or sharegpt, where auto detects it from the first record"},
			&cli.IntFlag{Name: "seq-len", Usage: "row length of `N` tokens, to which longer examples are truncated", DefaultText: fmt.Sprintf("max_position_embeddings of config.json, at most %d", defaultEvalSeqLen)},
			&cli.IntFlag{Name: "batch", Value: 4, Usage: "`B` rows per forward pass"},
			&cli.BoolFlag{Name: "packing", Usage: "pack several examples into each row, or with --packing=false give each example its own row", DefaultText: "packs plain text, not conversations"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of text"},
		},
		Action: runEval,
	}
}

// evalOutput is the --json output.
type evalOutput struct {
	Loss         float64 `json:"loss"`
	Perplexity   float64 `json:"perplexity"`
	TargetTokens int     `json:"target_tokens"`
	Examples     int     `json:"examples"`
	Rows         int     `json:"rows"`
}

// evalFlags is the set of checked flag values of eval.
type evalFlags struct {
	format  data.Format
	packing data.Packing
	seqLen  int // 0 selects the default from config.json
	batch   int
}

func runEval(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: pass the dataset with --data FILE", c.Args().First())
	}
	flags, err := checkEvalFlags(c)
	if err != nil {
		return err
	}

	modelDir := c.String("model")
	cfg, err := loadModelConfig(modelDir)
	if err != nil {
		return err
	}
	if flags.seqLen == 0 {
		flags.seqLen = min(cfg.MaxPositionEmbeddings, defaultEvalSeqLen)
	} else if flags.seqLen > cfg.MaxPositionEmbeddings {
		return fmt.Errorf("--seq-len %d is above max_position_embeddings %d of config.json: pass at most %d", flags.seqLen, cfg.MaxPositionEmbeddings, cfg.MaxPositionEmbeddings)
	}
	tok, err := loadGenerateTokenizer(c, cfg)
	if err != nil {
		return err
	}

	dataPath := c.String("data")
	ds, err := data.Load(c.Context, dataPath, tok, data.Options{Format: flags.format, MaxSeqLen: flags.seqLen, Packing: flags.packing})
	if err != nil {
		return err
	}
	stats := ds.Train.Stats()

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
	m, err := loadInferenceModel(be, cfg, modelDir, c.String("adapter"), false, model.Options{MaxBatch: min(flags.batch, stats.Rows), MaxSeq: flags.seqLen})
	if err != nil {
		return err
	}
	defer m.Close()
	slog.Info("model loaded", "model", modelDir, "adapter", c.String("adapter"), "mode", m.Options().Mode,
		"layers", cfg.NumLayers, "parameters", cfg.NumParams(), "seconds", time.Since(start).Seconds())

	lossSum, targets, err := sumLoss(c.Context, m, ds.Train, flags.batch)
	if err != nil {
		return err
	}
	if targets == 0 {
		return fmt.Errorf("%s has no target tokens to compute a loss on", dataPath)
	}
	out := evalOutput{
		Loss:         lossSum / float64(targets),
		TargetTokens: targets,
		Examples:     stats.Examples,
		Rows:         stats.Rows,
	}
	out.Perplexity = math.Exp(out.Loss)
	return printEval(c, out, ds.Files[0].Truncated, flags.seqLen)
}

// checkEvalFlags rejects flag values before anything is loaded.
func checkEvalFlags(c *cli.Context) (evalFlags, error) {
	var flags evalFlags
	var err error
	if flags.format, err = data.ParseFormat(c.String("format")); err != nil {
		return flags, fmt.Errorf("--format: %w", err)
	}
	if c.IsSet("packing") {
		flags.packing = data.PackingOff
		if c.Bool("packing") {
			flags.packing = data.PackingOn
		}
	}
	flags.seqLen = c.Int("seq-len")
	if c.IsSet("seq-len") && flags.seqLen < 2 {
		return flags, fmt.Errorf("--seq-len is %d: want at least 2 tokens, because each target is the next token", flags.seqLen)
	}
	flags.batch = c.Int("batch")
	if flags.batch < 1 {
		return flags, fmt.Errorf("--batch is %d: want at least 1 row", flags.batch)
	}
	if c.String("data") == "" {
		return flags, errors.New("--data is empty: pass a dataset FILE")
	}
	return flags, nil
}

// sumLoss runs the forward pass over all rows in index order, batchSize rows
// at a time, and returns the summed cross-entropy and the number of target
// tokens.
func sumLoss(ctx context.Context, m *model.Model, rows *data.Rows, batchSize int) (float64, int, error) {
	var lossSum float64
	var targets int
	indices := make([]int, 0, batchSize)
	for first := 0; first < rows.Len(); first += batchSize {
		if err := context.Cause(ctx); err != nil {
			return 0, 0, err
		}
		indices = indices[:0]
		for i := first; i < min(first+batchSize, rows.Len()); i++ {
			indices = append(indices, i)
		}
		batch, err := data.NewBatch(rows, indices)
		if err != nil {
			return 0, 0, err
		}
		sum, count, err := m.Loss(batch)
		if err != nil {
			return 0, 0, err
		}
		lossSum += sum
		targets += count
		slog.Debug("eval batch", "first_row", first, "rows", len(indices), "target_tokens", count, "loss", sum/float64(max(count, 1)))
	}
	return lossSum, targets, nil
}

func printEval(c *cli.Context, out evalOutput, truncated, seqLen int) error {
	w := c.App.Writer
	if !c.Bool("json") {
		_, err := fmt.Fprintf(w, "loss           %.6f (mean cross-entropy per target token, nats)\nperplexity     %.4f\ntarget tokens  %d\nexamples       %d (%d truncated to --seq-len %d)\nrows           %d\n",
			out.Loss, out.Perplexity, out.TargetTokens, out.Examples, truncated, seqLen, out.Rows)
		return err
	}
	// JSON has no NaN or infinity, so such a result is an error instead of a
	// number that a reader would misparse.
	if math.IsNaN(out.Loss) || math.IsInf(out.Perplexity, 0) {
		return fmt.Errorf("the loss %v or its perplexity %v is not a finite number and cannot be written as JSON", out.Loss, out.Perplexity)
	}
	enc := json.NewEncoder(w)
	return enc.Encode(out)
}
