package train

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/model"
)

const (
	testRows   = 4  // rows of a global micro-batch
	testSeqLen = 16 // tokens per row
)

var testLoRA = model.LoRAConfig{Rank: 4, Alpha: 8, TargetModules: model.ProjectionModules()}

var testSchedule = model.Schedule{PeakLR: 1e-3, WarmupSteps: 1, TotalSteps: 10, MinLRRatio: 0.1}

// testAdamW raises AdamW's eps from 1e-8 to 1e-4. With eps 1e-8 the first
// update is about lr·sign(g) for every element, even where g is only float32
// rounding noise. Two runs that sum the gradients in another order then end up
// 2·lr apart in such elements. With eps 1e-4 those elements barely move, and
// the update still depends on the gradient's scale, so a wrong loss
// normalization shows in the weights.
func testAdamW() model.AdamWConfig {
	cfg := model.DefaultAdamW()
	cfg.Eps = 1e-4
	return cfg
}

// replica is one rank's model, optimizer and Stepper.
type replica struct {
	model     *model.Model
	optimizer *model.AdamW
	stepper   *Stepper
	comm      *collective.Communicator
}

// ringOf forms a ring of n ranks over an in-memory network and closes it when
// the test ends. tweak, when set, changes every rank's configuration.
func ringOf(t testing.TB, n int, tweak func(*collective.Config)) []*collective.Communicator {
	t.Helper()
	network := collective.NewMemNetwork()
	// Every endpoint must exist before any rank dials, because an in-memory
	// dial to an address without an endpoint fails at once.
	peers := make([]string, n)
	transports := make([]collective.Transport, n)
	for r := range peers {
		peers[r] = fmt.Sprintf("mem-%d", r)
		transports[r] = network.Endpoint(peers[r])
	}
	comms := make([]*collective.Communicator, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		cfg := collective.DefaultConfig()
		cfg.JobID, cfg.Generation, cfg.Rank, cfg.WorldSize, cfg.Peers = "train-test", 1, r, n, peers
		cfg.ChunkBytes = 4 << 10
		cfg.ConnectTimeout = 10 * time.Second
		cfg.NoProgressTimeout = 10 * time.Second
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if tweak != nil {
			tweak(&cfg)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			comms[r], errs[r] = collective.New(context.Background(), cfg, transports[r])
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
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	return comms
}

// newModel builds the model of the golden test config with weights from seed.
// In LoRA mode the base weights come from seed 1 and only the adapters from
// seed, because replicas load one base checkpoint.
func newModel(t testing.TB, mode model.Mode, seed uint64) *model.Model {
	t.Helper()
	return newModelOn(t, newCPUBackend(t), mode, seed)
}

// newCPUBackend returns a one-worker CPU backend that is closed when the test ends.
func newCPUBackend(t testing.TB) *cpu.Backend {
	t.Helper()
	backend, err := cpu.New(cpu.Options{Workers: 1})
	require.NoError(t, err)
	t.Cleanup(func() { backend.Close() })
	return backend
}

// newModelOn is newModel on the given backend.
func newModelOn(t testing.TB, backend kernels.Backend, mode model.Mode, seed uint64) *model.Model {
	t.Helper()
	cfg, err := model.LoadConfig(filepath.Join("..", "model", "testdata", "golden", model.ConfigFile))
	require.NoError(t, err)
	m, err := model.New(backend, cfg, model.Options{Mode: mode, LoRA: testLoRA, MaxBatch: testRows, MaxSeq: testSeqLen})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	if mode == model.ModeLoRA {
		require.NoError(t, m.InitRandom(1))
		require.NoError(t, m.InitAdapters(seed))
	} else {
		require.NoError(t, m.InitRandom(seed))
	}
	return m
}

// newReplicas builds one replica per communicator, rank r from seed 1+r, so
// that the replicas start different until SyncWeights.
func newReplicas(t testing.TB, comms []*collective.Communicator, mode model.Mode, cfg Config) []*replica {
	t.Helper()
	return newReplicasOn(t, comms, mode, cfg, func(int) kernels.Backend { return newCPUBackend(t) })
}

// newReplicasOn is newReplicas with rank r's model on backendOf(r).
func newReplicasOn(t testing.TB, comms []*collective.Communicator, mode model.Mode, cfg Config, backendOf func(r int) kernels.Backend) []*replica {
	t.Helper()
	replicas := make([]*replica, len(comms))
	for r, comm := range comms {
		m := newModelOn(t, backendOf(r), mode, uint64(1+r))
		optimizer, err := model.NewAdamW(m, testAdamW())
		require.NoError(t, err)
		t.Cleanup(optimizer.Close)
		stepper, err := New(m, optimizer, comm, cfg)
		require.NoError(t, err)
		t.Cleanup(stepper.Close)
		replicas[r] = &replica{model: m, optimizer: optimizer, stepper: stepper, comm: comm}
	}
	return replicas
}

// onEveryRank runs fn for each replica concurrently and fails the test on any error.
func onEveryRank(t testing.TB, replicas []*replica, fn func(r int, rep *replica) error) {
	t.Helper()
	errs := make([]error, len(replicas))
	var wg sync.WaitGroup
	for r, rep := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = fn(r, rep)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
}

// randomBatch returns rows of random tokens whose targets are the next token,
// with about a quarter of the targets ignored so that ranks hold different
// numbers of target tokens.
func randomBatch(rng *rand.Rand, rows, seqLen, vocab int) *data.Batch {
	n := rows * seqLen
	b := &data.Batch{
		Size: rows, SeqLen: seqLen,
		IDs: make([]int32, n), Targets: make([]int32, n), Positions: make([]int32, n),
		Starts: make([][]int32, rows), Lengths: make([]int, rows),
	}
	for i := range n {
		b.IDs[i] = int32(rng.IntN(vocab))
		b.Positions[i] = int32(i % seqLen)
	}
	for i := range n {
		b.Targets[i] = kernels.IgnoreIndex
		if (i+1)%seqLen != 0 && rng.IntN(4) != 0 {
			b.Targets[i] = b.IDs[i+1]
			b.TargetTokens++
		}
	}
	for r := range rows {
		b.Starts[r] = []int32{0}
		b.Lengths[r] = seqLen
	}
	b.Tokens = n
	return b
}

// subBatch returns rows [start, end) of batch as a batch of its own.
func subBatch(batch *data.Batch, start, end int) *data.Batch {
	span := func(values []int32) []int32 { return values[start*batch.SeqLen : end*batch.SeqLen] }
	sub := &data.Batch{
		Size:      end - start,
		SeqLen:    batch.SeqLen,
		IDs:       span(batch.IDs),
		Targets:   span(batch.Targets),
		Positions: span(batch.Positions),
		Starts:    batch.Starts[start:end],
		Lengths:   batch.Lengths[start:end],
		Tokens:    (end - start) * batch.SeqLen,
	}
	for _, target := range sub.Targets {
		if target != kernels.IgnoreIndex {
			sub.TargetTokens++
		}
	}
	return sub
}

// concatBatches returns the rows of a followed by the rows of b.
func concatBatches(a, b *data.Batch) *data.Batch {
	return &data.Batch{
		Size:         a.Size + b.Size,
		SeqLen:       a.SeqLen,
		IDs:          append(append([]int32(nil), a.IDs...), b.IDs...),
		Targets:      append(append([]int32(nil), a.Targets...), b.Targets...),
		Positions:    append(append([]int32(nil), a.Positions...), b.Positions...),
		Starts:       append(append([][]int32(nil), a.Starts...), b.Starts...),
		Lengths:      append(append([]int(nil), a.Lengths...), b.Lengths...),
		Tokens:       a.Tokens + b.Tokens,
		TargetTokens: a.TargetTokens + b.TargetTokens,
	}
}

// trainableValues returns a host copy of every trainable tensor by name.
func trainableValues(t testing.TB, m *model.Model) map[string][]float32 {
	t.Helper()
	values := map[string][]float32{}
	for _, p := range m.Trainable() {
		v, err := m.ReadTensor(p.Name)
		require.NoError(t, err)
		values[p.Name] = v
	}
	return values
}

// maxRelativeDiff returns max|got − want| / max|want| over one tensor.
func maxRelativeDiff(got, want []float32) float64 {
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i])-float64(want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	if scale == 0 {
		return diff
	}
	return diff / scale
}
