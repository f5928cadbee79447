package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/coordinator"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/kernels/device"
	"github.com/ringtune/ringtune/node"
)

// finalOutputTimeout bounds how long the coordinator waits, after the last
// step, for the nodes to finish: rank 0 writes the final model then, which
// takes a while for a large model on a slow disk.
const finalOutputTimeout = 10 * time.Minute

// nodeExitGrace is how long train waits, after the coordinator ended, for the
// node processes to exit on their own.
const nodeExitGrace = 10 * time.Second

// childStopGrace is how long train waits for node processes to exit after
// SIGTERM before it kills them.
const childStopGrace = 10 * time.Second

func trainCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.IntFlag{Name: "nodes", Aliases: []string{"n"}, DefaultText: "cluster.nodes", Usage: "number of local node processes (overrides cluster.nodes)"},
		&cli.StringFlag{Name: "resume", Usage: "continue from a checkpoint `DIR`, or the newest checkpoint of an output folder"},
		&cli.BoolFlag{Name: "json", Usage: "print the summary as JSON on stdout"},
		&cli.StringFlag{Name: "device", Value: "cpu", Usage: "compute `DEVICE` of the node processes: cpu, cuda (rank r on GPU r) or cuda:N (every rank on GPU N)"},
	}
	return &cli.Command{
		Name:  "train",
		Usage: "train on this host: a coordinator and N node processes over loopback",
		Description: `train starts a coordinator and cluster.nodes node processes on 127.0.0.1, shows
the progress of the job and prints a summary. Rank 0 writes metrics.jsonl,
checkpoints, the final model or adapter and summary.json into the output folder;
each node's log goes to logs/node-RANK.log there. Ctrl-C stops every process and
leaves the last checkpoint intact; --resume continues from it.`,
		Flags:        append(flags, trainJobFlags()...),
		Action:       runTrain,
		OnUsageError: shortUsageError,
	}
}

// trainJobFlags returns the job flags with --config optional: a resumed run
// reads the job.yaml that train wrote into its output folder.
func trainJobFlags() []cli.Flag {
	flags := jobFlags()
	for _, f := range flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "config" {
			sf.Required = false
			sf.Usage += " (default with --resume: job.yaml in the run's output folder)"
		}
	}
	return flags
}

func runTrain(c *cli.Context) error {
	if !c.IsSet("config") {
		if err := setResumedConfig(c); err != nil {
			return err
		}
	}
	job, err := loadJob(c)
	if err != nil {
		return err
	}
	dev, err := deviceFlag(c)
	if err != nil {
		return err
	}
	if c.IsSet("nodes") {
		job.Cluster.Nodes = c.Int("nodes")
		if err := job.Validate(); err != nil {
			return fmt.Errorf("--nodes: %w", err)
		}
	}
	for rank := range job.Cluster.Nodes {
		if err := device.Probe(localNodeDevice(dev, rank)); err != nil {
			return fmt.Errorf("rank %d: %w", rank, err)
		}
	}
	// --resume with a run's output folder continues that run in it, unless
	// --output names another folder. A single checkpoint folder starts a run in
	// the config's output from that checkpoint.
	if resume := c.String("resume"); resume != "" && !c.IsSet("output") {
		dir, err := node.ResolveCheckpoint(resume)
		if err != nil {
			return err
		}
		if parent := filepath.Dir(dir); filepath.Clean(dir) != filepath.Clean(resume) && filepath.Base(parent) == "checkpoints" {
			job.Output, err = filepath.Abs(filepath.Dir(parent))
			if err != nil {
				return err
			}
		}
	}

	// Lock the output before anything is written into it, so that a second run
	// into a busy folder fails without touching job.yaml or the logs.
	lock, err := node.LockOutputFile(job.Output, node.LauncherLockFile)
	if err != nil {
		return err
	}
	defer lock.Close()

	// Read and check the inputs here, so that a bad file fails once, before any
	// node starts.
	begin := time.Now()
	_, coordCfg, err := planJob(c.Context, job, c.String("resume"), slog.Default())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(job.Output, "logs"), 0o755); err != nil {
		return fmt.Errorf("creating the output folder: %w", err)
	}
	resolved := filepath.Join(job.Output, "job.yaml")
	if err := writeResolvedConfig(resolved, job); err != nil {
		return err
	}
	slog.Info("starting the job", "job", job.JobID, "mode", job.Mode, "nodes", job.Cluster.Nodes,
		"steps", coordCfg.TotalSteps, "resolved_config", resolved, "logs", filepath.Join(job.Output, "logs"))
	coordLog, closeLog, err := coordinatorLogger(filepath.Join(job.Output, "logs", "coordinator.log"), coordCfg.StartStep > 0)
	if err != nil {
		return err
	}
	defer closeLog()
	token, err := newToken()
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	progress := newTrainProgress(coordCfg.TotalSteps, coordCfg.StartStep, job.Cluster.Nodes, filepath.Join(job.Output, node.MetricsFile))
	lostNodes := make(chan string, job.Cluster.Nodes)
	server, err := coordinator.NewServer(coordinator.ServerConfig{
		Job:        coordCfg,
		Token:      token,
		Listener:   lis,
		GossipAddr: "127.0.0.1:0",
		Logger:     coordLog,
		OnSummary:  progress.observe,
		OnRankLost: func(_ int, nodeID string) {
			select {
			case lostNodes <- nodeID:
			default:
			}
		},
		// Without restarts, the job is done before rank 0 writes the final
		// model, and the coordinator waits this long for rank 0 to leave.
		ShutdownTimeout: finalOutputTimeout,
	})
	if err != nil {
		lis.Close()
		return err
	}

	ctx, cancel := context.WithCancelCause(c.Context)
	defer cancel(nil)
	serverDone := make(chan error, 1)
	go func() { serverDone <- server.Run(ctx) }()

	nodes, err := startNodes(job, resolved, server.Addr(), token, c.String("resume"), dev)
	if err != nil {
		cancel(err)
		<-serverDone
		return err
	}
	serverErr, nodeErrs := waitJob(ctx, server, serverDone, lostNodes, nodes)
	progress.finish()

	if err := firstJobError(c.Context, serverErr, nodeErrs, nodes); err != nil {
		if steps, _ := node.CheckpointSteps(job.Output); len(steps) > 0 && c.Context.Err() == nil {
			return fmt.Errorf("%w\nthe newest checkpoint is after step %d: continue with 'ringtune train --resume %s'", err, steps[len(steps)-1], job.Output)
		}
		return err
	}
	return printTrainSummary(c, job, coordCfg.StartStep, time.Since(begin))
}

// coordinatorLogger returns a logger that writes every record to path and
// passes warnings and errors on to the default logger, so that the terminal
// shows the progress and problems, and the file the coordinator's whole account.
// A resumed run appends, so that the log of the run it continues stays.
func coordinatorLogger(path string, resumed bool) (*slog.Logger, func(), error) {
	f, err := os.OpenFile(path, logFileFlags(resumed), 0o644)
	if err != nil {
		return nil, nil, err
	}
	file := slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})
	console := minLevelHandler{Handler: slog.Default().Handler(), min: slog.LevelWarn}
	logger := slog.New(slog.NewMultiHandler(file, console)).With("component", "coordinator")
	return logger, func() { f.Close() }, nil
}

// minLevelHandler drops records below min before they reach Handler.
type minLevelHandler struct {
	slog.Handler
	min slog.Level
}

func (h minLevelHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.min && h.Handler.Enabled(ctx, level)
}

func (h minLevelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevelHandler{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h minLevelHandler) WithGroup(name string) slog.Handler {
	return minLevelHandler{Handler: h.Handler.WithGroup(name), min: h.min}
}

// setResumedConfig sets --config to the job.yaml that train wrote into the
// output folder that --resume names.
func setResumedConfig(c *cli.Context) error {
	resume := c.String("resume")
	if resume == "" {
		return errors.New(`--config is required: name the job's YAML file, or --resume a run's output folder, whose job.yaml is then used`)
	}
	dir, err := node.ResolveCheckpoint(resume)
	if err != nil {
		return err
	}
	path := filepath.Join(filepath.Dir(filepath.Dir(dir)), "job.yaml")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("--config is missing, and --resume %s has no job.yaml next to its checkpoints folder: pass the job's --config", resume)
	}
	slog.Info("using the resumed run's config", "config", path)
	return c.Set("config", path)
}

// writeResolvedConfig writes the job config that every node process reads.
func writeResolvedConfig(path string, job *jobconfig.Config) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(job.YAML()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// newToken returns a random job token for a job whose processes all run here.
func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// localNode is one node process of a local job.
type localNode struct {
	rank   int
	nodeID string
	// restart counts the processes of this rank started before this one.
	restart  int
	launcher *nodeLauncher
	cmd      *exec.Cmd
	log      string
	done     chan struct{}
	err      error
}

// nodeLauncher starts the node processes of a local job.
type nodeLauncher struct {
	exe                                  string
	job                                  *jobconfig.Config
	configPath, coordAddr, token, resume string
	dev                                  device.Spec
	// procs is each process's GOMAXPROCS: its share of the cores, so that N
	// processes on one host do not oversubscribe it.
	procs int
}

// logFileFlags returns the open flags of a log file: appending for a restarted
// process or a resumed run, so that earlier logs stay, and truncating otherwise.
func logFileFlags(appendToOld bool) int {
	if appendToOld {
		return os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	return os.O_CREATE | os.O_WRONLY | os.O_TRUNC
}

// startNodes starts one node process per rank.
func startNodes(job *jobconfig.Config, configPath, coordAddr, token, resume string, dev device.Spec) ([]*localNode, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := &nodeLauncher{
		exe: exe, job: job, configPath: configPath, coordAddr: coordAddr, token: token, resume: resume, dev: dev,
		procs: max(1, runtime.NumCPU()/job.Cluster.Nodes),
	}
	var nodes []*localNode
	for rank := range job.Cluster.Nodes {
		node, err := l.start(rank, 0)
		if err != nil {
			stopNodes(nodes)
			return nil, err
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

// start starts the process of rank. A restarted process gets a node id of its
// own and appends to the rank's log.
func (l *nodeLauncher) start(rank, restart int) (*localNode, error) {
	nodeID := fmt.Sprintf("local-%d", rank)
	if restart > 0 {
		nodeID = fmt.Sprintf("local-%d-restart-%d", rank, restart)
	}
	args := []string{"node", "--config", l.configPath, "--coordinator", l.coordAddr,
		"--rank", strconv.Itoa(rank), "--node-id", nodeID, "--gossip-addr", "127.0.0.1:0",
		"--device", localNodeDevice(l.dev, rank).String()}
	if l.resume != "" {
		args = append(args, "--resume", l.resume)
	}

	logPath := filepath.Join(l.job.Output, "logs", fmt.Sprintf("node-%d.log", rank))
	logFile, err := os.OpenFile(logPath, logFileFlags(restart > 0 || l.resume != ""), 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(l.exe, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(nodeEnv(), tokenEnv+"="+l.token, "GOMAXPROCS="+strconv.Itoa(l.procs), "RINGTUNE_LOG_FORMAT=text")
	setNodeProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting node %d: %w", rank, err)
	}

	node := &localNode{rank: rank, nodeID: nodeID, restart: restart, launcher: l, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		node.err = cmd.Wait()
		close(node.done)
	}()
	slog.Debug("started node", "rank", rank, "node", nodeID, "pid", cmd.Process.Pid, "log", logPath)
	return node, nil
}

// nodeEnv returns this process's environment without the variables that
// would override a local node's flags: its rank, the world size and the
// coordinator's address come from train.
func nodeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RINGTUNE_COORDINATOR", tokenEnv, "GOMAXPROCS",
			"PET_NODE_RANK", "PET_NNODES", "PET_MASTER_ADDR", "PET_MASTER_PORT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitJob waits until the coordinator ends the job and every node exits. A
// node that fails while the coordinator still runs, before it joined for
// example, stops the job at once rather than at the join deadline, unless
// cluster.max_restarts allows a restart of its rank: then a new process takes
// the rank and the coordinator re-forms the ring. A process whose node id the
// coordinator declared lost (a hung process, for example) is killed and so
// restarted. When ctx ends first (Ctrl-C), it stops the nodes.
func waitJob(ctx context.Context, server *coordinator.Server, serverDone <-chan error, lost <-chan string, nodes []*localNode) (error, []error) {
	exits := make(chan *localNode, len(nodes))
	watch := func(n *localNode) {
		go func() { <-n.done; exits <- n }()
	}
	for _, n := range nodes {
		watch(n)
	}

	var serverErr error
	restarts := make(map[int]int) // by rank
	serverRunning, running, stopping := true, len(nodes), false
	for serverRunning || running > 0 {
		select {
		case serverErr = <-serverDone:
			serverRunning = false
			// Nodes exit on their own once the job ended and rank 0 wrote the
			// result, which the coordinator waited for. Stop those that linger.
			if running > 0 && !stopping {
				stopping = true
				go func() {
					time.Sleep(nodeExitGrace)
					slog.Warn("node processes still run after the coordinator ended, stopping them", "ranks", runningRanks(nodes))
					stopNodes(nodes)
				}()
			}
		case nodeID := <-lost:
			for _, n := range nodes {
				select {
				case <-n.done:
				default:
					// A replacement of the rank may run already; only the
					// process the coordinator lost is killed.
					if n.nodeID == nodeID && !stopping {
						slog.Warn("killing the process of a lost node, so that a replacement takes its place",
							"rank", n.rank, "node", nodeID, "pid", n.cmd.Process.Pid)
						_ = n.cmd.Process.Kill()
					}
				}
			}
		case n := <-exits:
			running--
			if n.err == nil || !serverRunning || stopping || server.Ended() {
				continue
			}
			maxRestarts := n.launcher.job.Cluster.MaxRestarts
			if restarts[n.rank] < maxRestarts {
				restarts[n.rank]++
				slog.Warn("node exited, starting a replacement", "rank", n.rank, "err", n.err,
					"restart", restarts[n.rank], "max_restarts", maxRestarts)
				replacement, err := n.launcher.start(n.rank, n.restart+1)
				if err == nil {
					nodes[slices.Index(nodes, n)] = replacement
					running++
					watch(replacement)
					continue
				}
				slog.Error("starting a replacement node failed", "rank", n.rank, "err", err)
			} else if maxRestarts > 0 {
				slog.Error("node exited, and its rank was restarted cluster.max_restarts times already", "rank", n.rank,
					"err", n.err, "max_restarts", maxRestarts)
			}
			server.RequestStop(fmt.Sprintf("node %d exited: %v", n.rank, n.err))
		case <-ctx.Done():
			if !stopping {
				stopping = true
				slog.Warn("stopping every node process", "cause", context.Cause(ctx))
				go stopNodes(nodes)
			}
			ctx = context.Background()
		}
	}
	return serverErr, nodeErrors(nodes)
}

// runningRanks returns the ranks of the node processes that still run.
func runningRanks(nodes []*localNode) []int {
	var ranks []int
	for _, n := range nodes {
		select {
		case <-n.done:
		default:
			ranks = append(ranks, n.rank)
		}
	}
	return ranks
}

func nodeErrors(nodes []*localNode) []error {
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		errs[i] = n.err
	}
	return errs
}

// stopNodes sends SIGTERM to every running node and SIGKILL to those still
// running after childStopGrace.
func stopNodes(nodes []*localNode) {
	for _, n := range nodes {
		select {
		case <-n.done:
		default:
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(childStopGrace)
	for _, n := range nodes {
		select {
		case <-n.done:
		case <-deadline:
			_ = n.cmd.Process.Kill()
		}
	}
}

// firstJobError returns the error that best explains a failed job: the
// coordinator's, then the first failed node's with the end of its log.
func firstJobError(ctx context.Context, serverErr error, nodeErrs []error, nodes []*localNode) error {
	// A Ctrl-C that arrives after the job finished changes nothing.
	if serverErr == nil && !slices.ContainsFunc(nodeErrs, func(err error) bool { return err != nil }) {
		return nil
	}
	// Once the coordinator saw the job done, only rank 0 has work left (the
	// final model and summary), so another rank that fails then, killed or
	// stopped for example, changes nothing. With restarts allowed, the job is
	// done only after rank 0 wrote the result, so rank 0's own failure after
	// that changes nothing either.
	if serverErr == nil && ctx.Err() == nil {
		for i, err := range nodeErrs {
			if err != nil && (nodes[i].rank != 0 || nodes[i].launcher.job.Cluster.MaxRestarts > 0) {
				slog.Warn("a node failed after the last step, which leaves the result intact", "rank", nodes[i].rank, "err", err)
				nodeErrs[i] = nil
			}
		}
		if !slices.ContainsFunc(nodeErrs, func(err error) bool { return err != nil }) {
			return nil
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stopped: %w (the last checkpoint in the output folder is intact; continue with --resume)", context.Cause(ctx))
	}
	var failed []string
	for i, err := range nodeErrs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("node %d: %v; the end of %s:\n%s", nodes[i].rank, err, nodes[i].log, crashLines(nodes[i].log, 6)))
		}
	}
	if serverErr != nil {
		err := serverErr
		if len(failed) > 0 {
			return fmt.Errorf("%w\n%s", err, failed[0])
		}
		return err
	}
	if len(failed) > 0 {
		return errors.New(failed[0])
	}
	return nil
}

// crashLines returns the Go runtime's "fatal error:" or "panic:" line of a
// crashed node's log, which a goroutine dump follows, or else the last lines.
func crashLines(path string, lines int) string {
	raw, err := os.ReadFile(path)
	if err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "fatal error:") || strings.HasPrefix(line, "panic:") {
				return line + " (the goroutine dump follows in the log)"
			}
		}
	}
	return logTail(path, lines)
}

// logTail returns the last lines of a log file.
func logTail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 16 << 10
	info, err := f.Stat()
	if err != nil {
		return ""
	}
	offset := max(0, info.Size()-window)
	buf := make([]byte, info.Size()-offset)
	if _, err := f.ReadAt(buf, offset); err != nil && err != io.EOF {
		return ""
	}
	end := len(buf)
	for end > 0 && buf[end-1] == '\n' {
		end--
	}
	start := end
	for count := 0; start > 0; start-- {
		if buf[start-1] == '\n' {
			count++
			if count == lines {
				break
			}
		}
	}
	return string(buf[start:end])
}
