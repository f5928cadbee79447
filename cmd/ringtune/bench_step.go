package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/internal/sysmem"
	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/kernels/device"
	"github.com/ringtune/ringtune/model"
)

// defaultStepLoRATargets are the projections of model.DefaultLoRA, which
// bench/peers/torch_train_step.py also adapts by default.
var defaultStepLoRATargets = strings.Join(model.DefaultLoRA().TargetModules, ",")

func benchStepCommand() *cli.Command {
	return &cli.Command{
		Name:  "step",
		Usage: "time one training step (forward, backward, AdamW) on random weights and tokens, and report tokens/s, TFLOP/s, MFU and peak memory",
		Description: "Builds the model with random weights, then runs --warmup untimed and --steps timed training\n" +
			"steps, each on a new batch of random tokens whose targets are the next token, as\n" +
			"bench/peers/torch_train_step.py does in PyTorch. A step is ZeroGrad, the forward and\n" +
			"backward passes with the mean loss, and an AdamW update. tokens/s is batch × seq over the\n" +
			"median step time. Peak RSS is getrusage's maximum resident set size of the process, which\n" +
			"with --device cuda:N counts host memory only, not GPU memory. Peak device memory is the\n" +
			"maximum of the bytes that the backend held in allocations: the tensor buffers (weights,\n" +
			"gradients, activations and AdamW moments) and, with --device cuda:N, the scratch buffers of\n" +
			"the ops. With --device cpu it counts the tensor buffers in host memory only.\n" +
			"\n" +
			"TFLOP/s is FLOPs per token × tokens/s. The FLOPs are those of the model's matrix products,\n" +
			"2 per multiply-add, per token of a row of --seq tokens:\n" +
			"  full mode: 6 per weight of the seven projections and the LM head (forward 2, input\n" +
			"             gradient 2, weight gradient 2)\n" +
			"  lora mode: 4 per frozen weight (forward 2, input gradient 2) + 6 per adapter weight\n" +
			"  attention: 6·layers·seq·query heads·head_dim, the QKᵀ and AV products forward and\n" +
			"             backward over the causal half of the seq × seq scores\n" +
			"The input embedding is a lookup and is not counted, and a tied embedding counts once, as the\n" +
			"LM head. Elementwise ops, AdamW and recomputed products (the forward pass of --checkpointing,\n" +
			"the QKᵀ of the attention backward) are not counted.\n" +
			"MFU is TFLOP/s over --peak-tflops, such as the bf16 GEMM rate of BenchmarkGemmBF16 in\n" +
			"kernels/cuda on the same GPU.\n" +
			"\n" +
			"--shape and --mode take comma-separated lists. With more than one configuration the\n" +
			"command runs each in a child process of its own, so that each peak RSS covers one\n" +
			"configuration. --json prints one JSON object per configuration and line:\n" +
			`{"tokens_per_s": ..., "step_s": ..., "peak_rss_bytes": ..., "shape": ..., "mode": ...,` + "\n" +
			` "flops_per_token": ..., "model_tflops": ..., "peak_tflops": ..., "mfu": ..., "peak_device_bytes": ...}` + "\n" +
			"where peak_tflops and mfu are null without --peak-tflops, and peak_device_bytes is null when\n" +
			"the backend does not count its memory.\n" +
			"\n" +
			"Set RINGTUNE_CPUPROFILE=FILE to write a CPU profile of the timed steps for go tool pprof\n" +
			"(FILE.1, FILE.2, ... with several configurations).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "shape", Value: "tiny", Usage: "model shapes, comma-separated: presets (" + strings.Join(model.PresetNames(), ", ") + ") or paths of a config.json or its model directory"},
			&cli.StringFlag{Name: "mode", Value: "full", Usage: "training modes, comma-separated: full trains every weight, lora only the adapters"},
			&cli.IntFlag{Name: "lora-rank", Value: 8, Usage: "LoRA rank r"},
			&cli.Float64Flag{Name: "lora-alpha", Value: 16, Usage: "LoRA alpha, which scales adapter outputs by alpha / r"},
			&cli.StringFlag{Name: "lora-targets", Value: defaultStepLoRATargets, Usage: "comma-separated projections that get adapters, or all for the seven of " + strings.Join(model.ProjectionModules(), ", ")},
			&cli.BoolFlag{Name: "frozen-bf16", Usage: "in LoRA mode, keep the frozen weights in bfloat16 (half their fp32 memory)"},
			&cli.BoolFlag{Name: "checkpointing", Usage: "recompute each decoder layer's activations in backward instead of keeping them (activation checkpointing)"},
			&cli.IntFlag{Name: "batch", Value: 4, Usage: "rows (sequences) per step"},
			&cli.IntFlag{Name: "seq", Value: 256, Usage: "tokens per row, at least 2"},
			&cli.IntFlag{Name: "steps", Value: 5, Usage: "timed steps after the warm-up"},
			&cli.IntFlag{Name: "warmup", Value: 1, Usage: "untimed steps before the timed ones. The first step touches the gradient, optimizer and scratch memory for the first time, so it is slower"},
			&cli.StringFlag{Name: "device", Value: "cpu", Usage: "compute `DEVICE`: cpu, or cuda:N for the GPU of ordinal N (cuda is cuda:0)"},
			&cli.IntFlag{Name: "threads", Usage: "GOMAXPROCS, the threads that run the kernels (0: keep the Go default, the number of CPUs or $GOMAXPROCS)"},
			&cli.IntFlag{Name: "cross-entropy-chunk-rows", Usage: "rows of logits that the backend computes at a time in the loss, which take 4·rows·vocab bytes (0: the backend's default)"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the random weights and token batches"},
			&cli.Float64Flag{Name: "lr", Value: 1e-4, Usage: "AdamW learning rate"},
			&cli.Float64Flag{Name: "peak-tflops", Usage: "reference rate in TFLOP/s that MFU divides the achieved TFLOP/s by, such as the measured bf16 GEMM rate of the GPU (0: no MFU)"},
			&cli.BoolFlag{Name: "json", Usage: "print only one JSON object per configuration on stdout; logs go to stderr"},
		},
		Action: runBenchStep,
	}
}

// stepResult is the measurement of one configuration. The JSON keys are a
// stable interface, shared with bench/peers/torch_train_step.py.
type stepResult struct {
	TokensPerS   float64 `json:"tokens_per_s"`
	StepS        float64 `json:"step_s"` // median over the timed steps
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	Shape        string  `json:"shape"`
	Mode         string  `json:"mode"`

	FLOPsPerToken int64   `json:"flops_per_token"` // see trainingFLOPsPerToken
	ModelTFLOPS   float64 `json:"model_tflops"`    // FLOPsPerToken × TokensPerS / 10¹²
	// PeakTFLOPS is --peak-tflops, and MFU is ModelTFLOPS / PeakTFLOPS. Both
	// are nil without --peak-tflops.
	PeakTFLOPS *float64 `json:"peak_tflops"`
	MFU        *float64 `json:"mfu"`
	// PeakDeviceBytes is the backend's kernels.MemoryStats.PeakAllocatedBytes,
	// or nil when the backend does not implement it.
	PeakDeviceBytes *int64 `json:"peak_device_bytes"`
}

// stepParams are the settings of one configuration.
type stepParams struct {
	shape string // as given, a preset name or a path
	cfg   model.Config
	opts  model.Options // Mode, LoRA, FrozenBF16, Checkpointing, MaxBatch, MaxSeq

	batch, seq, steps, warmup int
	device                    device.Spec
	threads                   int // 0 keeps GOMAXPROCS
	chunkRows                 int // device.Options.CrossEntropyChunkRows; 0 is the backend's default
	seed                      uint64
	lr                        float64
	peakTFLOPS                float64 // 0: no MFU
}

// args returns the flags that make a child process run exactly p.
func (p stepParams) args() []string {
	args := []string{
		"--shape", p.shape, "--mode", p.opts.Mode.String(),
		"--batch", fmt.Sprint(p.batch), "--seq", fmt.Sprint(p.seq),
		"--steps", fmt.Sprint(p.steps), "--warmup", fmt.Sprint(p.warmup), "--device", p.device.String(),
		"--threads", fmt.Sprint(p.threads), "--cross-entropy-chunk-rows", fmt.Sprint(p.chunkRows), "--seed", fmt.Sprint(p.seed),
		"--lr", fmt.Sprint(p.lr), "--peak-tflops", fmt.Sprint(p.peakTFLOPS),
	}
	if p.opts.Mode == model.ModeLoRA {
		args = append(args, "--lora-rank", fmt.Sprint(p.opts.LoRA.Rank), "--lora-alpha", fmt.Sprint(p.opts.LoRA.Alpha),
			"--lora-targets", strings.Join(p.opts.LoRA.TargetModules, ","))
		if p.opts.FrozenBF16 {
			args = append(args, "--frozen-bf16")
		}
	}
	if p.opts.Checkpointing {
		args = append(args, "--checkpointing")
	}
	return append(args, "--json")
}

func runBenchStep(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: bench step takes only flags", c.Args().First())
	}
	configs, err := readStepParams(c)
	if err != nil {
		return err
	}
	var results []stepResult
	if len(configs) == 1 {
		r, err := runStepConfig(c.Context, configs[0])
		if err != nil {
			return err
		}
		results = append(results, r)
	} else {
		results, err = runStepChildren(c, configs)
		if err != nil {
			return err
		}
	}
	return printStepResults(c.App.Writer, results, configs, c.Bool("json"))
}

// readStepParams checks the flags and returns one configuration per shape and
// mode, shapes outermost.
func readStepParams(c *cli.Context) ([]stepParams, error) {
	dev, err := deviceFlag(c)
	if err != nil {
		return nil, err
	}
	base := stepParams{
		batch: c.Int("batch"), seq: c.Int("seq"), steps: c.Int("steps"), warmup: c.Int("warmup"), device: dev,
		threads: c.Int("threads"), chunkRows: c.Int("cross-entropy-chunk-rows"), seed: c.Uint64("seed"), lr: c.Float64("lr"),
		peakTFLOPS: c.Float64("peak-tflops"),
	}
	if base.seq < 2 {
		return nil, fmt.Errorf("invalid --seq %d: next-token loss needs at least 2 tokens per row", base.seq)
	}
	for _, f := range []struct {
		name  string
		value int
		min   int
	}{{"batch", base.batch, 1}, {"steps", base.steps, 1}, {"warmup", base.warmup, 0}, {"threads", base.threads, 0}, {"cross-entropy-chunk-rows", base.chunkRows, 0}} {
		if f.value < f.min {
			return nil, fmt.Errorf("invalid --%s %d: use %d or more", f.name, f.value, f.min)
		}
	}
	if !(base.lr >= 0) || math.IsInf(base.lr, 0) {
		return nil, fmt.Errorf("invalid --lr %v: use a finite number, 0 or more", base.lr)
	}
	if !(base.peakTFLOPS >= 0) || math.IsInf(base.peakTFLOPS, 0) {
		return nil, fmt.Errorf("invalid --peak-tflops %v: use the reference rate in TFLOP/s, or 0 for no MFU", base.peakTFLOPS)
	}

	modes, err := parseStepModes(c.String("mode"))
	if err != nil {
		return nil, err
	}
	hasLoRA := slices.Contains(modes, model.ModeLoRA)
	lora, err := readStepLoRA(c)
	if err != nil {
		return nil, err
	}
	if c.Bool("frozen-bf16") && !hasLoRA {
		return nil, errors.New("--frozen-bf16 needs --mode lora: full training keeps every weight in fp32")
	}
	if !hasLoRA {
		for _, name := range []string{"lora-rank", "lora-alpha", "lora-targets"} {
			if c.IsSet(name) {
				slog.Warn("flag ignored: it applies only to --mode lora", "flag", "--"+name)
			}
		}
	}

	var configs []stepParams
	for _, shape := range splitList(c.String("shape")) {
		cfg, err := model.ResolveConfig(shape)
		if err != nil {
			return nil, fmt.Errorf("--shape %s: %w", shape, err)
		}
		if cfg.MaxPositionEmbeddings > 0 && base.seq > cfg.MaxPositionEmbeddings {
			return nil, fmt.Errorf("--seq %d exceeds max_position_embeddings %d of --shape %s", base.seq, cfg.MaxPositionEmbeddings, shape)
		}
		for _, mode := range modes {
			p := base
			p.shape, p.cfg = shape, cfg
			p.opts = model.Options{Mode: mode, Checkpointing: c.Bool("checkpointing"), MaxBatch: base.batch, MaxSeq: base.seq}
			if mode == model.ModeLoRA {
				p.opts.LoRA = lora
				p.opts.FrozenBF16 = c.Bool("frozen-bf16")
			}
			if err := p.opts.Validate(); err != nil {
				return nil, fmt.Errorf("--shape %s --mode %s: %w", shape, mode, err)
			}
			configs = append(configs, p)
		}
	}
	if len(configs) == 0 {
		return nil, errors.New("--shape is empty: name a preset (" + strings.Join(model.PresetNames(), ", ") + ") or a config.json path")
	}
	return configs, nil
}

// splitList splits a comma-separated flag value and drops empty entries.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func parseStepModes(list string) ([]model.Mode, error) {
	var modes []model.Mode
	for _, name := range splitList(list) {
		mode, err := model.ParseMode(name)
		if err != nil {
			return nil, fmt.Errorf("--mode: %w", err)
		}
		if slices.Contains(modes, mode) {
			return nil, fmt.Errorf("--mode lists %s twice", mode)
		}
		modes = append(modes, mode)
	}
	if len(modes) == 0 {
		return nil, errors.New("--mode is empty: use full, lora or full,lora")
	}
	return modes, nil
}

func readStepLoRA(c *cli.Context) (model.LoRAConfig, error) {
	lora := model.LoRAConfig{Rank: c.Int("lora-rank"), Alpha: c.Float64("lora-alpha")}
	if strings.TrimSpace(c.String("lora-targets")) == "all" {
		lora.TargetModules = model.ProjectionModules()
	} else {
		lora.TargetModules = splitList(c.String("lora-targets"))
	}
	if lora.Rank <= 0 {
		return lora, fmt.Errorf("invalid --lora-rank %d: use a positive integer", lora.Rank)
	}
	if !(lora.Alpha > 0) || math.IsInf(lora.Alpha, 0) {
		return lora, fmt.Errorf("invalid --lora-alpha %v: use a positive number", lora.Alpha)
	}
	if err := lora.Validate(); err != nil {
		return lora, fmt.Errorf("--lora-targets %q: %w", c.String("lora-targets"), err)
	}
	return lora, nil
}

// runStepConfig builds the model of p in this process and times its steps.
func runStepConfig(ctx context.Context, p stepParams) (stepResult, error) {
	if p.threads > 0 {
		if p.threads > runtime.NumCPU() {
			slog.Warn("more threads than CPUs: the kernels' goroutines will share cores", "threads", p.threads, "cpus", runtime.NumCPU())
		}
		runtime.GOMAXPROCS(p.threads)
	}
	// The host check covers the CPU backend only, because a GPU holds the
	// weights and optimizer state of the CUDA backend.
	if p.device.Kind == device.CPU {
		if err := checkStepMemory(p); err != nil {
			return stepResult{}, err
		}
	}

	trainable := p.cfg.NumParams()
	if p.opts.Mode == model.ModeLoRA {
		trainable = p.cfg.NumLoRAParams(p.opts.LoRA)
	}
	slog.Info("building model", "shape", p.shape, "mode", p.opts.Mode, "params", p.cfg.NumParams(), "trainable", trainable,
		"frozen_bf16", p.opts.FrozenBF16, "checkpointing", p.opts.Checkpointing,
		"batch", p.batch, "seq", p.seq, "device", p.device, "threads", runtime.GOMAXPROCS(0), "kernel", cpu.Kernel())
	start := time.Now()
	backend, err := device.Open(p.device, device.Options{CrossEntropyChunkRows: p.chunkRows})
	if err != nil {
		return stepResult{}, err
	}
	defer backend.Close()
	m, err := model.New(backend, p.cfg, p.opts)
	if err != nil {
		return stepResult{}, fmt.Errorf("build %s model: %w", p.shape, err)
	}
	defer m.Close()
	logMemory("model allocated")
	if err := m.InitRandom(p.seed); err != nil {
		return stepResult{}, err
	}
	logMemory("weights initialized")
	opt, err := model.NewAdamW(m, model.DefaultAdamW())
	if err != nil {
		return stepResult{}, err
	}
	defer opt.Close()
	slog.Info("model ready", "seconds", time.Since(start).Seconds())

	times, err := timeSteps(ctx, m, opt, p)
	if err != nil {
		return stepResult{}, err
	}
	stepS := medianSeconds(times)
	r := stepResult{
		TokensPerS:   float64(p.batch*p.seq) / stepS,
		StepS:        stepS,
		PeakRSSBytes: sysmem.PeakRSSBytes(),
		Shape:        p.shape,
		Mode:         p.opts.Mode.String(),
	}
	r.setFLOPs(trainingFLOPsPerToken(p.cfg, p.opts, p.seq), p.peakTFLOPS)
	if stats, ok := backend.(kernels.MemoryStats); ok {
		peak := stats.PeakAllocatedBytes()
		r.PeakDeviceBytes = &peak
	}
	slog.Info("done", "tokens_per_s", r.TokensPerS, "step_s", r.StepS, "min_step_s", slices.Min(times), "max_step_s", slices.Max(times),
		"model_tflops", r.ModelTFLOPS, "mfu", optionalValue(r.MFU), "peak_rss_bytes", r.PeakRSSBytes,
		"peak_device_bytes", optionalValue(r.PeakDeviceBytes))
	return r, nil
}

// setFLOPs sets the FLOPs per token and the rates that follow from them and
// TokensPerS. peakTFLOPS 0 leaves PeakTFLOPS and MFU nil.
func (r *stepResult) setFLOPs(flopsPerToken int64, peakTFLOPS float64) {
	r.FLOPsPerToken = flopsPerToken
	r.ModelTFLOPS = float64(flopsPerToken) * r.TokensPerS / 1e12
	if peakTFLOPS > 0 {
		mfu := r.ModelTFLOPS / peakTFLOPS
		r.PeakTFLOPS, r.MFU = &peakTFLOPS, &mfu
	}
}

// optionalValue returns *p, or nil when p is nil, for log attributes.
func optionalValue[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// trainingFLOPsPerToken returns the model FLOPs of one training step, forward
// and backward, per token of rows of seq tokens. It counts the matrix
// products, 2 FLOPs per multiply-add:
//
//   - Each weight of the projections and the LM head takes 6 in full mode:
//     forward 2, input gradient 2 and weight gradient 2. In LoRA mode these
//     weights are frozen and take 4, because no weight gradient is computed.
//   - Each LoRA adapter weight takes 6.
//   - Causal attention takes 6·L·seq·NH·HS. Query t attends to t+1 keys, about
//     seq/2 on average, so the QKᵀ and AV products take 2·(seq/2)·NH·HS each
//     per layer forward, and backward takes twice the forward.
//
// The input embedding is a lookup, not a product, so a tied embedding counts
// once, as the LM head. Norms, RoPE, SwiGLU, softmax, the loss and AdamW are
// not counted. Neither is the forward pass that activation checkpointing
// repeats, nor the QKᵀ that the attention backward recomputes, because model
// FLOPs count the work of the model and not of its implementation.
//
// NOTE: the CPU and CUDA attention kernels skip the key tiles above the
// diagonal but compute the tiles on it whole, and the head skips the last
// token of each row, which has no target. Both differ from this count by
// less than 1/seq of the attention's or the head's share.
func trainingFLOPsPerToken(cfg model.Config, opts model.Options, seq int) int64 {
	// The LM head multiplies by a (V, C) matrix whether or not it is tied.
	productWeights := int64(cfg.VocabSize) * int64(cfg.HiddenSize)
	for _, p := range cfg.Params() {
		if p.Module != "" {
			productWeights += p.NumElements()
		}
	}
	flops := 6 * productWeights
	if opts.Mode == model.ModeLoRA {
		flops = 4*productWeights + 6*cfg.NumLoRAParams(opts.LoRA)
	}
	attentionWidth := int64(cfg.NumHeads) * int64(cfg.HeadDim)
	return flops + 6*int64(cfg.NumLayers)*int64(seq)*attentionWidth
}

// timeSteps runs the warm-up and timed steps and returns the times of the timed ones.
func timeSteps(ctx context.Context, m *model.Model, opt *model.AdamW, p stepParams) ([]float64, error) {
	rng := rand.New(rand.NewPCG(p.seed, 0x72696e6774756e65)) // second word: "ringtune" in ASCII
	batch := newNextTokenBatch(p.batch, p.seq)

	bar := newProgressBar(p.warmup+p.steps, fmt.Sprintf("%s %s steps", p.shape, p.opts.Mode))
	if bar != nil {
		defer bar.Finish()
	}

	var times []float64
	for i := range p.warmup + p.steps {
		if err := context.Cause(ctx); err != nil {
			return nil, err
		}
		if i == p.warmup {
			stop, err := startCPUProfile(os.Getenv("RINGTUNE_CPUPROFILE"))
			if err != nil {
				return nil, err
			}
			defer stop()
		}
		fillRandomTokens(batch, rng, p.cfg.VocabSize)

		start := time.Now()
		m.ZeroGrad()
		lossSum, targets, err := m.ForwardBackward(batch, 1/float32(batch.TargetTokens), nil)
		if err != nil {
			return nil, err
		}
		if err := opt.Step(p.lr); err != nil {
			return nil, err
		}
		// A device backend may still run the update when Step returns.
		if err := m.Backend().Sync(); err != nil {
			return nil, err
		}
		seconds := time.Since(start).Seconds()

		warmup := i < p.warmup
		if !warmup {
			times = append(times, seconds)
		}
		slog.Debug("step", "index", i, "warm_up", warmup, "seconds", seconds, "loss", lossSum/float64(targets))
		logMemory("after step")
		if bar != nil {
			_ = bar.Add(1)
		}
	}
	return times, nil
}

// newNextTokenBatch allocates a batch of rows of one example each, whose tokens
// fillRandomTokens sets.
func newNextTokenBatch(rows, seq int) *data.Batch {
	n := rows * seq
	b := &data.Batch{
		Size: rows, SeqLen: seq,
		IDs: make([]int32, n), Targets: make([]int32, n), Positions: make([]int32, n),
		Starts: make([][]int32, rows), Lengths: make([]int, rows), RowIndices: make([]int, rows),
		Tokens: n, TargetTokens: rows * (seq - 1),
	}
	for i := range n {
		b.Positions[i] = int32(i % seq)
	}
	for r := range rows {
		b.Starts[r] = []int32{0}
		b.Lengths[r] = seq
		b.RowIndices[r] = r
	}
	return b
}

// fillRandomTokens draws uniform token ids and sets each target to the next
// token of its row. The last token of a row has no target.
func fillRandomTokens(b *data.Batch, rng *rand.Rand, vocab int) {
	for i := range b.IDs {
		b.IDs[i] = int32(rng.IntN(vocab))
	}
	for i := range b.Targets {
		if (i+1)%b.SeqLen == 0 {
			b.Targets[i] = kernels.IgnoreIndex
		} else {
			b.Targets[i] = b.IDs[i+1]
		}
	}
}

// medianSeconds returns the middle value, or the mean of the two middle values,
// as Python's statistics.median does. values must not be empty.
func medianSeconds(values []float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// logMemory logs, at debug level, the resident set size of the process now
// and at its peak, from /proc/self/status.
func logMemory(stage string) {
	if !slog.Default().Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	attrs := []any{"stage", stage}
	for _, line := range strings.Split(string(status), "\n") {
		var kib int64
		for _, key := range []string{"VmRSS", "VmHWM"} {
			if _, err := fmt.Sscanf(line, key+": %d kB", &kib); err == nil {
				attrs = append(attrs, strings.ToLower(key)+"_bytes", kib<<10)
			}
		}
	}
	slog.Debug("memory", attrs...)
}

// checkStepMemory fails when the weights, gradients and AdamW moments of p alone
// would not fit in the memory that the kernel reports as available.
func checkStepMemory(p stepParams) error {
	available, ok := memAvailableBytes()
	if !ok {
		return nil
	}
	// Full training keeps four fp32 copies of every parameter (value, gradient
	// and two moments). LoRA keeps the frozen weights once, and the adapters'
	// four copies are small.
	need := 16 * p.cfg.NumParams()
	if p.opts.Mode == model.ModeLoRA {
		frozenBytes := int64(4)
		if p.opts.FrozenBF16 {
			frozenBytes = 2 // the norm weights stay fp32, but they are a tiny fraction
		}
		need = frozenBytes*p.cfg.NumParams() + 16*p.cfg.NumLoRAParams(p.opts.LoRA)
	}
	if need > available {
		return fmt.Errorf("--shape %s --mode %s needs at least %.1f GiB for weights, gradients and AdamW moments before activations, but only %.1f GiB is available: use a smaller shape, --mode lora or --frozen-bf16",
			p.shape, p.opts.Mode, float64(need)/(1<<30), float64(available)/(1<<30))
	}
	return nil
}

// memAvailableBytes returns MemAvailable from /proc/meminfo. ok is false where
// the file does not exist or lacks the line, as outside Linux.
func memAvailableBytes() (available int64, ok bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kib int64
		if _, err := fmt.Sscanf(sc.Text(), "MemAvailable: %d kB", &kib); err == nil {
			return kib << 10, true
		}
	}
	return 0, false
}

// runStepChildren runs each configuration in a child process of this binary,
// one after the other, and collects their JSON results.
func runStepChildren(c *cli.Context, configs []stepParams) ([]stepResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	env := append(os.Environ(), logSettings(c)...)
	profile := os.Getenv("RINGTUNE_CPUPROFILE")
	var results []stepResult
	for i, p := range configs {
		slog.Info("starting configuration", "index", i+1, "of", len(configs), "shape", p.shape, "mode", p.opts.Mode)
		cmd := exec.CommandContext(c.Context, self, append([]string{"bench", "step"}, p.args()...)...)
		cmd.Env = env
		if profile != "" {
			// Each child writes its own profile, numbered like the configurations.
			cmd.Env = append(slices.Clone(env), fmt.Sprintf("RINGTUNE_CPUPROFILE=%s.%d", profile, i+1))
		}
		cmd.Stderr = os.Stderr
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		setParentDeathSignal(cmd)
		if err := cmd.Run(); err != nil {
			if cause := context.Cause(c.Context); cause != nil {
				return nil, cause
			}
			return nil, fmt.Errorf("--shape %s --mode %s failed in its child process: %w", p.shape, p.opts.Mode, err)
		}
		var r stepResult
		dec := json.NewDecoder(&stdout)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("--shape %s --mode %s: child printed no valid result: %w: %q", p.shape, p.opts.Mode, err, stdout.String())
		}
		results = append(results, r)
	}
	return results, nil
}

// printStepResults prints the results as JSON lines or as a table. configs are
// the settings behind results, in the same order.
func printStepResults(w io.Writer, results []stepResult, configs []stepParams, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, r := range results {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	p := configs[0]
	threads := p.threads
	if threads == 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if p.device.Kind == device.CPU {
		fmt.Fprintf(w, "# ringtune training step (forward, backward, AdamW) on cpu, %s kernel, %d threads\n", cpu.Kernel(), threads)
	} else {
		fmt.Fprintf(w, "# ringtune training step (forward, backward, AdamW) on %s\n", p.device)
	}
	fmt.Fprintf(w, "# step: median of %d steps after %d warm-up; tokens/s = batch × seq / step; peak RSS per process\n", p.steps, p.warmup)
	fmt.Fprintln(w, "# TFLOP/s = FLOPs per token × tokens/s, counting matrix products: 6 per weight (full) or 4 per frozen weight")
	fmt.Fprintln(w, "#   and 6 per adapter weight (lora), plus 6·layers·seq·query heads·head_dim for causal attention")
	if p.peakTFLOPS > 0 {
		fmt.Fprintf(w, "# MFU = TFLOP/s / %g (--peak-tflops)\n", p.peakTFLOPS)
	}
	memoryLabel := "peak dev(GiB)"
	if p.device.Kind == device.CPU {
		fmt.Fprintln(w, "# tensors: peak of the backend's tensor buffers in host memory (weights, gradients, activations, AdamW moments), without the ops' scratch")
		memoryLabel = "tensors(GiB)"
	} else {
		fmt.Fprintln(w, "# peak dev: peak of the device memory that the backend allocated for tensor buffers and the ops' scratch")
	}

	fmt.Fprintf(w, "%-12s %-14s %10s %12s %10s %9s", "shape", "mode", "batch×seq", "tokens/s", "step(s)", "TFLOP/s")
	if p.peakTFLOPS > 0 {
		fmt.Fprintf(w, " %7s", "MFU")
	}
	fmt.Fprintf(w, " %14s %14s\n", "peak RSS(GiB)", memoryLabel)
	for i, r := range results {
		fmt.Fprintf(w, "%-12s %-14s %10s %12.1f %10.3f %9.3f", r.Shape, describeStepMode(configs[i]),
			fmt.Sprintf("%d×%d", configs[i].batch, configs[i].seq), r.TokensPerS, r.StepS, r.ModelTFLOPS)
		if p.peakTFLOPS > 0 {
			fmt.Fprintf(w, " %6.1f%%", 100*optionalFloat(r.MFU))
		}
		deviceGiB := "-"
		if r.PeakDeviceBytes != nil {
			deviceGiB = fmt.Sprintf("%.2f", float64(*r.PeakDeviceBytes)/(1<<30))
		}
		fmt.Fprintf(w, " %14.2f %14s\n", float64(r.PeakRSSBytes)/(1<<30), deviceGiB)
	}
	return nil
}

// optionalFloat returns *p, or NaN when p is nil.
func optionalFloat(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

// describeStepMode returns the mode with its memory options, such as lora+bf16.
func describeStepMode(p stepParams) string {
	s := p.opts.Mode.String()
	if p.opts.FrozenBF16 {
		s += "+bf16"
	}
	if p.opts.Checkpointing {
		s += "+ckpt"
	}
	return s
}
