package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/ringtune/ringtune/membership"
	"github.com/ringtune/ringtune/metrics"
	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// Defaults of ServerConfig fields left zero.
const (
	DefaultTickInterval    = time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultWatchTimeout    = 30 * time.Second
)

// gossipJoinTimeout bounds the coordinator's attempt to join a node's gossip member.
const gossipJoinTimeout = 30 * time.Second

// ServerConfig describes a coordinator server.
type ServerConfig struct {
	// Job is the configuration of the job's state machine. Required.
	Job Config
	// Token is the job's shared secret that every call must carry. Required.
	Token string
	// Listener is the gRPC service's listener. The caller creates it and Run closes
	// it. Required.
	Listener net.Listener
	// GossipAddr is the host:port of the coordinator's gossip member; port 0 picks a
	// free port. Optional: "" disables gossip, so a node's loss is detected only
	// through its Watch stream.
	GossipAddr string
	// GossipAdvertise is the IP address that nodes reach the gossip member at, such
	// as the pod IP. Optional: a private address of this host when GossipAddr has
	// no host.
	GossipAdvertise string
	// MetricsListener is the listener of the HTTP server for Prometheus metrics at
	// /metrics. Run closes it. Optional: nil serves no metrics.
	MetricsListener net.Listener
	// TickInterval is the period of the clock that drives the join deadline.
	// Optional: default 1 s.
	TickInterval time.Duration
	// WatchTimeout bounds how long a node may run without a Watch stream once the
	// ring formed, before it counts as lost: a node opens its stream right after
	// its join returns, so one that does not died in between. Optional: default
	// DefaultWatchTimeout.
	WatchTimeout time.Duration
	// ShutdownTimeout bounds how long Run waits, once the job ended, for the nodes to
	// receive the final Watch event and close their streams before it stops the gRPC
	// server. Optional: default 10 s.
	ShutdownTimeout time.Duration
	// Logger receives the job's lifecycle events. Optional: default slog.Default().
	Logger *slog.Logger
	// OnSummary is called from the driver goroutine with the summary of each
	// completed step, for example for a progress display. It must return quickly.
	// Optional.
	OnSummary func(StepSummary)
	// OnRankLost is called from the driver goroutine with the rank and node id of
	// a lost node when the ring starts to re-form without it, for example for a
	// launcher that kills a hung process and starts a replacement. It must return
	// quickly. Optional.
	OnRankLost func(rank int, nodeID string)
}

// JobError is the error of a job that failed or was stopped.
type JobError struct {
	// Rank is the lost rank when a node loss caused the failure, or -1.
	Rank   int
	Reason string
}

// Error returns the reason, which names the lost rank when there is one.
func (e *JobError) Error() string {
	return "job failed: " + e.Reason
}

// Server drives one job's Coordinator from gRPC calls, gossip membership and a clock.
// One goroutine, the driver, owns the state machine: gRPC handlers and membership
// callbacks pass it closures over the calls channel and wait for their results.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	member *membership.Membership
	reg    *metricsRegistry

	// calls carries work for the driver goroutine.
	calls chan func()
	// stopRequests wakes the driver after RequestStop.
	stopRequests chan struct{}
	// driverDone is closed when the driver goroutine has exited, after it sent a
	// result to every waiting call.
	driverDone chan struct{}

	stopMu     sync.Mutex
	stopReason string

	// ended is set once the job is done, failed or stopped.
	ended atomic.Bool

	runOnce sync.Once

	// Fields below are owned by the driver goroutine.
	d driverState
}

// metricsRegistry holds the coordinator metrics and, when served, their HTTP
// server.
type metricsRegistry struct {
	coordinator *metrics.CoordinatorMetrics
	http        *http.Server
}

// NewServer validates cfg and prepares a server. Nothing is served until Run.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Job.Validate(); err != nil {
		return nil, err
	}
	if cfg.Token == "" {
		return nil, errors.New("coordinator server config: Token is missing")
	}
	if cfg.Listener == nil {
		return nil, errors.New("coordinator server config: Listener is missing")
	}
	if cfg.TickInterval < 0 || cfg.ShutdownTimeout < 0 || cfg.WatchTimeout < 0 {
		return nil, fmt.Errorf("coordinator server config: TickInterval %v, ShutdownTimeout %v and WatchTimeout %v must not be negative",
			cfg.TickInterval, cfg.ShutdownTimeout, cfg.WatchTimeout)
	}
	if cfg.WatchTimeout == 0 {
		cfg.WatchTimeout = DefaultWatchTimeout
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	coord, err := New(cfg.Job, time.Now())
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:          cfg,
		log:          cfg.Logger.With("job", cfg.Job.JobID),
		health:       health.NewServer(),
		reg:          &metricsRegistry{},
		calls:        make(chan func()),
		stopRequests: make(chan struct{}, 1),
		driverDone:   make(chan struct{}),
	}
	s.d = newDriverState(coord)

	registry := metrics.NewRegistry()
	s.reg.coordinator = metrics.NewCoordinatorMetrics(registry)
	s.reg.coordinator.SetGeneration(coord.Generation())

	s.grpc = grpc.NewServer(
		grpc.UnaryInterceptor(s.checkTokenUnary),
		grpc.StreamInterceptor(s.checkTokenStream),
		// Pings break the watch stream of a node whose host crashed or was cut
		// off, which sends no FIN, after 30 s + 10 s.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	pb.RegisterCoordinatorServer(s.grpc, &service{s: s})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.setServing(false)

	if cfg.GossipAddr != "" {
		s.member, err = membership.New(membership.Config{
			Name:          gossipName,
			BindAddr:      cfg.GossipAddr,
			AdvertiseAddr: cfg.GossipAdvertise,
			Token:         cfg.Token,
			Logger:        s.log,
			OnLeave:       func(name string) { s.postMemberLost(name, false) },
			OnDead:        func(name string) { s.postMemberLost(name, true) },
		})
		if err != nil {
			return nil, err
		}
	}
	if cfg.MetricsListener != nil {
		s.reg.http = metrics.Serve(cfg.MetricsListener, registry)
	}
	return s, nil
}

// gossipName is the coordinator's member name in the gossip cluster. Nodes use their
// node ids.
const gossipName = "coordinator"

// Addr returns the host:port of the gRPC service.
func (s *Server) Addr() string { return s.cfg.Listener.Addr().String() }

// GossipAddr returns the host:port of the coordinator's gossip member, or "" when
// gossip is disabled.
func (s *Server) GossipAddr() string {
	if s.member == nil {
		return ""
	}
	return s.member.Addr()
}

// Ended reports whether the job is done, failed or stopped. It is safe to call
// from any goroutine.
func (s *Server) Ended() bool { return s.ended.Load() }

// RequestStop requests an early end of the job. The next step decision makes every
// rank checkpoint and stop, and the job then ends with a *JobError of rank -1 and reason
// "stopped: <reason>". During rendezvous the job ends at once. It is safe to call from
// any goroutine, and only the first reason counts.
func (s *Server) RequestStop(reason string) {
	s.stopMu.Lock()
	if s.stopReason == "" {
		s.stopReason = reason
		if s.stopReason == "" {
			s.stopReason = "requested"
		}
	}
	s.stopMu.Unlock()
	select {
	case s.stopRequests <- struct{}{}:
	default:
	}
}

func (s *Server) requestedStop() string {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	return s.stopReason
}

// Run serves the job until it is done (nil), failed or stopped (*JobError), or ctx
// ends (ctx's error). Then it lets the nodes receive the final Watch event and Report
// replies, for at most ShutdownTimeout, and closes the listeners and the gossip
// member. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	err := errors.New("coordinator server: Run called more than once")
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Server) run(ctx context.Context) error {
	s.log.Info("coordinator serving", "addr", s.Addr(), "gossip_addr", s.GossipAddr(),
		"world_size", s.cfg.Job.WorldSize, "total_steps", s.cfg.Job.TotalSteps,
		"join_deadline", s.d.coord.JoinDeadline().Format(time.RFC3339))
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.grpc.Serve(s.cfg.Listener) }()
	s.setServing(true)

	// gossipCtx bounds the background joins of node gossip members.
	gossipCtx, cancelGossip := context.WithCancel(context.Background())
	s.d.gossipCtx = gossipCtx

	result := s.drive(ctx, serveErr)

	cancelGossip()
	s.d.gossipJoins.Wait()
	s.shutdown()
	return result
}

// shutdown stops the gRPC server, the gossip member and the metrics server. Handlers
// that still run after the drain are cut off after ShutdownTimeout.
func (s *Server) shutdown() {
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(s.cfg.ShutdownTimeout)
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		s.log.Warn("gRPC calls still open after the shutdown timeout, closing them", "timeout", s.cfg.ShutdownTimeout)
		s.grpc.Stop()
		<-stopped
	}

	if s.member != nil {
		if err := s.member.Shutdown(); err != nil {
			s.log.Warn("gossip member shutdown failed", "err", err)
		}
	}
	if s.reg.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := s.reg.http.Shutdown(ctx); err != nil {
			s.log.Warn("metrics server shutdown failed", "err", err)
			_ = s.reg.http.Close()
		}
	}
	s.log.Info("coordinator stopped")
}

func (s *Server) setServing(serving bool) {
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		status = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", status)
	s.health.SetServingStatus(pb.Coordinator_ServiceDesc.ServiceName, status)
}

// post runs fn on the driver goroutine without waiting for it. It returns false when
// ctx ended or the driver exited first.
func (s *Server) post(ctx context.Context, fn func()) bool {
	select {
	case s.calls <- fn:
		return true
	case <-ctx.Done():
		return false
	case <-s.driverDone:
		return false
	}
}

// postMemberLost feeds a gossip leave or death to the driver. Membership calls it
// from its callback goroutine.
func (s *Server) postMemberLost(name string, dead bool) {
	s.post(context.Background(), func() { s.handleMemberLost(name, dead) })
}
