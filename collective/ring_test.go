package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConfig returns rank r's configuration with the short timeouts the tests use.
func testConfig(jobID string, generation uint64, r, n int, peers []string) Config {
	cfg := DefaultConfig()
	cfg.JobID, cfg.Generation, cfg.Rank, cfg.WorldSize, cfg.Peers = jobID, generation, r, n, peers
	cfg.NoProgressTimeout = 2 * time.Second
	cfg.ConnectTimeout = 10 * time.Second
	cfg.Logger = quietLogger
	return cfg
}

// formRing calls New for every rank at once, passing each rank's configuration
// through tweak when it is set, and closes the communicators when the test ends.
func formRing(t testing.TB, configs []Config, transports []Transport, tweak func(*Config)) ([]*Communicator, []error) {
	n := len(configs)
	comms := make([]*Communicator, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := configs[r]
			if tweak != nil {
				tweak(&cfg)
			}
			comms[r], errs[r] = New(context.Background(), cfg, transports[r])
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range comms {
			if c != nil {
				c.Close()
			}
		}
	})
	return comms, errs
}

// memRing forms a ring of n ranks over an in-memory network.
func memRing(t testing.TB, n int, tweak func(*Config)) []*Communicator {
	t.Helper()
	net := NewMemNetwork()
	peers := make([]string, n)
	for i := range peers {
		peers[i] = fmt.Sprintf("mem-%d", i)
	}
	configs := make([]Config, n)
	transports := make([]Transport, n)
	for r := range configs {
		configs[r] = testConfig("test-job", 1, r, n, peers)
		configs[r].ChunkBytes = 4 << 10
		transports[r] = net.Endpoint(peers[r])
	}
	comms, errs := formRing(t, configs, transports, tweak)
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	return comms
}

// onEveryRank runs fn concurrently for each rank and returns the errors by rank.
func onEveryRank(comms []*Communicator, fn func(c *Communicator) error) []error {
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = fn(c)
		}()
	}
	wg.Wait()
	return errs
}

// integerInputs returns per-rank buffers of small integers, whose sums float32
// represents exactly in any order.
func integerInputs(rng *rand.Rand, n, count int) [][]float32 {
	in := make([][]float32, n)
	for r := range in {
		in[r] = make([]float32, count)
		for i := range in[r] {
			in[r][i] = float32(rng.IntN(201) - 100)
		}
	}
	return in
}

func naiveSum(in [][]float32) []float64 {
	out := make([]float64, len(in[0]))
	for _, b := range in {
		for i, v := range b {
			out[i] += float64(v)
		}
	}
	return out
}

func TestAllReduceMatchesNaiveSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= 8; n++ {
		for _, dtype := range []WireDType{Float32, BFloat16} {
			t.Run(fmt.Sprintf("N%d/%v", n, dtype), func(t *testing.T) {
				comms := memRing(t, n, func(c *Config) { c.DType = dtype; c.SmallBytes = 256 })
				counts := []int{0, 1, n - 1, n, n + 1, 63, 64, 1000, 1024*3 + 7, 20000 + rng.IntN(5000)}
				for _, count := range counts {
					if count < 0 {
						continue
					}
					in := integerInputs(rng, n, count)
					want := naiveSum(in)
					bufs := make([][]float32, n)
					for r := range bufs {
						bufs[r] = append([]float32(nil), in[r]...)
					}
					errs := onEveryRank(comms, func(c *Communicator) error {
						return c.AllReduce(context.Background(), bufs[c.Rank()], Sum)
					})
					for r, err := range errs {
						require.NoError(t, err, "rank %d count %d", r, count)
					}
					for r := range bufs {
						require.Equal(t, bufs[0], bufs[r], "rank %d differs from rank 0 (count %d)", r, count)
					}
					for i, w := range want {
						// bf16 keeps 8 significant bits: each hop may round a partial
						// sum by up to 2^-9 of its magnitude, which sum|x| bounds.
						tol := 0.0
						if dtype == BFloat16 {
							absSum := 0.0
							for r := range in {
								absSum += math.Abs(float64(in[r][i]))
							}
							tol = float64(n) * absSum / 512
						}
						if math.Abs(float64(bufs[0][i])-w) > tol {
							t.Fatalf("count %d element %d: got %v, want %v", count, i, bufs[0][i], w)
						}
					}
				}
			})
		}
	}
}

func TestAllReduceAverageRandomFloats(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 3
	comms := memRing(t, n, nil)
	count := 10007
	in := make([][]float32, n)
	for r := range in {
		in[r] = make([]float32, count)
		for i := range in[r] {
			in[r][i] = float32(rng.NormFloat64())
		}
	}
	want := naiveSum(in)
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = append([]float32(nil), in[r]...)
	}
	errs := onEveryRank(comms, func(c *Communicator) error {
		return c.AllReduce(context.Background(), bufs[c.Rank()], Avg)
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	for i := range want {
		assert.InDelta(t, want[i]/n, float64(bufs[0][i]), 1e-5, "element %d", i)
		assert.Equal(t, bufs[0][i], bufs[n-1][i])
	}
}

func TestAllReduceAsyncConcurrentBuckets(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprint("N", n), func(t *testing.T) {
			comms := memRing(t, n, nil)
			sizes := []int{5000, 1, 0, 12345, 300, 70000}
			in := make([][][]float32, len(sizes)) // (bucket, rank, count)
			bufs := make([][][]float32, len(sizes))
			for b, size := range sizes {
				in[b] = integerInputs(rng, n, size)
				bufs[b] = make([][]float32, n)
				for r := 0; r < n; r++ {
					bufs[b][r] = append([]float32(nil), in[b][r]...)
				}
			}
			errs := onEveryRank(comms, func(c *Communicator) error {
				works := make([]*Work, len(sizes))
				for b := range sizes {
					works[b] = c.AllReduceAsync(context.Background(), bufs[b][c.Rank()], Sum)
				}
				for _, w := range works {
					if err := w.Wait(); err != nil {
						return err
					}
				}
				return nil
			})
			for _, err := range errs {
				require.NoError(t, err)
			}
			for b := range sizes {
				want := naiveSum(in[b])
				for r := 0; r < n; r++ {
					for i := range want {
						require.Equal(t, float32(want[i]), bufs[b][r][i], "bucket %d rank %d element %d", b, r, i)
					}
				}
			}
		})
	}
}

func TestBroadcastFromEveryRoot(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5} {
		comms := memRing(t, n, nil)
		for root := 0; root < n; root++ {
			count := 9000 + root
			bufs := make([][]float32, n)
			for r := range bufs {
				bufs[r] = make([]float32, count)
				for i := range bufs[r] {
					bufs[r][i] = float32(r*100000 + i)
				}
			}
			errs := onEveryRank(comms, func(c *Communicator) error {
				return c.Broadcast(context.Background(), bufs[c.Rank()], root)
			})
			for r, err := range errs {
				require.NoError(t, err, "N %d root %d rank %d", n, root, r)
			}
			for r := range bufs {
				require.Equal(t, bufs[root], bufs[r], "N %d root %d rank %d", n, root, r)
			}
		}
	}
}

func TestBarrierWaitsForEveryRank(t *testing.T) {
	const n = 4
	comms := memRing(t, n, nil)
	var mu sync.Mutex
	arrived := 0
	errs := onEveryRank(comms, func(c *Communicator) error {
		time.Sleep(time.Duration(c.Rank()) * 50 * time.Millisecond)
		mu.Lock()
		arrived++
		mu.Unlock()
		if err := c.Barrier(context.Background()); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if arrived != n {
			return fmt.Errorf("rank %d left the barrier after only %d ranks arrived", c.Rank(), arrived)
		}
		return nil
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
}

func TestStatsCountRingBytes(t *testing.T) {
	const n, count = 4, 1 << 16
	for _, dtype := range []WireDType{Float32, BFloat16} {
		comms := memRing(t, n, func(c *Config) { c.DType = dtype })
		stats := make([]OpStats, n)
		errs := onEveryRank(comms, func(c *Communicator) error {
			var err error
			stats[c.Rank()], err = c.AllReduceStats(context.Background(), make([]float32, count), Sum)
			return err
		})
		for _, err := range errs {
			require.NoError(t, err)
		}
		want := int64(2*(n-1)*count*elemBytes(dtype)) / n
		for r, st := range stats {
			assert.Equal(t, int64(count*4), st.Bytes, "rank %d", r)
			assert.Equal(t, want, st.BytesSent, "rank %d dtype %v", r, dtype)
			assert.Equal(t, want, st.BytesRecv, "rank %d dtype %v", r, dtype)
			assert.InDelta(t, st.AlgBW()*2*(n-1)/n, st.BusBW(), 1e-6)
		}
		tot := comms[0].Totals()
		assert.Equal(t, int64(1), tot.Ops)
		assert.Equal(t, want, tot.BytesSent)
		assert.Equal(t, want, tot.BytesRecv)
		assert.Equal(t, stats[0].Duration, tot.Busy)
		assert.InDelta(t, stats[0].AlgBW(), tot.AlgBW(), 1e-6*stats[0].AlgBW())
		assert.InDelta(t, stats[0].BusBW(), tot.BusBW(n), 1e-6*stats[0].BusBW())
	}
}

func TestMismatchedLengthIsRejected(t *testing.T) {
	comms := memRing(t, 2, nil)
	errs := onEveryRank(comms, func(c *Communicator) error {
		return c.AllReduce(context.Background(), make([]float32, 5000+c.Rank()), Sum)
	})
	for r, err := range errs {
		require.Error(t, err, "rank %d", r)
		assert.ErrorIs(t, err, ErrProtocol, "rank %d", r)
	}
	assert.Contains(t, errs[0].Error()+errs[1].Error(), "field count")
}

func TestSingleRankIsNoOp(t *testing.T) {
	comms := memRing(t, 1, nil)
	buf := []float32{1, 2, 3}
	require.NoError(t, comms[0].AllReduce(context.Background(), buf, Avg))
	assert.Equal(t, []float32{1, 2, 3}, buf)
	require.NoError(t, comms[0].Barrier(context.Background()))
}

func TestSmallBF16BufferLargerThanChunk(t *testing.T) {
	// A small-path frame carries the whole buffer, which may exceed a chunk.
	const n, count = 3, 6000 // 24 KB of float32, above the 4 KiB chunks of memRing
	comms := memRing(t, n, func(c *Config) { c.DType = BFloat16; c.SmallBytes = 64 << 10 })
	in := integerInputs(rand.New(rand.NewPCG(13, 14)), n, count)
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = append([]float32(nil), in[r]...)
	}
	errs := onEveryRank(comms, func(c *Communicator) error {
		return c.AllReduce(context.Background(), bufs[c.Rank()], Sum)
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	for r := 1; r < n; r++ {
		require.Equal(t, bufs[0], bufs[r])
	}
}

func TestZeroLengthMismatchIsRejected(t *testing.T) {
	comms := memRing(t, 3, nil)
	start := time.Now()
	errs := onEveryRank(comms, func(c *Communicator) error {
		length := 0
		if c.Rank() == 1 {
			length = 4
		}
		return c.AllReduce(context.Background(), make([]float32, length), Sum)
	})
	// Every rank fails at once. The ranks that detect the mismatch report a protocol
	// error; the others may instead see their neighbour end the ring.
	protocol := 0
	for r, err := range errs {
		require.Error(t, err, "rank %d", r)
		if errors.Is(err, ErrProtocol) {
			protocol++
		}
	}
	assert.Positive(t, protocol)
	assert.Less(t, time.Since(start), time.Second)
}

func TestBroadcastRootDisagreementIsRejected(t *testing.T) {
	for _, n := range []int{2, 3} {
		comms := memRing(t, n, nil)
		errs := onEveryRank(comms, func(c *Communicator) error {
			return c.Broadcast(context.Background(), make([]float32, 100), c.Rank())
		})
		rootErrors := 0
		for r, err := range errs {
			require.Error(t, err, "N %d rank %d", n, r)
			if strings.Contains(err.Error(), "broadcast root") {
				rootErrors++
			}
		}
		assert.Positive(t, rootErrors, "N %d: no rank named the root disagreement: %v", n, errs)
	}
}

func TestAllReduceFloat32ExactOnBF16Ring(t *testing.T) {
	// 1105 and 4752.25 are not bf16 values; AllReduceFloat32 must not round them,
	// on the small path and on the ring path.
	const n = 3
	for _, small := range []int{64 << 10, -1} {
		comms := memRing(t, n, func(c *Config) { c.DType = BFloat16; c.SmallBytes = small })
		bufs := make([][]float32, n)
		for r := range bufs {
			bufs[r] = []float32{1105, 4752.25, float32(r)}
		}
		errs := onEveryRank(comms, func(c *Communicator) error {
			return c.AllReduceFloat32(context.Background(), bufs[c.Rank()], Sum)
		})
		for _, err := range errs {
			require.NoError(t, err)
		}
		for r := range n {
			assert.Equal(t, []float32{3 * 1105, 3 * 4752.25, 0 + 1 + 2}, bufs[r], "rank %d, SmallBytes %d", r, small)
		}
	}
}
