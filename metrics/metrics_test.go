package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestCoordinatorMetrics(t *testing.T) {
	reg := NewRegistry()
	m := NewCoordinatorMetrics(reg)

	m.SetNodesJoined(2)
	m.SetGeneration(1)
	m.SetPhase("running")
	m.ObserveStep(CoordinatorStep{
		Step: 3, MeanLoss: 1.25, TokensPerSecond: 400, BytesSent: 3000,
		MaxCompute: time.Second, MaxAllReduce: 300 * time.Millisecond, MaxExposedAllReduce: 100 * time.Millisecond,
		MaxPeakMemory: 1 << 20,
	})
	m.IncFailures()
	m.IncCheckpoints()

	assert.Equal(t, 2.0, testutil.ToFloat64(m.nodesJoined))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.generation))
	assert.Equal(t, 3.0, testutil.ToFloat64(m.lastStep))
	assert.Equal(t, 1.25, testutil.ToFloat64(m.loss))
	assert.Equal(t, 400.0, testutil.ToFloat64(m.tokensPerSecond))
	assert.Equal(t, 3000.0, testutil.ToFloat64(m.bytesSent))
	assert.Equal(t, float64(1<<20), testutil.ToFloat64(m.peakMemory))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.phase.WithLabelValues("running")))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.phase.WithLabelValues("rendezvous")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.failures))
	assert.Equal(t, 1, testutil.CollectAndCount(m.computeSeconds))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestNodeMetrics(t *testing.T) {
	reg := NewRegistry()
	m := NewNodeMetrics(reg, 3)

	m.ObserveStep(1, 2.5, 0.75, 1e-4, 100, 1000, 900, time.Second, 300*time.Millisecond, 100*time.Millisecond, 1<<20, false)
	m.ObserveStep(2, 2.0, 9.5, 1e-4, 50, 1000, 900, time.Second, 300*time.Millisecond, 100*time.Millisecond, 2<<20, true)
	m.ObserveEval(1.5)

	assert.Equal(t, 2.0, testutil.ToFloat64(m.steps))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.skippedSteps))
	assert.Equal(t, 150.0, testutil.ToFloat64(m.tokens))
	assert.Equal(t, 2000.0, testutil.ToFloat64(m.bytesSent))
	assert.Equal(t, 1800.0, testutil.ToFloat64(m.bytesReceived))
	assert.Equal(t, 2.0, testutil.ToFloat64(m.loss))
	assert.Equal(t, 9.5, testutil.ToFloat64(m.gradNorm))
	assert.Equal(t, 1e-4, testutil.ToFloat64(m.lr))
	assert.Equal(t, 1.5, testutil.ToFloat64(m.evalLoss))
	assert.Equal(t, float64(2<<20), testutil.ToFloat64(m.peakMemory))

	expected := `
# HELP ringtune_node_steps_total Optimizer steps completed, skipped ones included.
# TYPE ringtune_node_steps_total counter
ringtune_node_steps_total{rank="3"} 2
`
	assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected), "ringtune_node_steps_total"))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestServe(t *testing.T) {
	reg := NewRegistry()
	m := NewNodeMetrics(reg, 0)
	m.ObserveEval(0.5)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	server := Serve(l, reg)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, server.Shutdown(ctx))
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + l.Addr().String()

	metricsBody, metricsStatus := get(t, client, base+"/metrics")
	healthBody, healthStatus := get(t, client, base+"/healthz")
	_, missingStatus := get(t, client, base+"/missing")

	assert.Equal(t, http.StatusOK, metricsStatus)
	assert.Contains(t, metricsBody, `ringtune_node_eval_loss{rank="0"} 0.5`)
	assert.Contains(t, metricsBody, "go_goroutines")
	assert.Equal(t, http.StatusOK, healthStatus)
	assert.Equal(t, "ok\n", healthBody)
	assert.Equal(t, http.StatusNotFound, missingStatus)
}

func TestRegistriesAreIndependent(t *testing.T) {
	first := NewRegistry()
	second := NewRegistry()

	assert.NotPanics(t, func() { NewCoordinatorMetrics(first) })
	assert.NotPanics(t, func() { NewCoordinatorMetrics(second) })
	assert.NotPanics(t, func() { NewNodeMetrics(first, 0) })
}

func get(t *testing.T, client *http.Client, url string) (string, int) {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body), resp.StatusCode
}
