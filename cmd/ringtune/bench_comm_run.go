package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime/debug"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/collective"
)

// commPlan is one configuration as the launcher sends it to a worker.
type commPlan struct {
	Buckets []int `json:"buckets"` // elements per bucket, in all-reduce order
	Steps   int   `json:"steps"`
	Warmup  int   `json:"warmup"`
}

// commStepResult is one worker's measurement of a plan's timed steps.
type commStepResult struct {
	StepS     []float64 `json:"step_s"`
	BytesSent []int64   `json:"bytes_sent"`
}

// commMessage is one JSON line between the bench comm launcher and a worker.
type commMessage struct {
	Addr   string          `json:"addr,omitempty"`
	Peers  []string        `json:"peers,omitempty"`
	Plan   *commPlan       `json:"plan,omitempty"`
	Result *commStepResult `json:"result,omitempty"`
}

// commMeasure is the launcher's summary of one plan over all ranks.
type commMeasure struct {
	stepS     float64 // median over steps of the slowest rank's step time
	bytesSent float64 // mean over ranks and steps
}

// runBenchComm measures every configuration on every world size and dtype.
func runBenchComm(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: bench comm takes only flags", c.Args().First())
	}
	s, err := readCommSettings(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(c.Context, s.ring.timeout, fmt.Errorf("--timeout %v exceeded", s.ring.timeout))
	defer cancel()
	for _, n := range s.nodes {
		if err := checkMemory(n, []int64{s.largestGradientBytes()}); err != nil {
			// checkMemory's message names bench allreduce's --sizes, so only its verdict is used.
			return fmt.Errorf("%d local ranks with %s of gradients each (the largest configuration) need more memory than is available: use fewer --nodes, or run --mode lora alone",
				n, formatSize(s.largestGradientBytes()))
		}
	}
	if s.ring.token == "" {
		s.ring.token = randomToken()
	}

	var network *netnsNetwork
	linkNote := "loopback"
	if s.link.gbps > 0 {
		maxNodes := 0
		for _, n := range s.nodes {
			maxNodes = max(maxNodes, n)
		}
		if reason := netnsUnavailable(); reason != "" {
			fmt.Fprintf(os.Stderr, "NOTICE: --link-gbps %v needs network namespaces, but %s; measuring on loopback instead\n", s.link.gbps, reason)
			s.link = linkShape{}
		} else {
			network, err = newNetnsNetwork(maxNodes, s.link)
			if network != nil {
				defer func() {
					if err := network.Close(); err != nil {
						slog.Error("removing the network namespaces failed; remove them with 'ip netns del'", "prefix", network.prefix, "err", err)
					}
				}()
			}
			if err != nil {
				return err
			}
			linkNote = network.describe()
			if s.link.latency > 0 && !network.latencyEmulated {
				fmt.Fprintf(os.Stderr, "NOTICE: the kernel has no netem qdisc, so --link-latency %v is not added on the links; links are rate-shaped with tbf only, and the projection still adds the latency\n", s.link.latency)
			}
		}
	}

	workerLogs := logSettings(c)
	bar := newProgressBar(len(s.nodes)*len(s.dtypes)*len(s.configs), "comm benchmark")
	var rows []commRow
	for _, n := range s.nodes {
		for _, dtype := range s.dtypes {
			p := s.ring
			p.dtype = dtype
			measures, err := launchCommRing(ctx, n, p, s, network, workerLogs, func() {
				if bar != nil {
					_ = bar.Add(1)
				}
			})
			if err != nil {
				return fmt.Errorf("ring of %d processes, %s: %w", n, dtype, err)
			}
			for i, cfg := range s.configs {
				rows = append(rows, makeCommRow(cfg, n, dtype, measures[i], s.smallBytes))
			}
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if s.chart != "" {
		linkLabel := "loopback"
		if network != nil {
			linkLabel = fmt.Sprintf("%v Gbit/s links", network.link.gbps)
		}
		if err := writeCommChart(s.chart, s.modelName, linkLabel, rows); err != nil {
			return fmt.Errorf("--chart %s: %w", s.chart, err)
		}
	}
	if s.asJSON {
		return printCommJSON(c.App.Writer, rows)
	}
	printCommTable(c.App.Writer, s, linkNote, rows)
	printCommRatios(c.App.Writer, rows)
	printCommProjection(c.App.Writer, s, network, rows)
	return nil
}

// launchCommRing starts n workers that form one ring, in the namespaces of
// network when it is not nil, and measures every configuration of s on it.
func launchCommRing(ctx context.Context, n int, p sweepParams, s commSettings, network *netnsNetwork, logEnv []string, onConfig func()) ([]commMeasure, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	workers := make([]*jsonWorker[commMessage], n)
	defer func() {
		cancel()
		for _, w := range workers {
			if w != nil {
				<-w.exited
			}
		}
	}()
	for r := range workers {
		host := "127.0.0.1"
		if network != nil {
			host = network.addrs[r]
		}
		args := append([]string{"bench", "comm-worker", "--rank", fmt.Sprint(r), "--world-size", fmt.Sprint(n), "--listen-host", host}, commRingArgs(p)...)
		var cmd *exec.Cmd
		if network != nil {
			cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", network.names[r], self}, args...)...)
		} else {
			cmd = exec.CommandContext(ctx, self, args...)
		}
		cmd.Stderr = os.Stderr
		cmd.Env = localRankEnv(p.token, logEnv, n)
		// Its own process group keeps a Ctrl-C on the terminal from reaching the
		// workers, so the launcher stops them and then removes the namespaces.
		setNodeProcAttr(cmd)
		w, err := startJSONWorker[commMessage](cmd, r, 16)
		if err != nil {
			return nil, err
		}
		workers[r] = w
	}

	next := func(r int) (commMessage, error) {
		select {
		case m, ok := <-workers[r].lines:
			if !ok {
				<-workers[r].exited
				return m, fmt.Errorf("rank %d exited early: %v", r, workers[r].err)
			}
			return m, nil
		case <-ctx.Done():
			return commMessage{}, fmt.Errorf("waiting for rank %d: %w", r, context.Cause(ctx))
		}
	}
	send := func(r int, m commMessage) error {
		if err := json.NewEncoder(workers[r].stdin).Encode(m); err != nil {
			return fmt.Errorf("send to rank %d: %w", r, err)
		}
		return nil
	}

	peers := make([]string, n)
	for r := range workers {
		m, err := next(r)
		if err != nil {
			return nil, err
		}
		peers[r] = m.Addr
	}
	for r := range workers {
		if err := send(r, commMessage{Peers: peers}); err != nil {
			return nil, err
		}
	}

	measures := make([]commMeasure, len(s.configs))
	for i, cfg := range s.configs {
		plan := &commPlan{Buckets: cfg.bucketSizes(), Steps: s.steps, Warmup: s.warmup}
		for r := range workers {
			if err := send(r, commMessage{Plan: plan}); err != nil {
				return nil, err
			}
		}
		slowest := make([]float64, s.steps)
		var sent float64
		for r := range workers {
			m, err := next(r)
			if err != nil {
				return nil, err
			}
			if m.Result == nil || len(m.Result.StepS) != s.steps || len(m.Result.BytesSent) != s.steps {
				return nil, fmt.Errorf("rank %d sent an unexpected message %+v for %s", r, m, cfg.label)
			}
			for step, t := range m.Result.StepS {
				slowest[step] = max(slowest[step], t)
				sent += float64(m.Result.BytesSent[step])
			}
		}
		measures[i] = commMeasure{stepS: medianSeconds(slowest), bytesSent: sent / float64(n*s.steps)}
		onConfig()
	}
	// Every rank ends with a barrier, so every rank must see the end of its input
	// before any is waited for.
	for _, w := range workers {
		w.stdin.Close()
	}
	for r, w := range workers {
		select {
		case <-w.exited:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for rank %d to exit: %w", r, context.Cause(ctx))
		}
		if w.err != nil {
			return nil, fmt.Errorf("rank %d: %w", r, w.err)
		}
	}
	return measures, nil
}

// runBenchCommWorker is one rank started by launchCommRing.
func runBenchCommWorker(c *cli.Context) error {
	p, err := readCommRingParams(c)
	if err != nil {
		return err
	}
	if p.dtype, err = collective.ParseWireDType(c.String("dtype")); err != nil {
		return fmt.Errorf("--dtype: %w", err)
	}
	ctx, cancel := context.WithTimeoutCause(c.Context, p.timeout, fmt.Errorf("--timeout %v exceeded", p.timeout))
	defer cancel()
	rank, n := c.Int("rank"), c.Int("world-size")
	lis, err := net.Listen("tcp", net.JoinHostPort(c.String("listen-host"), "0"))
	if err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(commMessage{Addr: lis.Addr().String()}); err != nil {
		lis.Close()
		return err
	}
	in := json.NewDecoder(os.Stdin)
	var m commMessage
	if err := in.Decode(&m); err != nil {
		lis.Close()
		return fmt.Errorf("rank %d: read peers from the launcher: %w", rank, err)
	}

	gcfg := collective.GRPCConfig{Token: p.token, CertFile: p.tls[0], KeyFile: p.tls[1], CAFile: p.tls[2]}
	ep, err := collective.NewGRPCEndpoint(lis, gcfg)
	if err != nil {
		lis.Close()
		return err
	}
	defer ep.Close()
	cfg := p.ringConfig(rank, n, m.Peers)
	cfg.JobID = "bench-comm"
	comm, err := collective.New(ctx, cfg, ep)
	if err != nil {
		return err
	}
	defer comm.Close()

	for {
		var m commMessage
		if err := in.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("rank %d: read a plan from the launcher: %w", rank, err)
		}
		if m.Plan == nil {
			return fmt.Errorf("rank %d: expected a plan from the launcher, got %+v", rank, m)
		}
		result, err := runCommPlan(ctx, comm, *m.Plan)
		if err != nil {
			return err
		}
		if err := out.Encode(commMessage{Result: &result}); err != nil {
			return err
		}
	}
	return comm.Barrier(ctx)
}

// runCommPlan runs the plan's steps: each starts an all-reduce of every bucket,
// in order, and waits for all of them. A barrier before each step lines the
// ranks up, so a step's time is the all-reduce alone.
func runCommPlan(ctx context.Context, comm *collective.Communicator, plan commPlan) (commStepResult, error) {
	total := 0
	for _, elems := range plan.Buckets {
		total += elems
	}
	// Written once so its pages are resident: memory touched for the first time
	// would be measured instead of the all-reduce.
	grads := make([]float32, total)
	for i := range grads {
		grads[i] = 0
	}
	defer debug.FreeOSMemory() // hand a large gradient set back before the next plan
	views := make([][]float32, len(plan.Buckets))
	offset := 0
	for i, elems := range plan.Buckets {
		views[i] = grads[offset : offset+elems]
		offset += elems
	}

	var result commStepResult
	works := make([]*collective.Work, len(views))
	for step := 0; step < plan.Warmup+plan.Steps; step++ {
		if err := comm.Barrier(ctx); err != nil {
			return result, err
		}
		before := comm.Totals()
		start := time.Now()
		for i, view := range views {
			works[i] = comm.AllReduceAsync(ctx, view, collective.Sum)
		}
		for i, w := range works {
			if err := w.Wait(); err != nil {
				return result, fmt.Errorf("bucket %d of %d: %w", i, len(works), err)
			}
		}
		elapsed := time.Since(start)
		sent := comm.Totals().BytesSent - before.BytesSent
		if step >= plan.Warmup {
			result.StepS = append(result.StepS, elapsed.Seconds())
			result.BytesSent = append(result.BytesSent, sent)
		}
	}
	return result, nil
}
