package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/coordinator"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/kernels/device"
	"github.com/ringtune/ringtune/membership"
	"github.com/ringtune/ringtune/model"
	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
	"github.com/ringtune/ringtune/train"
)

// Config configures one node process.
type Config struct {
	// Job is the resolved and validated job config.
	Job *jobconfig.Config
	// Coordinator is the host:port of the coordinator's gRPC service.
	Coordinator string
	// Token is the job's shared secret. Required.
	Token string
	// NodeID names the node for its whole life. Default: hostname-pid-RANDOM.
	NodeID string
	// ListenAddr is the host:port the collective service listens on. Default
	// "127.0.0.1:0", which suits one host only; use ":PORT" across hosts.
	ListenAddr string
	// AdvertiseAddr is the host:port the left neighbour dials. Default: the
	// listener's address, with the hostname in place of an unspecified host.
	AdvertiseAddr string
	// GossipAddr is the host:port of the membership listener. "" turns
	// membership off, which leaves failure detection to the coordinator's watch
	// streams and the ring's own links.
	GossipAddr string
	// GossipAdvertise is the IP address that other members reach the membership
	// listener at, such as the pod IP. Default: a private IPv4 address of this
	// host when GossipAddr has no host.
	GossipAdvertise string
	// GossipJoin lists host:port addresses to join the membership cluster
	// through, such as the DNS name of a Kubernetes headless Service over the
	// nodes. The join retries while the names do not resolve. Default: the
	// coordinator's gossip address from the join response.
	GossipJoin []string
	// MetricsAddr is the host:port of the Prometheus /metrics endpoint; "" turns it off.
	MetricsAddr string
	// HealthAddr is the host:port of the gRPC health service; "" turns it off.
	HealthAddr string
	// Rank is the requested rank, or -1 for any free rank.
	Rank int
	// CertFile, KeyFile and CAFile turn on TLS (mutual with CAFile) for the
	// collective traffic, as collective.GRPCConfig describes.
	CertFile, KeyFile, CAFile string
	// Resume names a checkpoint folder, or an output folder whose newest
	// checkpoint the run continues from. Every node must be able to read it.
	Resume string
	// Version is the binary version, compared across nodes.
	Version string
	// Workers is the number of compute goroutines; 0 means GOMAXPROCS.
	Workers int
	// Device is the compute device; the zero Spec is the CPU. It is no part of
	// the job config, so ranks of one job may compute on different devices.
	Device device.Spec
	// KernelCache is the CUDA backend's folder of compiled kernels; "" means
	// its default, $RINGTUNE_CACHE/cuda-kernels or ~/.cache/ringtune/cuda-kernels.
	KernelCache string
	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger
}

// Result describes a finished run, as rank 0 saw it.
type Result struct {
	Rank, WorldSize int
	// Steps is the last completed step.
	Steps int
	// Output is the final model or adapter folder (rank 0 only).
	Output string
	// Loss is the global training loss of the last step, and EvalLoss the last
	// evaluation loss (NaN without evaluation).
	Loss, EvalLoss float64
}

// JobError reports a job that failed, with the lost rank when a lost node
// caused it.
type JobError struct {
	// Rank is the lost rank, or -1.
	Rank   int
	Reason string
}

func (e *JobError) Error() string { return "job failed: " + e.Reason }

func (c *Config) setDefaults() error {
	if c.Job == nil {
		return errors.New("node: no job config")
	}
	if c.Token == "" {
		return errors.New("node: the job token is missing: set RINGTUNE_JOB_TOKEN or --token-file to the token the coordinator uses")
	}
	if c.Coordinator == "" {
		return errors.New("node: the coordinator address is missing: set --coordinator, cluster.coordinator or MASTER_ADDR and MASTER_PORT")
	}
	if _, port, err := net.SplitHostPort(c.Coordinator); err != nil || port == "" {
		return fmt.Errorf("node: invalid coordinator address %q: use HOST:PORT, such as 10.0.0.1:29400", c.Coordinator)
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("node: invalid port in the coordinator address %q: %v", c.Coordinator, err)
	}
	if c.NodeID == "" {
		// A restarted container keeps its hostname and often its pid, and the
		// random part keeps its node id apart from the lost process's.
		host, _ := os.Hostname()
		c.NodeID = fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.Uint32()&0xffff)
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:0"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Run runs the node until the job is done, it fails, or ctx ends.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.NodeID, "job", cfg.Job.JobID)

	// Read the inputs first: a node with a bad file must fail before it holds a
	// place in the ring.
	inputs, err := LoadInputs(ctx, cfg.Job, cfg.Version, log)
	if err != nil {
		return nil, err
	}

	n := &runner{cfg: cfg, in: inputs, job: cfg.Job, log: log}
	defer n.close()
	if err := n.serve(); err != nil {
		return nil, err
	}
	client, err := coordinator.Dial(cfg.Coordinator, cfg.Token)
	if err != nil {
		return nil, err
	}
	n.client = client

	res, err := n.run(ctx)
	if err != nil && ctx.Err() != nil && !strings.Contains(err.Error(), context.Cause(ctx).Error()) {
		err = fmt.Errorf("stopped: %v (%w)", context.Cause(ctx), err)
	}
	// A node stopped from outside, such as a Kubernetes pod that gets SIGTERM,
	// may be replaced, so the coordinator waits for it rather than failing. So
	// may a node whose ring broke without a verdict from the coordinator (a
	// network partition, for example): the fault is not its own.
	var fault *collective.FaultError
	n.leave(err, ctx.Err() != nil || errors.As(err, &fault))
	if n.stopWatch != nil {
		n.stopWatch()
	}
	return res, err
}

// runner holds the state of one node's run.
type runner struct {
	cfg Config
	in  *Inputs
	job *jobconfig.Config
	log *slog.Logger

	endpoint *collective.GRPCEndpoint
	members  *membership.Membership
	client   *coordinator.Client
	side     *sideServers

	// stopWatch ends the watch stream; nil before it starts.
	stopWatch func()

	joined *pb.JoinResponse
	rank   int
	// gossipJoin is closed when the background membership join ended, and
	// cancelGossip ends it; both nil when it never started.
	gossipJoin   chan struct{}
	cancelGossip context.CancelFunc
	// reforms receives the REFORM events of the Watch stream, newest last.
	reforms chan *pb.JobEvent
	// done is closed when the Watch stream carried the DONE event.
	done chan struct{}
	// finished is the result of a rank other than 0 that completed the
	// last step, nil before.
	finished *Result
	// completed is the trainer state of the last step this node completed. The
	// weights and optimizer state in memory belong to it. It is nil before the
	// first step loop started.
	completed *TrainerState
	model     *model.Model
	opt       *model.AdamW
	comm      *collective.Communicator
	stepper   *train.Stepper
}

// serve starts the collective endpoint, membership and the metrics and health
// servers.
func (n *runner) serve() error {
	lis, err := net.Listen("tcp", n.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("collective listener on %s: %w", n.cfg.ListenAddr, err)
	}
	n.endpoint, err = collective.NewGRPCEndpoint(lis, collective.GRPCConfig{
		Token: n.cfg.Token, CertFile: n.cfg.CertFile, KeyFile: n.cfg.KeyFile, CAFile: n.cfg.CAFile, Logger: n.log,
	})
	if err != nil {
		lis.Close()
		return err
	}
	if n.cfg.GossipAddr != "" {
		n.members, err = membership.New(membership.Config{
			Name: n.cfg.NodeID, BindAddr: n.cfg.GossipAddr, AdvertiseAddr: n.cfg.GossipAdvertise, Token: n.cfg.Token, Logger: n.log,
		})
		if err != nil {
			return err
		}
	}
	n.side, err = startSideServers(n.cfg.MetricsAddr, n.cfg.HealthAddr, n.log)
	return err
}

func (n *runner) advertiseAddr() (string, error) {
	if n.cfg.AdvertiseAddr != "" {
		return n.cfg.AdvertiseAddr, nil
	}
	addr := n.endpoint.Addr()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("the collective service listens on %s and the hostname is unknown: set the advertise address: %w", addr, err)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// join joins the job, or the next generation of its ring with the state the
// node holds, and waits until every rank joined.
func (n *runner) join(ctx context.Context) error {
	addr, err := n.advertiseAddr()
	if err != nil {
		return err
	}
	req := &pb.JoinRequest{
		NodeId:        n.cfg.NodeID,
		Address:       addr,
		JobId:         n.job.JobID,
		RequestedRank: int32(n.cfg.Rank),
		Fingerprint: &pb.Fingerprint{
			BinaryVersion: n.in.Fingerprint.BinaryVersion,
			ConfigHash:    n.in.Fingerprint.ConfigHash,
			ModelHash:     n.in.Fingerprint.ModelHash,
			DatasetHash:   n.in.Fingerprint.DatasetHash,
		},
	}
	if n.members != nil {
		req.GossipAddress = n.members.Addr()
	}
	if n.completed != nil && n.model != nil && n.opt != nil {
		st := *n.completed
		st.OptimizerStep = n.opt.StepCount()
		state, err := json.Marshal(st)
		if err != nil {
			return err
		}
		req.HasState, req.CompletedStep, req.TrainerState = true, int32(st.Step), state
	}
	joinCtx, cancel := context.WithTimeout(ctx, n.job.JoinTimeoutDuration()+30*time.Second)
	defer cancel()
	n.log.Info("joining the job", "coordinator", n.cfg.Coordinator, "address", addr, "requested_rank", n.cfg.Rank,
		"holds_step", req.CompletedStep, "holds_state", req.HasState)
	resp, err := n.client.Join(joinCtx, req)
	if err != nil {
		return fmt.Errorf("join %s: %w", n.cfg.Coordinator, err)
	}
	firstJoin := n.joined == nil
	if !firstJoin && int(resp.Rank) != n.rank {
		return fmt.Errorf("the coordinator moved this node from rank %d to rank %d in generation %d; a survivor keeps its rank", n.rank, resp.Rank, resp.Generation)
	}
	n.joined = resp
	n.rank = int(resp.Rank)
	n.log = n.cfg.Logger.With("node", n.cfg.NodeID, "job", n.job.JobID, "rank", n.rank, "generation", resp.Generation)
	n.log.Info("joined", "world_size", resp.WorldSize, "total_steps", resp.TotalSteps, "ring", resp.Ring,
		"start_step", resp.StartStep, "source_rank", resp.SourceRank)

	seeds := n.cfg.GossipJoin
	if len(seeds) == 0 && resp.GossipAddress != "" {
		seeds = []string{resp.GossipAddress}
	}
	if firstJoin && n.members != nil && len(seeds) > 0 {
		// In the background, because DNS records of a headless Service may
		// appear only after the ring must form.
		gossipCtx, cancelGossip := context.WithTimeout(context.Background(), gossipJoinTimeout)
		n.gossipJoin = make(chan struct{})
		n.cancelGossip = cancelGossip
		go func() {
			defer close(n.gossipJoin)
			defer cancelGossip()
			if err := n.members.Join(gossipCtx, seeds); err != nil && gossipCtx.Err() != context.Canceled {
				n.log.Warn("membership join failed, so failures are detected through the watch stream and the ring only",
					"seeds", seeds, "err", err)
			}
		}()
	}
	return nil
}

// leaveTimeout bounds the Leave call of a node that failed or was stopped,
// and finalLeaveTimeout that of a node whose work is done.
const (
	leaveTimeout      = 5 * time.Second
	finalLeaveTimeout = 30 * time.Second
)

// gossipJoinTimeout bounds the retries of the membership join.
const gossipJoinTimeout = 2 * time.Minute

// leave sends the coordinator the node's exit and its error, and leaves the
// membership cluster. With restart set, the coordinator learns that the node
// was stopped from outside and may be replaced.
func (n *runner) leave(runErr error, restart bool) {
	if n.client == nil || n.joined == nil {
		return
	}
	// A clean leave reports that this node's work, rank 0's result included,
	// is done, so it waits longer for a coordinator that stalls.
	timeout := leaveTimeout
	if runErr == nil {
		timeout = finalLeaveTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := n.client.Leave(ctx, n.cfg.NodeID, runErr, restart && runErr != nil); err != nil {
		n.log.Warn("telling the coordinator that this node leaves failed", "err", err, "rank", n.rank)
	}
	if n.members != nil {
		if err := n.members.Leave(2 * time.Second); err != nil {
			n.log.Debug("membership leave failed", "err", err)
		}
	}
}

func (n *runner) close() {
	n.closeGeneration()
	if n.opt != nil {
		n.opt.Close()
	}
	if n.model != nil {
		backend := n.model.Backend()
		n.model.Close()
		if err := backend.Close(); err != nil {
			n.log.Warn("closing the compute backend failed", "backend", backend.Name(), "err", err)
		}
	}
	if n.client != nil {
		n.client.Close()
	}
	if n.cancelGossip != nil {
		n.cancelGossip()
		<-n.gossipJoin
	}
	if n.members != nil {
		n.members.Shutdown()
	}
	if n.endpoint != nil {
		n.endpoint.Close()
	}
	if n.side != nil {
		n.side.close()
	}
}

// buildModel creates the model and optimizer and loads the base weights, the
// checkpoint to resume from, or a random initialization. A node that replaces a
// lost rank loads no checkpoint, because it takes a survivor's state by
// broadcast.
//
// NOTE: it runs after the join, because the LoRA dropout seed depends on the
// rank, so weights that fail to load fail the whole job rather than only
// this node's join, and slow loading counts against the ring's connect timeout.
func (n *runner) buildModel() (*TrainerState, error) {
	evalBatch := n.job.Eval.BatchSize
	opts, err := n.job.ModelOptions(max(n.job.Batch.MicroBatchSize, evalBatch))
	if err != nil {
		return nil, err
	}
	// Distinct dropout masks per rank, as each replica of PyTorch DDP draws its own.
	opts.DropoutSeed = n.job.Seed + uint64(n.rank)
	// A micro-batch never holds more rows than this rank reads, so a batch size
	// larger than the data does not allocate activations for rows that never come.
	world := int(n.joined.WorldSize)
	rowsPerRank := (n.in.Dataset.Train.Len() + world - 1) / world
	if eval := n.in.Dataset.Eval; eval != nil {
		rowsPerRank = max(rowsPerRank, (eval.Len()+world-1)/world)
	}
	opts.MaxBatch = max(1, min(opts.MaxBatch, rowsPerRank))
	backend, err := device.Open(n.cfg.Device, device.Options{Workers: n.cfg.Workers, CacheDir: n.cfg.KernelCache})
	if err != nil {
		return nil, err
	}
	m, err := model.New(backend, n.in.ModelConfig, opts)
	if err != nil {
		return nil, err
	}
	n.model = m

	if n.job.Model.Init == "random" {
		err = m.InitRandom(n.job.Seed)
	} else {
		err = m.LoadBase(n.job.Model.Base)
	}
	if err != nil {
		return nil, err
	}
	if err := m.InitAdapters(n.job.Seed); err != nil {
		return nil, err
	}
	if n.opt, err = model.NewAdamW(m, n.job.AdamW()); err != nil {
		return nil, err
	}

	if n.cfg.Resume == "" || n.joined.SourceRank >= 0 {
		return nil, nil
	}
	dir, err := ResolveCheckpoint(n.cfg.Resume)
	if err != nil {
		return nil, err
	}
	st, err := ReadTrainerState(dir)
	if err != nil {
		return nil, err
	}
	if st.Mode != "" && st.Mode != n.job.Mode {
		return nil, fmt.Errorf("resume: the checkpoint %s is of a %s run, and the job's mode is %s", dir, st.Mode, n.job.Mode)
	}
	if st.ConfigHash != n.in.Fingerprint.ConfigHash {
		n.log.Warn("the checkpoint was written under another job config; resuming anyway", "checkpoint", dir)
	}
	if err := loadCheckpoint(dir, m, n.opt); err != nil {
		return nil, err
	}
	m.SetDropoutStep(st.DropoutStep)
	n.log.Info("resumed from a checkpoint", "checkpoint", dir, "step", st.Step, "epoch", st.Sampler.Epoch)
	return &st, nil
}
