package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ringtune/ringtune/collective"
	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// Errors of Client calls, for errors.Is. The coordinator's reason is in the message,
// and status.Code still returns the call's gRPC code.
var (
	// ErrJoinRejected: the coordinator rejected the node, for example because its
	// fingerprint differs from the job's.
	ErrJoinRejected = errors.New("join rejected")
	// ErrJobFailed: the job failed, was stopped or passed its join deadline.
	ErrJobFailed = errors.New("job failed")
)

// Client is a node's connection to the coordinator. It is safe for concurrent use.
type Client struct {
	addr string
	conn *grpc.ClientConn
	rpc  pb.CoordinatorClient

	closeOnce sync.Once
	closed    chan struct{}
}

// tokenCredentials adds the job token to the metadata of every call.
type tokenCredentials struct {
	token string
}

func (c tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{collective.TokenMetadataKey: c.token}, nil
}

// RequireTransportSecurity returns false because the coordinator's gRPC service runs
// without TLS, like the ring links without a TLS config.
func (c tokenCredentials) RequireTransportSecurity() bool { return false }

// Dial prepares a connection to the coordinator at addr (host:port) that sends token
// with every call. It does not wait for the coordinator: the first call connects.
func Dial(addr, token string) (*Client, error) {
	if token == "" {
		return nil, errors.New("dial coordinator: token is missing")
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(tokenCredentials{token: token}),
		// A node often starts before the coordinator, so reconnect faster than
		// gRPC's default first delay of 1 s.
		// A coordinator host that crashes or is cut off sends no FIN, so pings
		// break the watch stream after 30 s + 10 s instead of never.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial coordinator at %s: %w", addr, err)
	}
	return &Client{addr: addr, conn: conn, rpc: pb.NewCoordinatorClient(conn), closed: make(chan struct{})}, nil
}

// callError is an error status of a coordinator call, classified by kind.
type callError struct {
	op     string
	addr   string
	status *status.Status
	kind   error
}

func (e *callError) Error() string {
	prefix := fmt.Sprintf("%s at coordinator %s", e.op, e.addr)
	if e.kind != nil {
		prefix += ": " + e.kind.Error()
	}
	return fmt.Sprintf("%s: %s (%s)", prefix, e.status.Message(), e.status.Code())
}

func (e *callError) Unwrap() error              { return e.kind }
func (e *callError) GRPCStatus() *status.Status { return e.status }

func (c *Client) wrap(op string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s at coordinator %s: %w", op, c.addr, err)
	}
	var kind error
	switch st.Code() {
	case codes.FailedPrecondition:
		if op == "join" {
			kind = ErrJoinRejected
		}
	case codes.Aborted:
		kind = ErrJobFailed
	case codes.DeadlineExceeded:
		if op == "join" {
			kind = ErrJobFailed
		}
	}
	return &callError{op: op, addr: c.addr, status: st, kind: kind}
}

// Join sends the node's join request and waits for rendezvous. While the coordinator
// is unreachable (codes.Unavailable, for example before it started) it retries with
// exponential backoff until ctx ends. A rejection returns an error that wraps
// ErrJoinRejected, and a failed job or passed join deadline one that wraps
// ErrJobFailed, both with the coordinator's reason.
func (c *Client) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	const (
		firstBackoff = 100 * time.Millisecond
		maxBackoff   = 5 * time.Second
	)
	backoff := firstBackoff
	for {
		var server peer.Peer
		resp, err := c.rpc.Join(ctx, req, grpc.Peer(&server))
		if err == nil {
			return resp, nil
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return nil, c.wrap("join", err)
		}
		// A call that reached the coordinator and then broke lost it during
		// rendezvous; a call that never reached it finds it not started yet.
		if server.Addr != nil {
			return nil, fmt.Errorf("join at coordinator %s: lost the coordinator during rendezvous: %w", c.addr, err)
		}

		// Full jitter keeps nodes that started together from retrying in lockstep.
		wait := rand.N(backoff) + time.Millisecond
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("join at coordinator %s: gave up waiting for the coordinator: %w (last error: %v)", c.addr, ctx.Err(), err)
		case <-c.closed:
			timer.Stop()
			return nil, fmt.Errorf("join at coordinator %s: client closed", c.addr)
		case <-timer.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Report sends the rank's report of a completed step and returns the decision for
// that step once every rank reported it. A failed job returns an error that wraps
// ErrJobFailed.
func (c *Client) Report(ctx context.Context, r *pb.StepReport) (*pb.StepDecision, error) {
	decision, err := c.rpc.Report(ctx, r)
	if err != nil {
		return nil, c.wrap(fmt.Sprintf("report of step %d", r.GetStep()), err)
	}
	return decision, nil
}

// Watch opens the node's stream of job events and returns once the coordinator
// registered it or the stream failed. The channel receives the FAILED or
// DONE event and is closed when the stream ends, at the latest when ctx ends or the
// client is closed. When the stream breaks before a final event arrived, for example
// because the coordinator died, the channel first receives a FAILED event with rank
// -1 and reason "lost the coordinator at ADDR: ...". Ending ctx or closing the client
// closes the channel without that event.
func (c *Client) Watch(ctx context.Context, nodeID string) (<-chan *pb.JobEvent, error) {
	streamCtx, cancel := context.WithCancel(ctx)
	stream, err := c.rpc.Watch(streamCtx, &pb.WatchRequest{NodeId: nodeID})
	if err != nil {
		cancel()
		return nil, c.wrap("watch", err)
	}
	// The coordinator sends the header once it registered the stream. An error here
	// also ends the stream, and Recv below reports it.
	_, _ = stream.Header()

	events := make(chan *pb.JobEvent, 1)
	go func() {
		defer close(events)
		defer cancel()
		finalSeen := false
		for {
			event, err := stream.Recv()
			if err != nil {
				if finalSeen || ctx.Err() != nil || c.isClosed() {
					return
				}
				if errors.Is(err, io.EOF) {
					err = errors.New("the coordinator ended the Watch stream without a final event")
				}
				c.send(ctx, events, &pb.JobEvent{
					Kind:   pb.JobEventKind_JOB_EVENT_KIND_FAILED,
					Rank:   -1,
					Reason: fmt.Sprintf("lost the coordinator at %s: %v", c.addr, err),
				})
				return
			}
			switch event.GetKind() {
			case pb.JobEventKind_JOB_EVENT_KIND_FAILED, pb.JobEventKind_JOB_EVENT_KIND_DONE:
				finalSeen = true
			}
			if !c.send(ctx, events, event) {
				return
			}
		}
	}()
	return events, nil
}

// send delivers event unless ctx ends or the client closes first.
func (c *Client) send(ctx context.Context, events chan<- *pb.JobEvent, event *pb.JobEvent) bool {
	select {
	case events <- event:
		return true
	case <-ctx.Done():
		return false
	case <-c.closed:
		return false
	}
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Leave reports to the coordinator that the node exits, with nodeErr as the reason, or
// nil for a clean exit. While the job runs, a leave fails the job, unless restart is set
// (the node was stopped from outside and may be replaced) and the job allows restarts.
func (c *Client) Leave(ctx context.Context, nodeID string, nodeErr error, restart bool) error {
	req := &pb.LeaveRequest{NodeId: nodeID, Restart: restart}
	if nodeErr != nil {
		req.Error = nodeErr.Error()
	}
	if _, err := c.rpc.Leave(ctx, req); err != nil {
		return c.wrap("leave", err)
	}
	return nil
}

// Close closes the connection. Open Watch channels close without a FAILED event.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.conn.Close()
}
