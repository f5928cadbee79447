package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Phases lists the values of the phase label of ringtune_coordinator_phase.
var Phases = []string{"rendezvous", "running", "recovering", "finishing", "done", "failed", "stopped"}

// CoordinatorStep is the aggregate of every rank's report of one step.
type CoordinatorStep struct {
	Step            int
	MeanLoss        float64
	TokensPerSecond float64
	// BytesSent is the sum over ranks.
	BytesSent int64
	// The maxima over ranks.
	MaxCompute, MaxAllReduce, MaxExposedAllReduce time.Duration
	MaxPeakMemory                                 int64
}

// CoordinatorMetrics are the metrics of the job coordinator, named
// ringtune_coordinator_*. The methods are safe for concurrent use.
type CoordinatorMetrics struct {
	nodesJoined       prometheus.Gauge
	generation        prometheus.Gauge
	lastStep          prometheus.Gauge
	loss              prometheus.Gauge
	tokensPerSecond   prometheus.Gauge
	bytesSent         prometheus.Gauge
	peakMemory        prometheus.Gauge
	computeSeconds    prometheus.Histogram
	allReduceSeconds  prometheus.Histogram
	exposedSeconds    prometheus.Histogram
	phase             *prometheus.GaugeVec
	failures          prometheus.Counter
	restarts          prometheus.Counter
	checkpointsIssued prometheus.Counter
}

// NewCoordinatorMetrics creates the coordinator metrics and registers them with reg.
// The phase starts as rendezvous.
func NewCoordinatorMetrics(reg prometheus.Registerer) *CoordinatorMetrics {
	const namespace, subsystem = "ringtune", "coordinator"
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help})
	}
	histogram := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: name, Help: help, Buckets: durationBuckets,
		})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help})
	}

	m := &CoordinatorMetrics{
		nodesJoined:       gauge("nodes_joined", "Nodes that joined the job and have not left."),
		generation:        gauge("generation", "Current ring generation."),
		lastStep:          gauge("last_completed_step", "Last step that every rank reported."),
		loss:              gauge("step_loss", "Mean loss per target token over the global batch of the last completed step."),
		tokensPerSecond:   gauge("tokens_per_second", "Target tokens per second of the last completed step, over all ranks."),
		bytesSent:         gauge("step_bytes_sent", "Bytes sent by all ranks in the all-reduces of the last completed step."),
		peakMemory:        gauge("step_peak_memory_bytes", "Maximum over ranks of the peak memory reported for the last completed step."),
		computeSeconds:    histogram("step_compute_seconds", "Maximum over ranks of the forward and backward time of a step."),
		allReduceSeconds:  histogram("step_allreduce_seconds", "Maximum over ranks of the all-reduce time of a step, overlapped or not."),
		exposedSeconds:    histogram("step_exposed_allreduce_seconds", "Maximum over ranks of the all-reduce time of a step that compute did not hide."),
		phase:             prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystem, Name: "phase", Help: "1 for the job's current phase, 0 for the others."}, []string{"phase"}),
		failures:          counter("failures_total", "Jobs that failed, including stopped ones."),
		restarts:          counter("restarts_total", "Ring re-formations after a lost node."),
		checkpointsIssued: counter("checkpoints_requested_total", "Checkpoints requested from rank 0."),
	}
	reg.MustRegister(m.nodesJoined, m.generation, m.lastStep, m.loss, m.tokensPerSecond, m.bytesSent, m.peakMemory,
		m.computeSeconds, m.allReduceSeconds, m.exposedSeconds, m.phase, m.failures, m.restarts, m.checkpointsIssued)
	m.SetPhase("rendezvous")
	return m
}

// IncRestarts counts one re-formation of the ring after a lost node.
func (m *CoordinatorMetrics) IncRestarts() { m.restarts.Inc() }

// SetPhase marks phase, one of Phases, as the current phase.
func (m *CoordinatorMetrics) SetPhase(phase string) {
	for _, p := range Phases {
		value := 0.0
		if p == phase {
			value = 1
		}
		m.phase.WithLabelValues(p).Set(value)
	}
}

// SetNodesJoined sets the number of nodes that joined and have not left.
func (m *CoordinatorMetrics) SetNodesJoined(n int) { m.nodesJoined.Set(float64(n)) }

// SetGeneration sets the current ring generation.
func (m *CoordinatorMetrics) SetGeneration(generation uint64) { m.generation.Set(float64(generation)) }

// ObserveStep records the aggregate of one completed step.
func (m *CoordinatorMetrics) ObserveStep(s CoordinatorStep) {
	m.lastStep.Set(float64(s.Step))
	m.loss.Set(s.MeanLoss)
	m.tokensPerSecond.Set(s.TokensPerSecond)
	m.bytesSent.Set(float64(s.BytesSent))
	m.peakMemory.Set(float64(s.MaxPeakMemory))
	m.computeSeconds.Observe(s.MaxCompute.Seconds())
	m.allReduceSeconds.Observe(s.MaxAllReduce.Seconds())
	m.exposedSeconds.Observe(s.MaxExposedAllReduce.Seconds())
}

// IncCheckpoints counts one checkpoint request.
func (m *CoordinatorMetrics) IncCheckpoints() { m.checkpointsIssued.Inc() }

// IncFailures counts one failed job.
func (m *CoordinatorMetrics) IncFailures() { m.failures.Inc() }
