package collective

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// TokenMetadataKey is the gRPC metadata key that carries the job token.
const TokenMetadataKey = "ringtune-job-token"

// GRPCConfig configures a gRPC endpoint: the server that accepts links from left
// neighbours and the client side that dials right neighbours.
type GRPCConfig struct {
	// Token is the job's shared secret. Links without it are rejected. Required.
	Token string
	// CertFile and KeyFile hold this endpoint's PEM certificate and key. With them the
	// endpoint serves TLS and presents the certificate when dialling (mutual TLS).
	CertFile, KeyFile string
	// CAFile holds PEM certificates that peers' certificates must chain to. With it
	// the server requires client certificates (mutual TLS); without it clients verify
	// servers against the system roots.
	CAFile string
	// ServerName overrides the name checked in the peer's certificate; by default the
	// host part of the dialled address.
	ServerName string
	// AcceptWait bounds how long an incoming link waits for its rank to start
	// accepting. Default 2 minutes.
	AcceptWait time.Duration
	// WindowBytes is the HTTP/2 flow-control window per stream and per connection:
	// how much a sender may have in flight before the receiver reads it. Default 64 MiB.
	WindowBytes int32
	// SocketBufferBytes sizes gRPC's read and write buffers around the socket. gRPC
	// copies every byte through them, and buffers that stay in the L2 cache make
	// that copy cheap: 32 KiB beat 128 KiB and 512 KiB by 5 to 20% in busbw on a
	// 2-core loopback run. Default 32 KiB.
	SocketBufferBytes int
	// Logger receives lifecycle events. Default slog.Default().
	Logger *slog.Logger
}

func (c *GRPCConfig) validate() error {
	if c.Token == "" {
		return errors.New("collective: gRPC endpoint needs a job token: set the same token on every rank")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("collective: TLS needs both a certificate and a key (certificate %q, key %q)", c.CertFile, c.KeyFile)
	}
	if c.CAFile != "" && c.CertFile == "" {
		return fmt.Errorf("collective: CA file %q given without a certificate and key: mutual TLS needs all three", c.CAFile)
	}
	if c.AcceptWait == 0 {
		c.AcceptWait = 2 * time.Minute
	}
	if c.WindowBytes == 0 {
		c.WindowBytes = 64 << 20
	}
	if c.WindowBytes < 64<<10 {
		return fmt.Errorf("collective: WindowBytes is %d, must be at least 64 KiB", c.WindowBytes)
	}
	if c.SocketBufferBytes == 0 {
		c.SocketBufferBytes = 32 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// GRPCEndpoint is a rank's gRPC transport: it serves the Collective service on a
// listener and dials other endpoints. One endpoint may serve several rings one
// after the other (a new generation after a failure) or several jobs at once.
type GRPCEndpoint struct {
	pb.UnimplementedCollectiveServer
	cfg      GRPCConfig
	server   *grpc.Server
	listener net.Listener
	acc      *acceptor
	dialOpts []grpc.DialOption
	serveErr chan error
	log      *slog.Logger
	// closing is set by Close before it stops the server, so that the links it breaks
	// report the endpoint's own shutdown rather than a lost peer.
	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var plainTextWarning sync.Once

// NewGRPCEndpoint starts serving on lis. Close stops it.
func NewGRPCEndpoint(lis net.Listener, cfg GRPCConfig) (*GRPCEndpoint, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	serverCreds, clientCreds, err := transportCredentials(&cfg)
	if err != nil {
		return nil, err
	}
	if cfg.CertFile == "" {
		plainTextWarning.Do(func() {
			cfg.Logger.Warn("collective traffic is plain text: configure a certificate and key (and a CA for mutual TLS) to encrypt it")
		})
	}
	e := &GRPCEndpoint{cfg: cfg, listener: lis, acc: newAcceptor(cfg.AcceptWait), serveErr: make(chan error, 1),
		log: cfg.Logger.With("addr", lis.Addr().String())}
	e.server = grpc.NewServer(
		grpc.Creds(serverCreds),
		grpc.ForceServerCodecV2(frameCodec{}),
		experimental.BufferPool(framePayloadPool),
		grpc.StreamInterceptor(e.checkToken),
		grpc.UnaryInterceptor(e.checkTokenUnary),
		grpc.StaticStreamWindowSize(cfg.WindowBytes),
		grpc.StaticConnWindowSize(cfg.WindowBytes),
		grpc.ReadBufferSize(cfg.SocketBufferBytes),
		grpc.WriteBufferSize(cfg.SocketBufferBytes),
		grpc.MaxRecvMsgSize(maxChunkBytes+maxHeaderLen),
		// A process that is frozen (stopped, swapped out, hung in the kernel) does not
		// respond to HTTP/2 pings, so its links break after 30 s + 10 s.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	pb.RegisterCollectiveServer(e.server, e)
	e.dialOpts = []grpc.DialOption{
		grpc.WithTransportCredentials(clientCreds),
		experimental.WithBufferPool(framePayloadPool),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frameCodec{}), grpc.MaxCallRecvMsgSize(maxChunkBytes+maxHeaderLen)),
		grpc.WithStaticStreamWindowSize(cfg.WindowBytes),
		grpc.WithStaticConnWindowSize(cfg.WindowBytes),
		grpc.WithReadBufferSize(cfg.SocketBufferBytes),
		grpc.WithWriteBufferSize(cfg.SocketBufferBytes),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}
	go func() { e.serveErr <- e.server.Serve(lis) }()
	e.log.Info("collective endpoint listening", "tls", cfg.CertFile != "", "mutual_tls", cfg.CAFile != "")
	return e, nil
}

// Addr returns the address the endpoint listens on.
func (e *GRPCEndpoint) Addr() string { return e.listener.Addr().String() }

// Server returns the gRPC server, to register more services (health, for example)
// on the same port.
func (e *GRPCEndpoint) Server() *grpc.Server { return e.server }

// Close stops the server: open links end at once. Later calls return the same result.
func (e *GRPCEndpoint) Close() error {
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		e.server.Stop()
		err := <-e.serveErr
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
		e.closeErr = err
	})
	return e.closeErr
}

func transportCredentials(cfg *GRPCConfig) (server, client credentials.TransportCredentials, err error) {
	if cfg.CertFile == "" {
		return insecure.NewCredentials(), insecure.NewCredentials(), nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("collective: load TLS certificate %s and key %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	clientTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("collective: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("collective: CA file %s contains no PEM certificate", cfg.CAFile)
		}
		serverTLS.ClientCAs = pool
		serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
		clientTLS.RootCAs = pool
	}
	return credentials.NewTLS(serverTLS), credentials.NewTLS(clientTLS), nil
}

func (e *GRPCEndpoint) authorize(ctx context.Context) error {
	return CheckToken(ctx, e.cfg.Token, "rank")
}

// CheckToken returns an Unauthenticated status error unless the incoming
// metadata of ctx carries token under TokenMetadataKey. The comparison takes
// constant time. callers names the processes in the message, such as "rank".
func CheckToken(ctx context.Context, token, callers string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(TokenMetadataKey)
	if len(got) == 0 {
		return status.Errorf(codes.Unauthenticated, "missing job token: every %s must be started with the job's token", callers)
	}
	if subtle.ConstantTimeCompare([]byte(got[0]), []byte(token)) != 1 {
		return status.Errorf(codes.Unauthenticated, "invalid job token: every %s must be started with the same job token", callers)
	}
	return nil
}

func (e *GRPCEndpoint) checkToken(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := e.authorize(ss.Context()); err != nil {
		e.log.Warn("rejected a link without a valid job token", "method", info.FullMethod)
		return err
	}
	return handler(srv, ss)
}

func (e *GRPCEndpoint) checkTokenUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := e.authorize(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// helloTimeout bounds how long a new stream may take to send its HELLO frame.
const helloTimeout = 10 * time.Second

// Link serves the stream from a left neighbour for as long as its ring lives.
func (e *GRPCEndpoint) Link(stream pb.Collective_LinkServer) error {
	ctx := stream.Context()
	hello := &Frame{}
	got := make(chan error, 1)
	go func() { got <- stream.RecvMsg(hello) }()
	select {
	case err := <-got:
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "read hello: %v", err)
		}
	case <-time.After(helloTimeout):
		return status.Errorf(codes.DeadlineExceeded, "no hello frame within %v", helloTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	hello.Release()

	var conn *serverConn
	err := e.acc.offer(ctx, hello, func(want *Frame) Conn {
		conn = &serverConn{stream: stream, done: make(chan struct{}), returned: make(chan struct{}), endpoint: e}
		reply := &Frame{}
		copyHeader(reply, want)
		if err := stream.SendMsg(reply); err != nil {
			conn.sendErr = err
		}
		return conn
	})
	if err != nil {
		e.log.Warn("rejected a link", "peer_rank", hello.SrcRank, "job", hello.JobID, "generation", hello.Generation, "err", err)
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	defer close(conn.returned)
	select {
	case <-conn.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serverConn is the receiving end of a link, inside a Link handler.
type serverConn struct {
	stream   grpc.ServerStream
	endpoint *GRPCEndpoint
	sendErr  error
	// done ends the handler; returned is closed once it has returned.
	done      chan struct{}
	returned  chan struct{}
	closeOnce sync.Once
}

func (c *serverConn) Send(f *Frame) error { return sendFrame(c.stream, f) }

func (c *serverConn) Recv(f *Frame) error {
	err := c.stream.RecvMsg(f)
	if errors.Is(err, io.EOF) {
		// The client half-closed in an orderly way; ending the handler lets its
		// Close return without waiting for this rank's own Close.
		c.closeOnce.Do(func() { close(c.done) })
	}
	if err != nil && c.endpoint.closing.Load() {
		return fmt.Errorf("%w: %v", ErrEndpointClosed, err)
	}
	return err
}

func (c *serverConn) Close(ctx context.Context) {
	c.closeOnce.Do(func() { close(c.done) })
	select {
	case <-c.returned:
	case <-ctx.Done():
	}
}

// Accept waits for the link from the left neighbour that want describes.
func (e *GRPCEndpoint) Accept(ctx context.Context, want *Frame) (Conn, error) {
	return e.acc.accept(ctx, want)
}

// Dial opens the link to the endpoint at addr and exchanges HELLO frames. It keeps
// retrying the connection until ctx is done, so ranks may start in any order.
func (e *GRPCEndpoint) Dial(ctx context.Context, addr string, hello *Frame) (Conn, error) {
	cc, err := grpc.NewClient(addr, e.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	streamCtx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), TokenMetadataKey, e.cfg.Token))
	c := &clientConn{cc: cc, cancel: cancel, ended: make(chan struct{})}
	type result struct{ err error }
	res := make(chan result, 1)
	go func() {
		stream, err := pb.NewCollectiveClient(cc).Link(streamCtx, grpc.WaitForReady(true))
		if err != nil {
			res <- result{err}
			return
		}
		c.stream = stream
		if err := stream.SendMsg(hello); err != nil {
			_, err = stream.Recv() // the status explains a failed send
			res <- result{err}
			return
		}
		reply := &Frame{}
		if err := stream.RecvMsg(reply); err != nil {
			res <- result{err}
			return
		}
		reply.Release()
		if reply.Kind != pb.FrameKind_FRAME_KIND_HELLO {
			res <- result{fmt.Errorf("response has kind %v, expected HELLO", reply.Kind)}
			return
		}
		res <- result{}
	}()
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		cancel()
		r = <-res
		if r.err == nil {
			r.err = ctx.Err()
		}
	}
	if r.err != nil {
		cancel()
		cc.Close()
		if s, ok := status.FromError(r.err); ok && (s.Code() == codes.Unauthenticated || s.Code() == codes.FailedPrecondition) {
			return nil, fmt.Errorf("dial %s: %w: %s", addr, ErrRejected, s.Message())
		}
		return nil, fmt.Errorf("dial %s: %w", addr, r.err)
	}
	return c, nil
}

// clientConn is the dialling end of a link.
type clientConn struct {
	cc     *grpc.ClientConn
	stream grpc.ClientStream
	cancel context.CancelFunc
	// ended is closed once Recv has seen the end of the stream.
	ended     chan struct{}
	endOnce   sync.Once
	closeOnce sync.Once
}

func (c *clientConn) Send(f *Frame) error { return sendFrame(c.stream, f) }

// sendFrame sends f on a gRPC stream and releases its payload itself when gRPC failed
// before the codec took the payload over.
func sendFrame(stream interface{ SendMsg(any) error }, f *Frame) error {
	f.handedOff = false
	err := stream.SendMsg(f)
	if err != nil && !f.handedOff && f.release != nil {
		f.release.Release()
	}
	return err
}

func (c *clientConn) Recv(f *Frame) error {
	err := c.stream.RecvMsg(f)
	if err != nil {
		c.endOnce.Do(func() { close(c.ended) })
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
	}
	return err
}

// Close half-closes the stream so that frames already sent arrive, waits for the
// server to end it or for ctx, then tears the connection down.
func (c *clientConn) Close(ctx context.Context) {
	c.closeOnce.Do(func() {
		if ctx.Err() == nil {
			_ = c.stream.CloseSend()
		}
		select {
		case <-c.ended:
		case <-ctx.Done():
		}
		c.cancel()
		c.cc.Close()
	})
}
