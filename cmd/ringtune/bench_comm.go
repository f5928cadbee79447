package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/train"
)

// loraTargetSets are the names --lora-targets accepts besides explicit lists.
var loraTargetSets = map[string][]string{
	"attention": {"q_proj", "k_proj", "v_proj", "o_proj"},
	"all":       model.ProjectionModules(),
}

func benchCommCommand() *cli.Command {
	flags := append(commRingFlags(),
		&cli.StringFlag{Name: "model", Value: "qwen3-0.6b", Usage: "model shape: a preset (" + strings.Join(model.PresetNames(), ", ") + "), a Hugging Face model directory or its config.json; only the config is read"},
		&cli.StringFlag{Name: "mode", Value: "full,lora", Usage: "training modes, comma-separated: full, lora"},
		&cli.StringFlag{Name: "lora-rank", Value: "8", Usage: "LoRA ranks, comma-separated, such as 8,16"},
		&cli.StringFlag{Name: "lora-targets", Value: "attention", Usage: "LoRA target sets separated by ';': attention (q,k,v,o_proj), all (the seven projections) or a comma-separated list of projections, such as 'attention;all' or 'q_proj,v_proj'"},
		&cli.StringFlag{Name: "nodes", Value: "2", Usage: "world sizes, comma-separated, such as 2,4"},
		&cli.IntFlag{Name: "steps", Value: 5, Usage: "timed all-reduce steps per configuration"},
		&cli.IntFlag{Name: "warmup", Value: 1, Usage: "untimed all-reduce steps per configuration before the timed ones"},
		&cli.StringFlag{Name: "dtype", Value: "fp32", Usage: "gradient element types on the wire, comma-separated: fp32, bf16"},
		&cli.Float64Flag{Name: "bucket-mb", Value: float64(train.DefaultBucketBytes) / (1 << 20), Usage: "largest gradient bucket in MiB of fp32 gradients, as cluster.bucket_mb in training"},
		&cli.BoolFlag{Name: "json", Usage: `print only {"rows": [...]} on stdout; logs go to stderr and the projection is left out`},
		&cli.Float64Flag{Name: "link-gbps", Usage: "run each rank in its own network namespace behind a link shaped to this rate in Gbit/s (needs root, ip and tc; 0: loopback)"},
		&cli.DurationFlag{Name: "link-latency", Usage: "one-way latency added on each shaped link, such as 1ms; also the per-hop latency of the projection"},
		&cli.StringFlag{Name: "chart", Usage: "write a PNG bar chart of the all-reduce time per step to this file (default: no chart)"},
		&cli.StringFlag{Name: "project-gbps", Value: "10,25,100", Usage: "link rates in Gbit/s, comma-separated, to project the step time for"},
		&cli.Float64Flag{Name: "compute-s", Usage: "measured compute seconds per training step (forward and backward), for the projected step time and scaling efficiency"},
	)
	return &cli.Command{
		Name:  "comm",
		Usage: "measure the bytes and time that each training mode's gradient all-reduce puts on the wire",
		Description: "Builds the trainable-gradient buckets that training all-reduces for each mode (from the\n" +
			"model config only, without allocating the model), starts N local processes that form a\n" +
			"ring, and runs --warmup + --steps steps per configuration. A step starts an all-reduce of\n" +
			"every bucket at once and waits for all of them, as train.Stepper does after backward, with\n" +
			"no model compute. Configurations are named full or lora-r<rank>-<targets>, such as\n" +
			"lora-r8-attention, lora-r16-all or lora-r8-q_proj+v_proj.\n" +
			"\n" +
			"bytes sent is the mean over ranks of each rank's payload bytes per step, from the\n" +
			"communicator's counters. time is the median over the timed steps of the slowest rank's\n" +
			"step time. algbw = gradient bytes (fp32) / time; busbw = algbw * 2(N-1)/N; GB/s is 1e9\n" +
			"bytes/s. With --link-gbps every rank runs in a network namespace of its own, behind a\n" +
			"veth pair whose two ends are shaped with tc to the rate (and --link-latency where the\n" +
			"kernel has netem; otherwise with tbf and no added latency).\n" +
			"\n" +
			"--json prints only {\"rows\": [...]}, one object per mode, world size and dtype with the keys\n" +
			"mode, nodes, dtype, gradient_bytes, bytes_sent_per_node_per_step, allreduce_s_per_step and\n" +
			"busbw_GBps.",
		Flags:  flags,
		Action: runBenchComm,
	}
}

func benchCommWorkerCommand() *cli.Command {
	return &cli.Command{
		Name:   "comm-worker",
		Usage:  "one rank of a local 'bench comm' run (started by it; speaks JSON lines on stdin and stdout)",
		Hidden: true,
		Flags: append(commRingFlags(),
			&cli.IntFlag{Name: "rank", Required: true},
			&cli.IntFlag{Name: "world-size", Required: true},
			&cli.StringFlag{Name: "dtype", Value: "fp32"},
			&cli.StringFlag{Name: "listen-host", Value: "127.0.0.1"},
		),
		Action: runBenchCommWorker,
	}
}

// commRingFlags are the ring settings of ringFlags that bench comm shares: all but
// the size sweep, its schedule and the single dtype.
func commRingFlags() []cli.Flag {
	var flags []cli.Flag
	for _, f := range ringFlags() {
		switch f.Names()[0] {
		case "sizes", "dtype", "iters", "warmup":
			continue
		}
		flags = append(flags, f)
	}
	return flags
}

// readCommRingParams reads the flags of commRingFlags through readRingParams,
// the reader that bench allreduce uses too.
func readCommRingParams(c *cli.Context) (sweepParams, error) {
	p := sweepParams{dtype: collective.Float32}
	err := readRingParams(c, &p)
	return p, err
}

// commRingArgs returns the worker flags that carry p's ring settings. The job
// token travels in the environment, out of the process list.
func commRingArgs(p sweepParams) []string {
	return []string{
		"--dtype", p.dtype.String(),
		"--chunk-bytes", fmt.Sprint(p.chunk), "--small-bytes", fmt.Sprint(max(p.small, 0)),
		"--tls-cert", p.tls[0], "--tls-key", p.tls[1], "--tls-ca", p.tls[2],
		"--timeout", p.timeout.String(), "--connect-timeout", p.connectTimeout.String(),
		"--no-progress-timeout", p.stallTimeout.String(),
	}
}

// commConfig is one trainable-gradient set: a mode with its LoRA settings, cut
// into the buckets that training all-reduces.
type commConfig struct {
	label   string // full, or lora-r<rank>-<targets>
	mode    model.Mode
	buckets []train.Bucket
	elems   int64 // gradient elements, the sum over buckets
}

// bucketSizes returns the element count of every bucket, in all-reduce order.
func (c commConfig) bucketSizes() []int {
	sizes := make([]int, len(c.buckets))
	for i, b := range c.buckets {
		sizes[i] = b.End - b.Start
	}
	return sizes
}

// commSettings are the parsed flags of bench comm.
type commSettings struct {
	modelName   string
	configs     []commConfig
	nodes       []int
	dtypes      []collective.WireDType
	steps       int
	warmup      int
	bucketBytes int
	link        linkShape
	chart       string
	projectGbps []float64
	computeS    float64
	ring        sweepParams
	asJSON      bool
	smallBytes  int // buffers of at most this many fp32 bytes take the small all-reduce; 0: never
}

func readCommSettings(c *cli.Context) (commSettings, error) {
	s := commSettings{modelName: c.String("model"), asJSON: c.Bool("json"), chart: c.String("chart")}
	var err error
	if s.ring, err = readCommRingParams(c); err != nil {
		return s, err
	}
	cfg, err := model.ResolveConfig(s.modelName)
	if err != nil {
		return s, fmt.Errorf("--model: %w", err)
	}
	if s.nodes, err = parseIntList(c.String("nodes"), "nodes"); err != nil {
		return s, err
	}
	for _, n := range s.nodes {
		if n < 2 {
			return s, fmt.Errorf("invalid --nodes entry %d: a ring needs at least 2 ranks", n)
		}
	}
	for _, name := range strings.Split(c.String("dtype"), ",") {
		dtype, err := collective.ParseWireDType(strings.TrimSpace(name))
		if err != nil {
			return s, fmt.Errorf("--dtype: %w", err)
		}
		s.dtypes = append(s.dtypes, dtype)
	}

	s.steps, s.warmup = c.Int("steps"), c.Int("warmup")
	if s.steps < 1 {
		return s, fmt.Errorf("--steps is %d, must be at least 1", s.steps)
	}
	if s.warmup < 0 {
		return s, fmt.Errorf("--warmup is %d, must be 0 or positive", s.warmup)
	}
	// A bucket holds at least one 4-byte gradient and at most 4 GiB, which keeps
	// the byte count far from integer overflow.
	mb := c.Float64("bucket-mb")
	if !(mb >= 4.0/(1<<20) && mb <= 4096) {
		return s, fmt.Errorf("--bucket-mb is %v, must be in [4 bytes, 4096] MiB", mb)
	}
	s.bucketBytes = int(mb * (1 << 20))

	// tc's tbf takes rates from about 1 kbit/s to well above what a host sends.
	s.link = linkShape{gbps: c.Float64("link-gbps"), latency: c.Duration("link-latency")}
	if gbps := s.link.gbps; !(gbps == 0 || (gbps >= 1e-3 && gbps <= 1000)) {
		return s, fmt.Errorf("--link-gbps is %v: use a rate from 0.001 to 1000 Gbit/s, or 0 for loopback", gbps)
	}
	if s.link.latency < 0 || s.link.latency > time.Minute {
		return s, fmt.Errorf("--link-latency is %v, must be from 0 to 1m", s.link.latency)
	}
	if s.link.latency > 0 && s.link.gbps == 0 {
		return s, errors.New("--link-latency needs --link-gbps: loopback has no link to delay")
	}
	if s.projectGbps, err = parseFloatList(c.String("project-gbps"), "project-gbps"); err != nil {
		return s, err
	}
	for _, gbps := range s.projectGbps {
		if !(gbps >= 1e-3 && gbps <= 1e5) {
			return s, fmt.Errorf("--project-gbps has %v: use rates from 0.001 to 100000 Gbit/s", gbps)
		}
	}

	s.computeS = c.Float64("compute-s")
	if !(s.computeS >= 0 && s.computeS <= 1e6) {
		return s, fmt.Errorf("--compute-s is %v, must be a number of seconds from 0 to 1e6", s.computeS)
	}
	if s.chart != "" && !strings.HasSuffix(strings.ToLower(s.chart), ".png") {
		return s, fmt.Errorf("--chart %q must name a .png file", s.chart)
	}
	if s.chart != "" {
		if info, err := os.Stat(filepath.Dir(s.chart)); err != nil || !info.IsDir() {
			return s, fmt.Errorf("--chart %q: the folder %s does not exist", s.chart, filepath.Dir(s.chart))
		}
	}
	s.smallBytes = max(s.ring.small, 0)
	s.configs, err = commConfigs(cfg, c.String("mode"), c.String("lora-rank"), c.String("lora-targets"), s.bucketBytes)
	return s, err
}

// commConfigs returns one configuration per full mode and per LoRA rank and
// target set, with the buckets of training.
func commConfigs(cfg model.Config, modes, ranks, targetSets string, bucketBytes int) ([]commConfig, error) {
	var configs []commConfig
	add := func(label string, opts model.Options) error {
		specs, err := model.TrainableSpecs(cfg, opts)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		sizes := make([]int, len(specs))
		var elems int64
		for i, spec := range specs {
			sizes[i] = int(spec.NumElements())
			elems += spec.NumElements()
		}
		buckets, err := train.PlanBuckets(sizes, bucketBytes)
		if err != nil {
			return err
		}
		configs = append(configs, commConfig{label: label, mode: opts.Mode, buckets: buckets, elems: elems})
		return nil
	}
	for _, name := range strings.Split(modes, ",") {
		mode, err := model.ParseMode(strings.TrimSpace(name))
		if err != nil {
			return nil, fmt.Errorf("--mode: %w", err)
		}
		if mode == model.ModeFull {
			if err := add("full", model.Options{Mode: model.ModeFull}); err != nil {
				return nil, err
			}
			continue
		}
		rankList, err := parseIntList(ranks, "lora-rank")
		if err != nil {
			return nil, err
		}
		for _, r := range rankList {
			for _, set := range strings.Split(targetSets, ";") {
				targets, name, err := parseLoRATargets(set)
				if err != nil {
					return nil, err
				}
				lora := model.LoRAConfig{Rank: r, Alpha: float64(2 * r), TargetModules: targets}
				if err := add(fmt.Sprintf("lora-r%d-%s", r, name), model.Options{Mode: model.ModeLoRA, LoRA: lora}); err != nil {
					return nil, fmt.Errorf("--lora-rank, --lora-targets: %w", err)
				}
			}
		}
	}
	return configs, nil
}

// parseLoRATargets parses one target set of --lora-targets and returns the
// projections and the name that labels the configuration.
func parseLoRATargets(set string) ([]string, string, error) {
	set = strings.TrimSpace(set)
	if targets, ok := loraTargetSets[set]; ok {
		return targets, set, nil
	}
	var targets []string
	for _, t := range strings.Split(set, ",") {
		if t = strings.TrimSpace(t); t != "" {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		return nil, "", fmt.Errorf("empty --lora-targets set %q: use attention, all or projections such as q_proj,v_proj", set)
	}
	return targets, strings.Join(targets, "+"), nil
}

// parseFloatList parses a comma-separated list of positive numbers.
func parseFloatList(s, flag string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
		if err != nil || !(v > 0) {
			return nil, fmt.Errorf("invalid --%s entry %q: use positive numbers such as 10,25,100", flag, part)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty --%s list", flag)
	}
	return out, nil
}

// theoryBytesSent returns the payload bytes that a rank sends per step, as the
// mean over ranks. A bucket of S wire bytes costs 2(N-1)/N · S in the ring
// all-reduce. A bucket of at most smallBytes fp32 bytes takes the small
// all-reduce instead, which sends (N-1) · S.
func theoryBytesSent(buckets []int, n int, dtype collective.WireDType, smallBytes int) float64 {
	wire := 4.0
	if dtype == collective.BFloat16 {
		wire = 2
	}
	var total float64
	for _, elems := range buckets {
		size := float64(elems) * wire
		if elems*4 <= smallBytes {
			total += float64(n-1) * size
		} else {
			total += 2 * float64(n-1) / float64(n) * size
		}
	}
	return total
}

// largestGradientBytes returns the fp32 bytes of the largest gradient set.
func (s commSettings) largestGradientBytes() int64 {
	var largest int64
	for _, cfg := range s.configs {
		largest = max(largest, 4*cfg.elems)
	}
	return largest
}
