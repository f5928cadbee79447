package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/collective"
)

const defaultSweep = "4KiB,64KiB,1MiB,16MiB,64MiB,256MiB"

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure ringtune's building blocks",
		Subcommands: []*cli.Command{
			benchAllReduceCommand(),
			benchAllReduceWorkerCommand(),
			benchStepCommand(),
			benchCommCommand(),
			benchCommWorkerCommand(),
		},
	}
}

// ringFlags are the flags that shape the ring, shared by the launcher and its workers.
func ringFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "sizes", Value: defaultSweep, Usage: "comma-separated buffer sizes in bytes of float32 data, such as 4KiB,64MiB"},
		&cli.StringFlag{Name: "dtype", Value: "fp32", Usage: "element type on the wire: fp32 or bf16"},
		&cli.IntFlag{Name: "iters", Usage: "timed all-reduces per size (0: 100 up to 64 KiB, 20 up to 1 MiB, 10 above)"},
		&cli.IntFlag{Name: "warmup", Value: -1, Usage: "untimed all-reduces per size before timing (-1: 5 up to 64 KiB, 3 up to 1 MiB, 2 above)"},
		&cli.StringFlag{Name: "chunk-bytes", Value: "1MiB", Usage: "payload bytes per frame, in bytes of float32 data (0: the default, 1 MiB)"},
		&cli.StringFlag{Name: "small-bytes", Value: "64KiB", Usage: "buffers up to this size use the all-gather path (0 turns it off)"},
		&cli.StringFlag{Name: "job-token", EnvVars: []string{"RINGTUNE_JOB_TOKEN"}, Usage: "shared secret of the job; generated when launching local processes"},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate of this rank; turns on TLS"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM private key of --tls-cert"},
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM CA bundle that peers' certificates must chain to; turns on mutual TLS"},
		&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "bound on the whole benchmark"},
		&cli.DurationFlag{Name: "connect-timeout", Value: 2 * time.Minute, Usage: "bound on forming the ring: every rank must be up and reachable within it"},
		&cli.DurationFlag{Name: "no-progress-timeout", Value: time.Minute, Usage: "fail when a neighbour sends no data for this long during an all-reduce"},
	}
}

func benchAllReduceCommand() *cli.Command {
	flags := append(ringFlags(),
		&cli.StringFlag{Name: "nodes", Value: "2", Usage: "comma-separated world sizes to sweep, one ring of local processes each, such as 2,3,4"},
		&cli.BoolFlag{Name: "json", Usage: `print only {"rows": [...]} on stdout; logs go to stderr`},
		&cli.StringFlag{Name: "peers", Usage: "join a ring of given addresses (one per rank, comma-separated) instead of starting local processes"},
		&cli.IntFlag{Name: "rank", Usage: "this process's rank with --peers"},
		&cli.StringFlag{Name: "listen", Usage: "address to listen on with --peers (default: this rank's entry in --peers)"},
	)
	return &cli.Command{
		Name:  "allreduce",
		Usage: "sweep all-reduce sizes over N ranks and print time, algbw and busbw as nccl-tests does",
		Description: "Starts N local processes that form a ring over loopback (or, with --peers, joins a ring\n" +
			"of given addresses) and times all-reduces of each size. time is the mean per all-reduce,\n" +
			"averaged over ranks; algbw = size / time; busbw = algbw * 2(N-1)/N. GB/s is 1e9 bytes/s.",
		Flags:  flags,
		Action: runBenchAllReduce,
	}
}

func benchAllReduceWorkerCommand() *cli.Command {
	return &cli.Command{
		Name:   "allreduce-worker",
		Usage:  "one rank of a local 'bench allreduce' run (started by it; speaks JSON lines on stdin and stdout)",
		Hidden: true,
		Flags: append(ringFlags(),
			&cli.IntFlag{Name: "rank", Required: true},
			&cli.IntFlag{Name: "world-size", Required: true},
		),
		Action: runBenchWorkerChild,
	}
}

// benchRow is one line of the output; the JSON keys are a stable interface.
type benchRow struct {
	Bytes     int64   `json:"bytes"`
	TimeS     float64 `json:"time_s"`
	AlgBWGBps float64 `json:"algbw_GBps"`
	BusBWGBps float64 `json:"busbw_GBps"`
	Nodes     int     `json:"nodes"`
	DType     string  `json:"dtype"`

	maxTimeS     float64 // slowest rank's mean
	coresPerRank float64 // CPU time over wall time, averaged over ranks
}

// rankResult is one worker's measurement of one size.
type rankResult struct {
	Bytes int64   `json:"bytes"`
	MeanS float64 `json:"mean_s"`
	CPUS  float64 `json:"cpu_s"`
	WallS float64 `json:"wall_s"`
}

// cores returns the cores the rank kept busy: CPU time over wall time.
func (r rankResult) cores() float64 {
	if r.WallS <= 0 {
		return 0
	}
	return r.CPUS / r.WallS
}

// workerMessage is one JSON line between launcher and worker.
type workerMessage struct {
	Addr   string      `json:"addr,omitempty"`
	Peers  []string    `json:"peers,omitempty"`
	Result *rankResult `json:"result,omitempty"`
}

type sweepParams struct {
	sizes          []int64
	dtype          collective.WireDType
	iters          int
	warmup         int
	chunk          int
	small          int
	token          string
	tls            [3]string
	timeout        time.Duration
	connectTimeout time.Duration
	stallTimeout   time.Duration
}

func readSweepParams(c *cli.Context) (sweepParams, error) {
	var p sweepParams
	var err error
	if p.sizes, err = parseSizeList(c.String("sizes")); err != nil {
		return p, fmt.Errorf("--sizes: %w", err)
	}
	if p.dtype, err = collective.ParseWireDType(c.String("dtype")); err != nil {
		return p, fmt.Errorf("--dtype: %w", err)
	}
	p.iters, p.warmup = c.Int("iters"), c.Int("warmup")
	if p.iters < 0 {
		return p, fmt.Errorf("--iters is %d, must be 0 (schedule by size) or positive", p.iters)
	}
	if p.warmup < -1 {
		return p, fmt.Errorf("--warmup is %d, must be -1 (schedule by size), 0 or positive", p.warmup)
	}
	if err := readRingParams(c, &p); err != nil {
		return p, err
	}
	return p, nil
}

// readRingParams reads the ring flags that bench allreduce and bench comm
// share: chunk and small-buffer sizes, token, TLS files and timeouts.
func readRingParams(c *cli.Context, p *sweepParams) error {
	chunk, err := parseSize(c.String("chunk-bytes"))
	if err != nil {
		return fmt.Errorf("--chunk-bytes: %w", err)
	}
	small, err := parseSize(c.String("small-bytes"))
	if err != nil {
		return fmt.Errorf("--small-bytes: %w", err)
	}
	p.chunk, p.small = int(chunk), int(small)
	if p.small == 0 {
		p.small = -1
	}
	p.token = c.String("job-token")
	p.tls = [3]string{c.String("tls-cert"), c.String("tls-key"), c.String("tls-ca")}
	for i, flag := range []string{"tls-cert", "tls-key", "tls-ca"} {
		if p.tls[i] == "" {
			continue
		}
		if _, err := os.Stat(p.tls[i]); err != nil {
			return fmt.Errorf("--%s: %w", flag, err)
		}
	}
	if (p.tls[0] == "") != (p.tls[1] == "") || (p.tls[2] != "" && p.tls[0] == "") {
		return errors.New("TLS needs --tls-cert and --tls-key together, and --tls-ca only with both")
	}
	p.timeout = c.Duration("timeout")
	p.connectTimeout = c.Duration("connect-timeout")
	p.stallTimeout = c.Duration("no-progress-timeout")
	for flag, d := range map[string]time.Duration{"timeout": p.timeout, "connect-timeout": p.connectTimeout, "no-progress-timeout": p.stallTimeout} {
		if d <= 0 {
			return fmt.Errorf("--%s is %v, must be positive", flag, d)
		}
	}

	// Check the ring settings here rather than once per rank.
	cfg := p.ringConfig(0, 2, []string{"a", "b"})
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("--chunk-bytes %s, --small-bytes %s: %w", c.String("chunk-bytes"), c.String("small-bytes"), err)
	}
	return nil
}

// ringConfig returns the collective configuration of one rank of the benchmark ring.
func (p sweepParams) ringConfig(rank, n int, peers []string) collective.Config {
	cfg := collective.DefaultConfig()
	cfg.JobID, cfg.Generation, cfg.Rank, cfg.WorldSize, cfg.Peers = "bench-allreduce", 1, rank, n, peers
	cfg.DType, cfg.ChunkBytes, cfg.SmallBytes = p.dtype, p.chunk, p.small
	cfg.ConnectTimeout, cfg.NoProgressTimeout = p.connectTimeout, p.stallTimeout
	return cfg
}

// checkMemory fails when n local ranks, each holding a buffer of the largest size,
// would not fit in the memory the kernel reports as available.
func checkMemory(n int, sizes []int64) error {
	var largest int64
	for _, s := range sizes {
		largest = max(largest, s)
	}
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil // not Linux: nothing to check against
	}
	for _, line := range strings.Split(string(data), "\n") {
		var kib int64
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &kib); err == nil {
			// Each rank also keeps about a quarter of its buffer in transport buffers.
			need := int64(n) * largest * 5 / 4
			if need > kib<<10 {
				return fmt.Errorf("--sizes up to %s on %d local ranks need about %.1f GiB, but only %.1f GiB is available: use smaller sizes or fewer --nodes",
					formatSize(largest), n, float64(need)/(1<<30), float64(kib<<10)/(1<<30))
			}
			return nil
		}
	}
	return nil
}

// schedule returns the untimed and timed all-reduces for a size, as the peer
// benchmarks in bench/peers use them.
func (p sweepParams) schedule(size int64) (warmup, iters int) {
	switch {
	case size <= 64<<10:
		warmup, iters = 5, 100
	case size <= 1<<20:
		warmup, iters = 3, 20
	default:
		warmup, iters = 2, 10
	}
	if p.iters > 0 {
		iters = p.iters
	}
	if p.warmup >= 0 {
		warmup = p.warmup
	}
	return warmup, iters
}

func (p sweepParams) args() []string {
	sizes := make([]string, len(p.sizes))
	for i, s := range p.sizes {
		sizes[i] = fmt.Sprint(s)
	}
	return []string{
		"--sizes", strings.Join(sizes, ","), "--dtype", p.dtype.String(),
		"--iters", fmt.Sprint(p.iters), "--warmup", fmt.Sprint(p.warmup),
		"--chunk-bytes", fmt.Sprint(p.chunk), "--small-bytes", fmt.Sprint(max(p.small, 0)),
		"--tls-cert", p.tls[0], "--tls-key", p.tls[1], "--tls-ca", p.tls[2],
		"--timeout", p.timeout.String(), "--connect-timeout", p.connectTimeout.String(),
		"--no-progress-timeout", p.stallTimeout.String(),
	}
}

func runBenchAllReduce(c *cli.Context) error {
	p, err := readSweepParams(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(c.Context, p.timeout, fmt.Errorf("--timeout %v exceeded", p.timeout))
	defer cancel()
	if c.IsSet("peers") {
		if c.IsSet("nodes") {
			return errors.New("--nodes and --peers exclude each other: --peers sets the world size to the number of addresses")
		}
		return runBenchJoin(ctx, c, p)
	}
	nodes, err := parseIntList(c.String("nodes"), "nodes")
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := checkMemory(n, p.sizes); err != nil {
			return err
		}
	}
	workerLogs := logSettings(c)
	if p.token == "" {
		p.token = randomToken()
	}

	bar := newProgressBar(len(nodes)*len(p.sizes), "all-reduce sweep")
	var rows []benchRow
	for _, n := range nodes {
		r, err := launchLocalRing(ctx, n, p, workerLogs, func() {
			if bar != nil {
				_ = bar.Add(1)
			}
		})
		if err != nil {
			return fmt.Errorf("ring of %d local processes: %w", n, err)
		}
		rows = append(rows, r...)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return printRows(c.App.Writer, rows, c.Bool("json"), "mean per all-reduce, averaged over ranks")
}

func printRows(w io.Writer, rows []benchRow, asJSON bool, timeNote string) error {
	if asJSON {
		if rows == nil {
			rows = []benchRow{}
		}
		return json.NewEncoder(w).Encode(map[string]any{"rows": rows})
	}
	fmt.Fprintf(w, "# ringtune all-reduce over gRPC; time: %s; sizes count float32 bytes; GB/s = 1e9 B/s\n", timeNote)
	fmt.Fprintf(w, "%6s %5s %10s %12s %12s %12s %12s %11s\n", "nodes", "dtype", "size", "time(us)", "max(us)", "algbw(GB/s)", "busbw(GB/s)", "cores/rank")
	for _, r := range rows {
		fmt.Fprintf(w, "%6d %5s %10s %12.1f %12.1f %12.3f %12.3f %11.2f\n", r.Nodes, r.DType, formatSize(r.Bytes),
			r.TimeS*1e6, r.maxTimeS*1e6, r.AlgBWGBps, r.BusBWGBps, r.coresPerRank)
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// launchLocalRing starts n worker processes of this binary, introduces them to each
// other and collects their measurements.
func launchLocalRing(ctx context.Context, n int, p sweepParams, logEnv []string, onSize func()) ([]benchRow, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	workers := make([]*jsonWorker[workerMessage], n)
	for r := range workers {
		args := append([]string{"bench", "allreduce-worker", "--rank", fmt.Sprint(r), "--world-size", fmt.Sprint(n)}, p.args()...)
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Stderr = os.Stderr
		cmd.Env = localRankEnv(p.token, logEnv, n)
		setParentDeathSignal(cmd)
		w, err := startJSONWorker[workerMessage](cmd, r, 64)
		if err != nil {
			return nil, err
		}
		workers[r] = w
	}
	defer func() {
		cancel()
		for _, w := range workers {
			if w != nil {
				<-w.exited
			}
		}
	}()

	next := func(r int) (workerMessage, error) {
		select {
		case m, ok := <-workers[r].lines:
			if !ok {
				<-workers[r].exited
				return m, fmt.Errorf("rank %d exited early: %v", r, workers[r].err)
			}
			return m, nil
		case <-ctx.Done():
			return workerMessage{}, fmt.Errorf("waiting for rank %d: %w", r, context.Cause(ctx))
		}
	}

	peers := make([]string, n)
	for r := range workers {
		m, err := next(r)
		if err != nil {
			return nil, err
		}
		peers[r] = m.Addr
	}
	for r, w := range workers {
		if err := json.NewEncoder(w.stdin).Encode(workerMessage{Peers: peers}); err != nil {
			return nil, fmt.Errorf("send peers to rank %d: %w", r, err)
		}
	}

	var rows []benchRow
	for _, size := range p.sizes {
		var sumMean, maxMean, sumCores float64
		for r := range workers {
			m, err := next(r)
			if err != nil {
				return nil, err
			}
			if m.Result == nil || m.Result.Bytes != size {
				return nil, fmt.Errorf("rank %d sent an unexpected message %+v for size %d", r, m, size)
			}
			sumMean += m.Result.MeanS
			maxMean = max(maxMean, m.Result.MeanS)
			sumCores += m.Result.cores()
		}
		rows = append(rows, makeRow(size, sumMean/float64(n), maxMean, sumCores/float64(n), n, p.dtype))
		onSize()
	}
	for r, w := range workers {
		w.stdin.Close()
		select {
		case <-w.exited:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for rank %d to exit: %w", r, context.Cause(ctx))
		}
		if w.err != nil {
			return nil, fmt.Errorf("rank %d: %w", r, w.err)
		}
	}
	return rows, nil
}

// logSettings returns the environment that passes this process's log settings to its
// workers. Unless the user chose a level, workers log at warn: each worker's lifecycle
// lines would bury the table, while warnings and errors stay.
func logSettings(c *cli.Context) []string {
	level := "warn"
	if c.IsSet("log-level") {
		level = c.String("log-level")
	}
	return []string{"RINGTUNE_LOG_LEVEL=" + level, "RINGTUNE_LOG_FORMAT=" + c.String("log-format")}
}

func makeRow(size int64, meanS, maxS, cores float64, n int, dtype collective.WireDType) benchRow {
	row := benchRow{Bytes: size, TimeS: meanS, Nodes: n, DType: dtype.String(), maxTimeS: maxS, coresPerRank: cores}
	if meanS > 0 {
		row.AlgBWGBps = float64(size) / meanS / 1e9
		row.BusBWGBps = row.AlgBWGBps * 2 * float64(n-1) / float64(n)
	}
	return row
}

// runBenchWorkerChild is one rank started by launchLocalRing.
func runBenchWorkerChild(c *cli.Context) error {
	p, err := readSweepParams(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(c.Context, p.timeout, fmt.Errorf("--timeout %v exceeded", p.timeout))
	defer cancel()
	rank, n := c.Int("rank"), c.Int("world-size")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(workerMessage{Addr: lis.Addr().String()}); err != nil {
		return err
	}
	var m workerMessage
	if err := json.NewDecoder(os.Stdin).Decode(&m); err != nil {
		return fmt.Errorf("rank %d: read peers from the launcher: %w", rank, err)
	}
	return runSweep(ctx, rank, n, m.Peers, lis, p, func(r rankResult) error {
		return out.Encode(workerMessage{Result: &r})
	})
}

// runBenchJoin is one rank of a ring whose addresses were given with --peers.
func runBenchJoin(ctx context.Context, c *cli.Context, p sweepParams) error {
	peers, err := parsePeers(c.String("peers"))
	if err != nil {
		return err
	}
	rank := c.Int("rank")
	if rank < 0 || rank >= len(peers) {
		return fmt.Errorf("--rank %d is not in [0, %d) for the %d --peers", rank, len(peers), len(peers))
	}
	if p.token == "" {
		return errors.New("--peers needs --job-token (or RINGTUNE_JOB_TOKEN), the same on every rank")
	}
	listen := c.String("listen")
	if listen == "" {
		listen = peers[rank]
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	var rows []benchRow
	err = runSweep(ctx, rank, len(peers), peers, lis, p, func(r rankResult) error {
		// Only this rank's own times are known here, so time and max are the same.
		rows = append(rows, makeRow(r.Bytes, r.MeanS, r.MeanS, r.cores(), len(peers), p.dtype))
		return nil
	})
	if err != nil {
		return err
	}
	if rank != 0 {
		return nil
	}
	return printRows(c.App.Writer, rows, c.Bool("json"), "this rank's mean per all-reduce")
}

// parsePeers parses the --peers list: one host:port per rank, no duplicates.
func parsePeers(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("--peers is empty: give one host:port per rank, such as 10.0.0.1:7000,10.0.0.2:7000")
	}
	peers := strings.Split(list, ",")
	seen := map[string]int{}
	for i, p := range peers {
		p = strings.TrimSpace(p)
		peers[i] = p
		if _, _, err := net.SplitHostPort(p); err != nil || p == "" {
			return nil, fmt.Errorf("--peers entry %d (%q) is not host:port", i, p)
		}
		if j, dup := seen[p]; dup {
			return nil, fmt.Errorf("--peers entries %d and %d are both %s: each rank needs its own address", j, i, p)
		}
		seen[p] = i
	}
	return peers, nil
}

// runSweep forms the ring on lis and times every size.
func runSweep(ctx context.Context, rank, n int, peers []string, lis net.Listener, p sweepParams, emit func(rankResult) error) error {
	gcfg := collective.GRPCConfig{Token: p.token, CertFile: p.tls[0], KeyFile: p.tls[1], CAFile: p.tls[2]}
	ep, err := collective.NewGRPCEndpoint(lis, gcfg)
	if err != nil {
		lis.Close()
		return err
	}
	defer ep.Close()
	comm, err := collective.New(ctx, p.ringConfig(rank, n, peers), ep)
	if err != nil {
		return err
	}
	defer comm.Close()

	// One buffer for the whole sweep, written once so its pages are resident: memory
	// touched for the first time would be measured instead of the all-reduce.
	var largest int64
	for _, s := range p.sizes {
		largest = max(largest, s)
	}
	buf := make([]float32, largest/4)
	for i := range buf {
		buf[i] = 0
	}
	if path := os.Getenv("RINGTUNE_CPUPROFILE"); path != "" {
		stop, err := startCPUProfile(fmt.Sprintf("%s.rank%d", path, rank))
		if err != nil {
			return err
		}
		defer stop()
	}
	for _, size := range p.sizes {
		b := buf[:size/4]
		warmup, iters := p.schedule(size)
		for i := 0; i < warmup; i++ {
			if err := comm.AllReduce(ctx, b, collective.Sum); err != nil {
				return err
			}
		}
		if err := comm.Barrier(ctx); err != nil {
			return err
		}
		cpu0 := cpuTime()
		start := time.Now()
		for i := 0; i < iters; i++ {
			if err := comm.AllReduce(ctx, b, collective.Sum); err != nil {
				return err
			}
		}
		wall := time.Since(start)
		cpu := cpuTime() - cpu0
		if err := emit(rankResult{Bytes: size, MeanS: wall.Seconds() / float64(iters), CPUS: cpu.Seconds(), WallS: wall.Seconds()}); err != nil {
			return err
		}
	}
	return comm.Barrier(ctx)
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// localRankEnv returns the environment of one of n benchmark worker processes
// on this host: this process's, the job token and logEnv. Without GOMAXPROCS
// set, the workers share the cores, as torchrun does with OMP_NUM_THREADS,
// because idle scheduler threads spinning in n processes cost more than the
// parallelism inside one rank gains.
func localRankEnv(token string, logEnv []string, n int) []string {
	env := append(os.Environ(), "RINGTUNE_JOB_TOKEN="+token)
	env = append(env, logEnv...)
	if os.Getenv("GOMAXPROCS") == "" {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", max(1, runtime.NumCPU()/n)))
	}
	return env
}
