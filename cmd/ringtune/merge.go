package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/peft"
)

func mergeCommand() *cli.Command {
	return &cli.Command{
		Name:  "merge",
		Usage: "merge a PEFT LoRA adapter into its base model's weights",
		Description: `Writes a standalone model to --out: every adapted weight becomes W + scaling·B·A,
computed in float64 and rounded once to the base weight's dtype (F32, BF16, F16 or F64)
to nearest even. scaling is lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
Other tensors are copied unchanged, and config.json, the tokenizer files and the other
non-weight files of --base are copied, so transformers loads --out like the base.

The adapter is checked against the base's config.json before anything is written.
Weights are sharded as transformers' save_pretrained shards them. A new or empty --out
is written under a temporary name and renamed when complete.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "base", Usage: "Hugging Face model `DIR` with config.json and safetensors weights", Required: true},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT adapter `DIR` with adapter_config.json and adapter_model.safetensors", Required: true},
			&cli.StringFlag{Name: "out", Usage: "output `DIR`, which must be new or empty unless --force is set", Required: true},
			&cli.BoolFlag{Name: "force", Usage: "write into a non-empty --out, replacing the files that the merge writes"},
			&cli.StringFlag{Name: "max-shard-size", Usage: "largest weight shard: `SIZE` in bytes, or in binary units such as 2GiB (default: 5000000000 bytes, as in transformers' save_pretrained)"},
		},
		Action: runMerge,
	}
}

func runMerge(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: pass the directories with --base, --adapter and --out", c.Args().First())
	}
	opts := peft.MergeOptions{Overwrite: c.Bool("force")}
	if s := c.String("max-shard-size"); s != "" {
		size, err := parseSize(s)
		if err != nil {
			return fmt.Errorf("--max-shard-size: %w", err)
		}
		if size == 0 {
			return errors.New("--max-shard-size is 0: give a positive size, or leave it out for the default of 5 GB")
		}
		opts.MaxShardSize = size
	}

	base, adapter, out := c.String("base"), c.String("adapter"), c.String("out")
	slog.Info("merge started", "base", base, "adapter", adapter, "out", out)
	start := time.Now()
	result, err := peft.Merge(base, adapter, out, opts)
	if errors.Is(err, peft.ErrOutputExists) {
		return fmt.Errorf("%w, or pass --force to write into it", err)
	}
	if err != nil {
		return err
	}
	slog.Info("merge finished", "out", out, "merged", result.Merged, "seconds", time.Since(start).Seconds())

	w := c.App.Writer
	fmt.Fprintf(w, "merged %s into %s: %d weights changed (scaling %g), %d tensors copied unchanged\n",
		adapter, base, result.Merged, result.Scaling, result.Copied)
	fmt.Fprintf(w, "wrote %s: %s\n", out, strings.Join(result.WeightFiles, ", "))
	fmt.Fprintf(w, "copied from the base: %s\n", listOrNone(result.CopiedFiles))
	if len(result.SkippedFiles) > 0 {
		fmt.Fprintf(w, "not copied (other weight formats, adapter files, directories): %s\n", strings.Join(result.SkippedFiles, ", "))
	}
	return nil
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
