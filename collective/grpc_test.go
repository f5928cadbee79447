package collective

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// grpcEndpoints starts n gRPC endpoints on loopback ports chosen by the kernel.
func grpcEndpoints(t testing.TB, n int, tweak func(i int, c *GRPCConfig)) ([]*GRPCEndpoint, []string) {
	t.Helper()
	eps := make([]*GRPCEndpoint, n)
	addrs := make([]string, n)
	for i := range eps {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		cfg := GRPCConfig{Token: "secret-token", Logger: quietLogger}
		if tweak != nil {
			tweak(i, &cfg)
		}
		eps[i], err = NewGRPCEndpoint(lis, cfg)
		require.NoError(t, err)
		addrs[i] = eps[i].Addr()
		t.Cleanup(func() { eps[i].Close() })
	}
	return eps, addrs
}

// grpcRing forms a ring over the given endpoints; tweak sees each rank's Config with
// its Rank set.
func grpcRing(t testing.TB, eps []*GRPCEndpoint, addrs []string, generation uint64, tweak func(*Config)) ([]*Communicator, []error) {
	n := len(eps)
	configs := make([]Config, n)
	transports := make([]Transport, n)
	for r := range configs {
		configs[r] = testConfig("grpc-job", generation, r, n, addrs)
		configs[r].ChunkBytes = 64 << 10
		configs[r].CloseTimeout = 2 * time.Second
		transports[r] = eps[r]
	}
	return formRing(t, configs, transports, tweak)
}

func TestGRPCAllReduceMatchesNaiveSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{2, 3, 4} {
		for _, dtype := range []WireDType{Float32, BFloat16} {
			t.Run(fmt.Sprintf("N%d/%v", n, dtype), func(t *testing.T) {
				eps, addrs := grpcEndpoints(t, n, nil)
				comms, errs := grpcRing(t, eps, addrs, 1, func(c *Config) { c.DType = dtype })
				for _, err := range errs {
					require.NoError(t, err)
				}
				for _, count := range []int{0, 1, n + 1, 5000, 100_003, 300_000} {
					in := integerInputs(rng, n, count)
					want := naiveSum(in)
					bufs := make([][]float32, n)
					for r := range bufs {
						bufs[r] = append([]float32(nil), in[r]...)
					}
					errs := onEveryRank(comms, func(c *Communicator) error {
						// Two buckets in flight at once, as during backward.
						half := len(bufs[c.Rank()]) / 2
						w1 := c.AllReduceAsync(context.Background(), bufs[c.Rank()][:half], Sum)
						w2 := c.AllReduceAsync(context.Background(), bufs[c.Rank()][half:], Sum)
						return errorsJoin(w1.Wait(), w2.Wait())
					})
					for r, err := range errs {
						require.NoError(t, err, "rank %d count %d", r, count)
					}
					for r := 1; r < n; r++ {
						require.Equal(t, bufs[0], bufs[r], "rank %d count %d", r, count)
					}
					if dtype == Float32 {
						for i := range want {
							require.Equal(t, float32(want[i]), bufs[0][i], "count %d element %d", count, i)
						}
					}
				}
			})
		}
	}
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func TestGRPCRejectsWrongToken(t *testing.T) {
	eps, addrs := grpcEndpoints(t, 2, func(i int, c *GRPCConfig) {
		if i == 1 {
			c.Token = "another-token"
		}
	})
	_, errs := grpcRing(t, eps, addrs, 1, func(c *Config) { c.ConnectTimeout = 3 * time.Second })
	require.Error(t, errs[0])
	assert.ErrorIs(t, errs[0], ErrRejected)
	assert.Contains(t, errs[0].Error(), "invalid job token")
}

func TestGRPCRejectsOtherGeneration(t *testing.T) {
	eps, addrs := grpcEndpoints(t, 2, nil)
	_, errs := grpcRing(t, eps, addrs, 1, func(c *Config) {
		// Rank 1 believes in generation 2; rank 0 is still at generation 1.
		c.Generation = uint64(1 + c.Rank)
		c.ConnectTimeout = 2 * time.Second
	})
	require.Error(t, errs[0])
	require.Error(t, errs[1])
	assert.Contains(t, errs[0].Error()+errs[1].Error(), "generation")
}

func TestGRPCNewGenerationAfterFailure(t *testing.T) {
	eps, addrs := grpcEndpoints(t, 3, nil)
	comms, errs := grpcRing(t, eps, addrs, 1, nil)
	for _, err := range errs {
		require.NoError(t, err)
	}
	// Rank 2 goes away; the survivors' next all-reduce fails and names it.
	comms[2].Close()
	start := time.Now()
	errs = onEveryRank(comms[:2], func(c *Communicator) error {
		return c.AllReduce(context.Background(), make([]float32, 100_000), Sum)
	})
	for r, err := range errs {
		require.Error(t, err, "rank %d", r)
		var fe *FaultError
		require.ErrorAs(t, err, &fe, "rank %d", r)
		assert.Equal(t, 2, fe.Rank, "rank %d: %v", r, err)
	}
	assert.Less(t, time.Since(start), 5*time.Second)
	for _, c := range comms[:2] {
		c.Close()
	}

	// The survivors form generation 2 as a ring of two on the same endpoints.
	comms2, errs := grpcRing(t, eps[:2], addrs[:2], 2, nil)
	for _, err := range errs {
		require.NoError(t, err)
	}
	bufs := [][]float32{{1, 2, 3}, {10, 20, 30}}
	errs = onEveryRank(comms2, func(c *Communicator) error {
		return c.AllReduce(context.Background(), bufs[c.Rank()], Sum)
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, []float32{11, 22, 33}, bufs[1])
}

func TestGRPCRejectsMissingToken(t *testing.T) {
	_, addrs := grpcEndpoints(t, 1, nil)
	cc, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := pb.NewCollectiveClient(cc).Link(ctx)
	require.NoError(t, err)
	_, err = stream.Recv()
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "missing job token")
}

func TestGRPCRejectsInvalidHello(t *testing.T) {
	_, addrs := grpcEndpoints(t, 1, nil)
	cc, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frameCodec{})))
	require.NoError(t, err)
	defer cc.Close()
	for _, hello := range []*Frame{
		{Kind: pb.FrameKind_FRAME_KIND_HELLO, JobID: "j", WorldSize: 0},
		{Kind: pb.FrameKind_FRAME_KIND_HELLO, JobID: "j", WorldSize: 2, SrcRank: 5, DstRank: 0},
		{Kind: pb.FrameKind_FRAME_KIND_HELLO, JobID: "j", WorldSize: 3, SrcRank: 0, DstRank: 2},
	} {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), TokenMetadataKey, "secret-token"), 5*time.Second)
		stream, err := pb.NewCollectiveClient(cc).Link(ctx)
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, stream.SendMsg(hello))
		var reply Frame
		err = stream.RecvMsg(&reply)
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "hello %+v: %v", hello, err)
		assert.Less(t, time.Since(start), time.Second, "an invalid hello must be rejected at once")
		cancel()
	}
}

func TestGRPCRejectsConfigMismatch(t *testing.T) {
	eps, addrs := grpcEndpoints(t, 2, nil)
	_, errs := grpcRing(t, eps, addrs, 1, func(c *Config) {
		c.ConnectTimeout = 2 * time.Second
		if c.Rank == 1 {
			c.DType = BFloat16
		}
	})
	require.Error(t, errs[0])
	require.Error(t, errs[1])
	assert.Contains(t, errs[0].Error()+errs[1].Error(), "hello field dtype")
}

func TestClosedEndpointIsBlamed(t *testing.T) {
	eps, addrs := grpcEndpoints(t, 3, nil)
	comms, errs := grpcRing(t, eps, addrs, 1, nil)
	for _, err := range errs {
		require.NoError(t, err)
	}
	// Rank 1's endpoint goes away under its live ring; the survivors must name rank 1.
	errs = onEveryRank(comms, func(c *Communicator) error {
		if c.Rank() == 1 {
			time.Sleep(100 * time.Millisecond)
			eps[1].Close()
		}
		for {
			if err := c.AllReduce(context.Background(), make([]float32, 50_000), Sum); err != nil {
				return err
			}
		}
	})
	for _, r := range []int{0, 2} {
		var fe *FaultError
		require.ErrorAs(t, errs[r], &fe, "rank %d", r)
		assert.Equal(t, 1, fe.Rank, "rank %d: %v", r, errs[r])
	}
}
