package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/node"
)

// compareStopGrace is how long compare waits for a train process to stop its
// nodes and exit after SIGINT before it kills it. train itself gives its nodes
// childStopGrace.
const compareStopGrace = 3 * childStopGrace

// compareModes are the two runs of a comparison, in the order they run.
var compareModes = []string{"full", "lora"}

func compareCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.IntFlag{Name: "nodes", Aliases: []string{"n"}, Usage: "number of local node processes of each run (overrides cluster.nodes)"},
		&cli.StringFlag{Name: "out", Usage: "comparison folder `DIR`: the runs go to DIR/full and DIR/lora, the report next to them (default: the config's output folder with -compare appended)", TakesFile: true},
	}
	return &cli.Command{
		Name:  "compare",
		Usage: "train the same job in full and in LoRA mode and report what each costs",
		Description: `compare runs "ringtune train" twice on this host, first with --mode full and
then with --mode lora, with the same base model, data, steps, nodes and seed. The
LoRA run takes its settings from the config's lora section. Both runs need a
pretrained base (model.init pretrained), because LoRA trains adapters on frozen
pretrained weights.

The runs write into DIR/full and DIR/lora as train writes into its output folder.
Then compare writes REPORT.md, report.json and PNG charts into DIR: parameters
updated, peak memory, step time split into compute and exposed all-reduce,
tokens/s, bytes on the wire, sizes on disk, eval loss and wall time, with the
full : LoRA ratios, and prints the table on stdout. Every number comes from the
runs' files, and report.json names the file of each. When one run fails, compare still reports the other and exits
with an error that names the failed run.

Every job config flag below passes through to both runs, except --mode and
--output, which compare sets itself.`,
		Flags:  append(flags, compareJobFlags()...),
		Action: runCompare,
	}
}

// compareRun is one train run of a comparison.
type compareRun struct {
	Mode   string `json:"mode"`
	Output string `json:"output"`
	// Args are the arguments of the train process, without the executable.
	Args []string `json:"args"`
	// WallSeconds is the wall time of the train process, measured by compare.
	WallSeconds float64 `json:"wall_s"`
	Error       string  `json:"error,omitempty"`
}

func runCompare(c *cli.Context) error {
	if err := rejectCompareOverrides(c); err != nil {
		return err
	}
	passed, err := passedJobFlags(c)
	if err != nil {
		return err
	}
	job, err := loadCompareJob(c)
	if err != nil {
		return err
	}
	// Check the base, the tokenizer and the data once here, rather than
	// through two failed runs.
	if _, err := node.LoadInputs(c.Context, job, version, slog.Default()); err != nil {
		return err
	}
	if c.IsSet("nodes") {
		if c.Int("nodes") < 1 {
			return fmt.Errorf("invalid --nodes %d: use 1 or more", c.Int("nodes"))
		}
		job.Cluster.Nodes = c.Int("nodes")
		passed = append(passed, "--nodes="+strconv.Itoa(c.Int("nodes")))
	}

	out := c.String("out")
	if out == "" {
		out = filepath.Clean(job.Output) + "-compare"
	}
	out, err = filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := checkFreshCompareFolder(out); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("creating the comparison folder: %w", err)
	}

	globals := []string{"--log-level=" + c.String("log-level"), "--log-format=" + c.String("log-format")}
	runs := make([]*compareRun, 0, len(compareModes))
	for _, mode := range compareModes {
		run := &compareRun{Mode: mode, Output: filepath.Join(out, mode)}
		run.Args = append(append(append([]string{}, globals...), "train", "--config", c.String("config")), passed...)
		if mode == "full" && job.Model.FrozenBF16 {
			// bfloat16 frozen weights exist only in LoRA mode: in full mode every
			// weight trains in fp32.
			run.Args = append(run.Args, "--model-frozen-bf16=false")
		}
		run.Args = append(run.Args, "--mode="+mode, "--output="+run.Output)
		runs = append(runs, run)
	}

	for _, run := range runs {
		if err := c.Context.Err(); err != nil {
			return fmt.Errorf("stopped before the %s run: %w", run.Mode, context.Cause(c.Context))
		}
		slog.Info("starting the run", "mode", run.Mode, "output", run.Output)
		err := runTrainProcess(c.Context, run)
		if err != nil {
			run.Error = err.Error()
			slog.Error("the run failed", "mode", run.Mode, "output", run.Output, "err", err)
		} else {
			slog.Info("the run finished", "mode", run.Mode, "wall_s", run.WallSeconds)
		}
		if c.Context.Err() != nil {
			return fmt.Errorf("stopped during the %s run: %w (its output is in %s)", run.Mode, context.Cause(c.Context), run.Output)
		}
	}

	report, reportErr := writeCompareReport(out, c.String("config"), job, runs)
	if report != nil {
		fmt.Fprint(c.App.Writer, report.table())
		fmt.Fprintf(c.App.Writer, "\nreport: %s\n", filepath.Join(out, compareReportFile))
	}
	return errors.Join(failedRunsError(runs, out), reportErr)
}

// rejectCompareOverrides rejects the flags that would change what compare
// itself sets for each run.
func rejectCompareOverrides(c *cli.Context) error {
	if c.IsSet("mode") {
		return errors.New("--mode is not accepted: compare runs the job once in full and once in LoRA mode")
	}
	if c.IsSet("output") {
		return errors.New("--output is not accepted: compare writes the runs into DIR/full and DIR/lora, so choose DIR with --out")
	}
	for _, assignment := range c.StringSlice(jobconfig.SetFlag) {
		key, _, _ := strings.Cut(assignment, "=")
		switch strings.TrimSpace(key) {
		case "mode":
			return fmt.Errorf("--set %s is not accepted: compare runs the job once in full and once in LoRA mode", assignment)
		case "output":
			return fmt.Errorf("--set %s is not accepted: compare writes the runs into DIR/full and DIR/lora, so choose DIR with --out", assignment)
		}
	}
	return nil
}

// passedJobFlags returns the job config flags that the command line set, as
// train arguments in --name=value form.
func passedJobFlags(c *cli.Context) ([]string, error) {
	var args []string
	for _, flag := range jobconfig.Flags() {
		name := flag.Names()[0]
		if !c.IsSet(name) {
			continue
		}
		switch flag.(type) {
		case *cli.StringFlag:
			args = append(args, "--"+name+"="+c.String(name))
		case *cli.IntFlag:
			args = append(args, "--"+name+"="+strconv.Itoa(c.Int(name)))
		case *cli.Uint64Flag:
			args = append(args, "--"+name+"="+strconv.FormatUint(c.Uint64(name), 10))
		case *cli.Float64Flag:
			args = append(args, "--"+name+"="+strconv.FormatFloat(c.Float64(name), 'g', -1, 64))
		case *cli.BoolFlag:
			args = append(args, "--"+name+"="+strconv.FormatBool(c.Bool(name)))
		case *cli.StringSliceFlag:
			// The flag split each value at commas; train joins the parts again
			// in the same way, --set assignments included.
			for _, part := range c.StringSlice(name) {
				args = append(args, "--"+name+"="+part)
			}
		default:
			return nil, fmt.Errorf("internal error: no way to pass on the flag --%s of type %T", name, flag)
		}
	}
	return args, nil
}

// loadCompareJob loads the job config in LoRA mode. It rejects a config
// without a pretrained base with a message that explains why.
func loadCompareJob(c *cli.Context) (*jobconfig.Config, error) {
	if err := c.Set("mode", "lora"); err != nil {
		return nil, err
	}
	job, loraErr := loadJob(c)
	if loraErr == nil {
		return job, nil
	}
	// A random-init config fails validation in LoRA mode. Load it in full mode
	// to tell that case apart from other invalid configs.
	if err := c.Set("mode", "full"); err != nil {
		return nil, err
	}
	if full, err := loadJob(c); err == nil && full.Model.Init == "random" {
		return nil, errors.New("compare needs a pretrained base, but model.init is random: LoRA trains adapters on frozen pretrained weights. " +
			"Set model.init to pretrained and model.base to a trained model folder (such as the model/ folder of a full run), " +
			"for example with --model-init pretrained --model-base DIR")
	}
	return nil, loraErr
}

// checkFreshCompareFolder rejects a comparison folder that holds runs of an
// earlier comparison, which train would refuse to overwrite.
func checkFreshCompareFolder(out string) error {
	for _, mode := range compareModes {
		dir := filepath.Join(out, mode)
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		if len(entries) > 0 {
			return fmt.Errorf("the comparison folder %s already contains a %s run of an earlier comparison: remove %s or choose another --out", out, mode, dir)
		}
	}
	return nil
}

// runTrainProcess runs `ringtune train` for one run, with its output on
// stderr, and records its wall time. When ctx ends it sends the process one
// SIGINT, so that train stops its nodes and keeps the last checkpoint.
func runTrainProcess(ctx context.Context, run *compareRun) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, exe, run.Args...)
	// train's summary goes to stderr too, so that stdout carries only the
	// comparison. A terminal on stderr keeps train's progress bar.
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// A process group of its own keeps a Ctrl-C on the terminal from reaching
	// train directly: train exits at once on a second signal, so compare sends
	// the only one.
	setNodeProcAttr(cmd)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = compareStopGrace

	begin := time.Now()
	err = cmd.Run()
	run.WallSeconds = time.Since(begin).Seconds()
	if err != nil {
		return fmt.Errorf("ringtune %s: %w", strings.Join(run.Args, " "), err)
	}
	return nil
}

// failedRunsError names the runs that failed and where the report is.
func failedRunsError(runs []*compareRun, out string) error {
	var failed []string
	for _, run := range runs {
		if run.Error != "" {
			failed = append(failed, fmt.Sprintf("the %s run failed (its output and logs are in %s): %s", run.Mode, run.Output, run.Error))
		}
	}
	switch len(failed) {
	case 0:
		return nil
	case len(runs):
		return errors.New(strings.Join(failed, "\n"))
	}
	return fmt.Errorf("%s\nthe report in %s covers the other run only", strings.Join(failed, "\n"), out)
}

// compareJobFlags returns the job flags with --mode and --output hidden from
// help: compare sets them for each run and rejects them on its command line.
func compareJobFlags() []cli.Flag {
	flags := jobFlags()
	for _, f := range flags {
		if sf, ok := f.(*cli.StringFlag); ok && (sf.Name == "mode" || sf.Name == "output") {
			sf.Hidden = true
		}
	}
	return flags
}
