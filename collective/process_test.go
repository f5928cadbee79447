package collective

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Environment of a worker process: the mode, rank, world size and wire dtype.
const (
	workerEnv      = "RINGTUNE_TEST_WORKER"
	workerRankEnv  = "RINGTUNE_TEST_RANK"
	workerSizeEnv  = "RINGTUNE_TEST_WORLD_SIZE"
	workerDTypeEnv = "RINGTUNE_TEST_DTYPE"
	workerToken    = "process-test-token"
)

// workerReport is the last line a worker prints.
type workerReport struct {
	OK         bool    `json:"ok"`
	Checksum   uint64  `json:"checksum,omitempty"`
	Error      string  `json:"error,omitempty"`
	Kind       string  `json:"kind,omitempty"`
	FaultRank  int     `json:"fault_rank"`
	ReportedBy int     `json:"reported_by"`
	Seconds    float64 `json:"seconds"` // from the fault to the error, for failures
}

// workerValue is rank r's input at element i in round k: small integers, so that any
// summation order gives the same float32.
func workerValue(r, i, k int) float32 {
	return float32((r*7919+i*31+k*17)%201 - 100)
}

func workerMain() int {
	mode := os.Getenv(workerEnv)
	rank, _ := strconv.Atoi(os.Getenv(workerRankEnv))
	n, _ := strconv.Atoi(os.Getenv(workerSizeEnv))
	dtype, _ := ParseWireDType(os.Getenv(workerDTypeEnv))
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "worker:", err)
		_ = out.Encode(workerReport{Error: err.Error(), FaultRank: -1, ReportedBy: -1})
		return 1
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	fmt.Println("ADDR", lis.Addr().String())
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return fail(fmt.Errorf("read peers: %w", err))
	}
	peers := strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "PEERS ")), ",")

	ep, err := NewGRPCEndpoint(lis, GRPCConfig{Token: workerToken, Logger: quietLogger})
	if err != nil {
		return fail(err)
	}
	defer ep.Close()
	cfg := DefaultConfig()
	cfg.JobID, cfg.Generation, cfg.Rank, cfg.WorldSize, cfg.Peers = "process-test", 1, rank, n, peers
	cfg.DType, cfg.ChunkBytes = dtype, 64<<10
	cfg.NoProgressTimeout, cfg.ConnectTimeout, cfg.CloseTimeout = 2*time.Second, 20*time.Second, 2*time.Second
	cfg.Logger = quietLogger
	comm, err := New(context.Background(), cfg, ep)
	if err != nil {
		return fail(err)
	}
	defer comm.Close()

	switch mode {
	case "verify":
		return workerVerify(comm, out, fail)
	case "loop":
		return workerLoop(comm, out)
	}
	return fail(fmt.Errorf("unknown worker mode %q", mode))
}

// workerVerify all-reduces several buffers, two at a time, and checks every element.
func workerVerify(comm *Communicator, out *json.Encoder, fail func(error) int) int {
	n, r := comm.Size(), comm.Rank()
	h := fnv.New64a()
	for k, count := range []int{1, 3, 1000, 100_003, 700_001} {
		a := make([]float32, count)
		b := make([]float32, count/2+1)
		for i := range a {
			a[i] = workerValue(r, i, k)
		}
		for i := range b {
			b[i] = workerValue(r, i, k+100)
		}
		wa := comm.AllReduceAsync(context.Background(), a, Sum)
		wb := comm.AllReduceAsync(context.Background(), b, Sum)
		if err := errors.Join(wa.Wait(), wb.Wait()); err != nil {
			return fail(err)
		}
		for _, x := range []struct {
			buf   []float32
			round int
		}{{a, k}, {b, k + 100}} {
			for i, got := range x.buf {
				want := float32(0)
				for q := 0; q < n; q++ {
					want += workerValue(q, i, x.round)
				}
				if comm.Config().DType == Float32 && got != want {
					return fail(fmt.Errorf("round %d element %d: got %v, want %v", x.round, i, got, want))
				}
				var bits [4]byte
				u := math.Float32bits(got)
				bits[0], bits[1], bits[2], bits[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
				h.Write(bits[:])
			}
		}
	}
	if err := comm.Barrier(context.Background()); err != nil {
		return fail(err)
	}
	_ = out.Encode(workerReport{OK: true, Checksum: h.Sum64()})
	return 0
}

// workerLoop all-reduces until the ring fails, printing ROUND after each operation,
// then reports the error and how long after the last success it came.
func workerLoop(comm *Communicator, out *json.Encoder) int {
	buf := make([]float32, 1<<18)
	last := time.Now()
	for k := 0; ; k++ {
		if err := comm.AllReduce(context.Background(), buf, Sum); err != nil {
			rep := workerReport{Error: err.Error(), FaultRank: -1, ReportedBy: -1, Seconds: time.Since(last).Seconds()}
			var fe *FaultError
			if errors.As(err, &fe) {
				rep.Kind, rep.FaultRank, rep.ReportedBy = fe.Kind.Error(), fe.Rank, fe.ReportedBy
			}
			_ = out.Encode(rep)
			return 3
		}
		last = time.Now()
		fmt.Println("ROUND", k)
		time.Sleep(20 * time.Millisecond)
	}
}

// worker is a ring member running in its own process.
type worker struct {
	cmd    *exec.Cmd
	lines  chan string
	exited chan struct{}
}

// startWorkers starts n worker processes, introduces them to each other and returns
// them once each has printed its address.
func startWorkers(t *testing.T, n int, mode string, dtype WireDType) []*worker {
	t.Helper()
	if testing.Short() {
		t.Skip("process tests start several processes; skipped with -short")
	}
	workers := make([]*worker, n)
	stdins := make([]io.WriteCloser, n)
	addrs := make([]string, n)
	for r := range workers {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), workerEnv+"="+mode, fmt.Sprintf("%s=%d", workerRankEnv, r),
			fmt.Sprintf("%s=%d", workerSizeEnv, n), workerDTypeEnv+"="+dtype.String())
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		w := &worker{cmd: cmd, lines: make(chan string, 1024), exited: make(chan struct{})}
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				w.lines <- sc.Text()
			}
			close(w.lines)
			_ = cmd.Wait()
			close(w.exited)
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			<-w.exited
		})
		workers[r], stdins[r] = w, stdin
		line := w.next(t, 20*time.Second)
		require.True(t, strings.HasPrefix(line, "ADDR "), "rank %d printed %q", r, line)
		addrs[r] = strings.TrimPrefix(line, "ADDR ")
	}
	for r := range workers {
		_, err := fmt.Fprintf(stdins[r], "PEERS %s\n", strings.Join(addrs, ","))
		require.NoError(t, err)
	}
	return workers
}

// next returns the worker's next line, failing the test after timeout.
func (w *worker) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-w.lines:
		require.True(t, ok, "worker exited without output")
		return line
	case <-time.After(timeout):
		t.Fatalf("no output from worker within %v", timeout)
		return ""
	}
}

// waitRounds waits until the worker has finished k operations.
func (w *worker) waitRounds(t *testing.T, k int) {
	t.Helper()
	for {
		line := w.next(t, 20*time.Second)
		if line == fmt.Sprint("ROUND ", k-1) {
			return
		}
		require.True(t, strings.HasPrefix(line, "ROUND "), "unexpected line %q", line)
	}
}

// report skips ROUND lines and decodes the final report.
func (w *worker) report(t *testing.T, timeout time.Duration) workerReport {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		line := w.next(t, time.Until(deadline))
		if strings.HasPrefix(line, "ROUND ") {
			continue
		}
		var rep workerReport
		require.NoError(t, json.Unmarshal([]byte(line), &rep), "line %q", line)
		return rep
	}
}

func TestProcessesAllReduce(t *testing.T) {
	for _, dtype := range []WireDType{Float32, BFloat16} {
		t.Run(dtype.String(), func(t *testing.T) {
			const n = 3
			workers := startWorkers(t, n, "verify", dtype)
			var sums []uint64
			for r, w := range workers {
				rep := w.report(t, 60*time.Second)
				require.True(t, rep.OK, "rank %d: %s", r, rep.Error)
				sums = append(sums, rep.Checksum)
			}
			for r := 1; r < n; r++ {
				assert.Equal(t, sums[0], sums[r], "rank %d ended with other bits than rank 0", r)
			}
		})
	}
}

func TestProcessKilledPeer(t *testing.T) {
	const n, victim = 4, 2
	workers := startWorkers(t, n, "loop", Float32)
	for _, w := range workers {
		w.waitRounds(t, 3)
	}
	require.NoError(t, workers[victim].cmd.Process.Kill())
	for r, w := range workers {
		if r == victim {
			continue
		}
		rep := w.report(t, 10*time.Second)
		assert.False(t, rep.OK, "rank %d", r)
		assert.Equal(t, victim, rep.FaultRank, "rank %d: %s", r, rep.Error)
		assert.Equal(t, ErrPeerLost.Error(), rep.Kind, "rank %d: %s", r, rep.Error)
		assert.Less(t, rep.Seconds, 5.0, "rank %d took too long to fail", r)
		<-w.exited
	}
}

func TestProcessStalledPeer(t *testing.T) {
	const n, victim = 3, 1
	workers := startWorkers(t, n, "loop", Float32)
	for _, w := range workers {
		w.waitRounds(t, 3)
	}
	// SIGSTOP keeps the connections open but the process sends and reads nothing.
	require.NoError(t, workers[victim].cmd.Process.Signal(syscall.SIGSTOP))
	for r, w := range workers {
		if r == victim {
			continue
		}
		rep := w.report(t, 15*time.Second)
		assert.False(t, rep.OK, "rank %d", r)
		assert.Equal(t, victim, rep.FaultRank, "rank %d: %s", r, rep.Error)
		assert.Equal(t, ErrPeerStalled.Error(), rep.Kind, "rank %d: %s", r, rep.Error)
		// The no-progress timeout is 2 s; allow the abort to travel and a slow machine.
		assert.Less(t, rep.Seconds, 8.0, "rank %d took too long to fail", r)
		<-w.exited
	}
}
