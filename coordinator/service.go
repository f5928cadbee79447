package coordinator

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ringtune/ringtune/collective"
	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// service implements the Coordinator gRPC service. Each handler passes its work to
// the driver goroutine and waits for the result.
type service struct {
	pb.UnimplementedCoordinatorServer
	s *Server
}

// healthMethodPrefix starts the methods of the gRPC health service, which serves
// calls without a token because probes such as Kubernetes' cannot send one.
const healthMethodPrefix = "/grpc.health.v1.Health/"

func (s *Server) authorize(ctx context.Context) error {
	return collective.CheckToken(ctx, s.cfg.Token, "node")
}

func (s *Server) checkTokenUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, healthMethodPrefix) {
		if err := s.authorize(ctx); err != nil {
			s.log.Warn("rejected a call without a valid job token", "method", info.FullMethod)
			return nil, err
		}
	}
	return handler(ctx, req)
}

func (s *Server) checkTokenStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, healthMethodPrefix) {
		if err := s.authorize(ss.Context()); err != nil {
			s.log.Warn("rejected a call without a valid job token", "method", info.FullMethod)
			return err
		}
	}
	return handler(srv, ss)
}

// errCoordinatorStopped is returned to calls that arrive after the driver exited
// without a result of their own.
var errCoordinatorStopped = status.Error(codes.Unavailable, "the coordinator is shutting down")

// afterDriver returns the error for a call that found the driver gone.
func (s *Server) afterDriver() error {
	if s.d.final != nil {
		return s.finalStatus()
	}
	return errCoordinatorStopped
}

func (h *service) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	s := h.s
	join := Join{
		NodeID:        req.GetNodeId(),
		Address:       req.GetAddress(),
		JobID:         req.GetJobId(),
		RequestedRank: int(req.GetRequestedRank()),
		Fingerprint: Fingerprint{
			BinaryVersion: req.GetFingerprint().GetBinaryVersion(),
			ConfigHash:    req.GetFingerprint().GetConfigHash(),
			ModelHash:     req.GetFingerprint().GetModelHash(),
			DatasetHash:   req.GetFingerprint().GetDatasetHash(),
		},
		State: NodeState{
			HasState:      req.GetHasState(),
			CompletedStep: int(req.GetCompletedStep()),
			TrainerState:  string(req.GetTrainerState()),
		},
	}
	ch := make(chan joinResult, 1)
	if !s.post(ctx, func() { s.handleJoin(join, req.GetGossipAddress(), ch) }) {
		return nil, h.unposted(ctx)
	}

	select {
	case result := <-ch:
		return result.resp, result.err
	case <-ctx.Done():
		s.post(context.Background(), func() { s.cancelJoin(join.NodeID, ch) })
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.driverDone:
		select {
		case result := <-ch:
			return result.resp, result.err
		default:
			return nil, s.afterDriver()
		}
	}
}

// unposted returns the error of a call whose work never reached the driver.
func (h *service) unposted(ctx context.Context) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return h.s.afterDriver()
}

func (h *service) Report(ctx context.Context, req *pb.StepReport) (*pb.StepDecision, error) {
	s := h.s
	report := StepReport{
		Rank:                 int(req.GetRank()),
		Generation:           req.GetGeneration(),
		Step:                 int(req.GetStep()),
		Loss:                 req.GetLoss(),
		Tokens:               req.GetTokens(),
		BytesSent:            req.GetBytesSent(),
		ComputeTime:          time.Duration(req.GetComputeNs()),
		AllReduceTime:        time.Duration(req.GetAllreduceNs()),
		ExposedAllReduceTime: time.Duration(req.GetExposedAllreduceNs()),
		PeakMemory:           req.GetPeakMemoryBytes(),
		LR:                   req.GetLr(),
	}
	ch := make(chan reportResult, 1)
	if !s.post(ctx, func() { s.handleReport(report, ch) }) {
		return nil, h.unposted(ctx)
	}

	select {
	case result := <-ch:
		return result.decision, result.err
	case <-ctx.Done():
		s.post(context.Background(), func() { s.cancelReport(report.Step, ch) })
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.driverDone:
		select {
		case result := <-ch:
			return result.decision, result.err
		default:
			return nil, s.afterDriver()
		}
	}
}

// Watch sends the job's final event, then keeps the stream open until the node
// closes it or the server stops. The open stream lets the coordinator tell a
// node that finished, which leaves or closes the stream, from one that died
// mid-job, whose stream breaks before the job ended.
func (h *service) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.JobEvent]) error {
	s := h.s
	ctx := stream.Context()
	w := &watcher{nodeID: req.GetNodeId(), events: make(chan *pb.JobEvent, watcherEvents)}
	added := make(chan error, 1)
	if !s.post(ctx, func() { added <- s.addWatcher(w) }) {
		if ctx.Err() == nil && s.d.final != nil {
			return stream.Send(s.d.final)
		}
		return h.unposted(ctx)
	}
	if err := <-added; err != nil {
		return err
	}
	// The header signals to the client that the stream is registered, so Client.Watch
	// returns only once the coordinator would send it the final event.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		s.post(context.Background(), func() { s.removeWatcher(w, err) })
		return err
	}

	for {
		select {
		case event := <-w.events:
			if err := stream.Send(event); err != nil {
				s.post(context.Background(), func() { s.removeWatcher(w, err) })
				return err
			}
		case <-ctx.Done():
			cause := context.Cause(ctx)
			s.post(context.Background(), func() { s.removeWatcher(w, cause) })
			return status.FromContextError(ctx.Err()).Err()
		case <-s.driverDone:
			return nil
		}
	}
}

func (h *service) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	s := h.s
	done := make(chan struct{})
	if !s.post(ctx, func() {
		s.handleLeave(req.GetNodeId(), req.GetError(), req.GetRestart())
		close(done)
	}) {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		// The job ended and the driver exited, so there is nothing left to do.
		return &pb.LeaveResponse{}, nil
	}
	select {
	case <-done:
		return &pb.LeaveResponse{}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.driverDone:
		return &pb.LeaveResponse{}, nil
	}
}
