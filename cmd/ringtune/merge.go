package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
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
Into a BF16 or F16 base the merged weights are rounded to that dtype, as PEFT's
merge_and_unload rounds them, so greedy output of --out can differ from generate with
--adapter, which adds the adapter in float32.

The adapter and the base weights are checked against the base's config.json before
anything is written, and base tensors that match no parameter of that model are
rejected by name. Weights are sharded as transformers' save_pretrained shards them.

The merge writes into a temporary directory .OUT.merging-N next to --out, where OUT is
the name of --out, and a new or empty --out is replaced by that directory with one
rename at the end. On an error, Ctrl-C (SIGINT) or SIGTERM, the merge stops, deletes
the temporary directory and leaves --out as it was. A second signal kills ringtune at
once and leaves the directory behind. The next merge into the same --out deletes it
where flock(2) works, as on Linux and macOS. Elsewhere, delete it by hand.

--force writes into a non-empty --out. When the merge is complete, its files are moved
into --out one by one, replacing files of the same names. Then the weight files of
--out that the merge did not write (model.safetensors, model-*-of-*.safetensors and
model.safetensors.index.json) are deleted, and other files stay. A crash while the
files move can leave old and new weight files mixed: merge again before using --out.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "base", Usage: "`PATH` of a Hugging Face model directory with config.json and safetensors weights, or of the model.safetensors or model.safetensors.index.json in it when the directory has both", Required: true},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT adapter `DIR` with adapter_config.json and adapter_model.safetensors", Required: true},
			&cli.StringFlag{Name: "out", Usage: "output `DIR`, which must be new or empty unless --force is set", Required: true},
			&cli.BoolFlag{Name: "force", Usage: "write into a non-empty --out: replace the files that the merge writes and delete the other weight files there. The description explains the risk"},
			&cli.StringFlag{Name: "max-shard-size", Usage: "largest total tensor size of one weight shard: `SIZE` in bytes, or with a unit as transformers' save_pretrained takes it: KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), such as 500MB or 2GiB. A lowercase final b, as in 5Gb, means bits (default: 5GB)"},
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
		size, err := parseShardSize(s)
		if err != nil {
			return fmt.Errorf("--max-shard-size: %w", err)
		}
		if size == 0 {
			return errors.New("--max-shard-size is 0: give a positive size, or leave it out for the default of 5GB")
		}
		opts.MaxShardSize = size
	}

	base, adapter, out := c.String("base"), c.String("adapter"), c.String("out")
	if info, err := os.Stat(base); err == nil && info.IsDir() {
		if err := checkUnambiguousWeights(base, "--base"); err != nil {
			return err
		}
	}
	slog.Info("merge started", "base", base, "adapter", adapter, "out", out)
	start := time.Now()
	result, err := peft.Merge(c.Context, base, adapter, out, opts)
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

// shardSizeUnits are the units of convert_file_size_to_int in transformers'
// src/transformers/utils/hub.py (read at commit 00511f2b), in the order it tests them. It matches a unit case-insensitively, and for KB, MB and GB a string that
// ends in a lowercase "b" counts bits, which it divides by 8, rounding down.
var shardSizeUnits = []struct {
	suffix      string
	multiplier  int64
	bitsAllowed bool
}{
	{"GIB", 1 << 30, false}, {"MIB", 1 << 20, false}, {"KIB", 1 << 10, false},
	{"GB", 1_000_000_000, true}, {"MB", 1_000_000, true}, {"KB", 1_000, true},
}

// parseShardSize parses a shard size as transformers' save_pretrained takes
// max_shard_size: a byte count, or an integer with a unit such as 5GB, 500MB, 100KB or
// 1GiB. A bare integer is a byte count, as an int max_shard_size is in transformers.
func parseShardSize(s string) (int64, error) {
	invalid := fmt.Errorf("invalid size %q: use a byte count such as 5000000000, or an integer with a unit: KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), such as 5GB or 2GiB", s)
	text := strings.TrimSpace(s)
	multiplier, bits := int64(1), false
	for _, u := range shardSizeUnits {
		if strings.HasSuffix(strings.ToUpper(text), u.suffix) {
			multiplier = u.multiplier
			bits = u.bitsAllowed && strings.HasSuffix(text, "b")
			text = strings.TrimSpace(text[:len(text)-len(u.suffix)])
			break
		}
	}
	if text == "" || strings.ContainsAny(text, "+-") {
		return 0, invalid
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, invalid
	}
	if err != nil || n > math.MaxInt64/multiplier {
		return 0, fmt.Errorf("size %q is too large: the limit is %d bytes", s, int64(math.MaxInt64))
	}
	size := n * multiplier
	if bits {
		size /= 8
	}
	return size, nil
}
