package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NodeMetrics are the metrics of one training node, named ringtune_node_* and
// labelled with the node's rank. The methods are safe for concurrent use.
type NodeMetrics struct {
	steps            prometheus.Counter
	skippedSteps     prometheus.Counter
	tokens           prometheus.Counter
	bytesSent        prometheus.Counter
	bytesReceived    prometheus.Counter
	loss             prometheus.Gauge
	lr               prometheus.Gauge
	gradNorm         prometheus.Gauge
	evalLoss         prometheus.Gauge
	peakMemory       prometheus.Gauge
	stepSeconds      prometheus.Histogram
	computeSeconds   prometheus.Histogram
	allReduceSeconds prometheus.Histogram
	exposedSeconds   prometheus.Histogram
}

// NewNodeMetrics creates the metrics of the node of the given rank and registers
// them with reg.
func NewNodeMetrics(reg prometheus.Registerer, rank int) *NodeMetrics {
	const namespace, subsystem = "ringtune", "node"
	labels := prometheus.Labels{"rank": strconv.Itoa(rank)}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help, ConstLabels: labels})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help, ConstLabels: labels})
	}
	histogram := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: name, Help: help, ConstLabels: labels, Buckets: durationBuckets,
		})
	}

	m := &NodeMetrics{
		steps:            counter("steps_total", "Optimizer steps completed, skipped ones included."),
		skippedSteps:     counter("skipped_steps_total", "Steps whose update was skipped, for example for a non-finite gradient."),
		tokens:           counter("tokens_total", "Target tokens trained on."),
		bytesSent:        counter("bytes_sent_total", "Bytes sent in collective operations."),
		bytesReceived:    counter("bytes_received_total", "Bytes received in collective operations."),
		loss:             gauge("loss", "Training loss of the last step."),
		lr:               gauge("lr", "Learning rate of the last step."),
		gradNorm:         gauge("grad_norm", "Global gradient norm of the last step."),
		evalLoss:         gauge("eval_loss", "Loss of the last evaluation."),
		peakMemory:       gauge("peak_memory_bytes", "Peak memory of the node process reported for the last step."),
		stepSeconds:      histogram("step_seconds", "Step time, estimated as compute time plus exposed all-reduce time."),
		computeSeconds:   histogram("step_compute_seconds", "Forward and backward time of a step."),
		allReduceSeconds: histogram("step_allreduce_seconds", "All-reduce time of a step, overlapped or not."),
		exposedSeconds:   histogram("step_exposed_allreduce_seconds", "All-reduce time of a step that compute did not hide."),
	}
	reg.MustRegister(m.steps, m.skippedSteps, m.tokens, m.bytesSent, m.bytesReceived,
		m.loss, m.lr, m.gradNorm, m.evalLoss, m.peakMemory,
		m.stepSeconds, m.computeSeconds, m.allReduceSeconds, m.exposedSeconds)
	return m
}

// ObserveStep records one completed optimizer step. step is accepted for symmetry
// with the step report and is not exported as a metric, because steps_total
// already counts steps.
func (m *NodeMetrics) ObserveStep(step int, loss, gradNorm, lr float64, tokens int64, bytesSent, bytesRecv int64,
	compute, allReduce, exposed time.Duration, peakMemory int64, skipped bool) {
	m.steps.Inc()
	if skipped {
		m.skippedSteps.Inc()
	}
	m.tokens.Add(float64(max(tokens, 0)))
	m.bytesSent.Add(float64(max(bytesSent, 0)))
	m.bytesReceived.Add(float64(max(bytesRecv, 0)))
	m.loss.Set(loss)
	m.gradNorm.Set(gradNorm)
	m.lr.Set(lr)
	m.peakMemory.Set(float64(peakMemory))
	m.stepSeconds.Observe((compute + exposed).Seconds())
	m.computeSeconds.Observe(compute.Seconds())
	m.allReduceSeconds.Observe(allReduce.Seconds())
	m.exposedSeconds.Observe(exposed.Seconds())
}

// ObserveEval records the loss of one evaluation.
func (m *NodeMetrics) ObserveEval(loss float64) { m.evalLoss.Set(loss) }
