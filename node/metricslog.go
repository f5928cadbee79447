package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
	"github.com/ringtune/ringtune/train"
)

// MetricsFile is the name of the per-step log in the output folder.
const MetricsFile = "metrics.jsonl"

// MetricsLine is one line of metrics.jsonl: one optimizer step, aggregated over
// the ranks. Losses that are not finite are null, because JSON has no NaN. With
// eval.at_start, a line of step 0 carries only the evaluation before training.
type MetricsLine struct {
	Step  int `json:"step"`
	Epoch int `json:"epoch"`
	// Loss is the mean cross-entropy per target token over the global batch.
	Loss     *float64 `json:"loss"`
	LR       float64  `json:"lr"`
	GradNorm *float64 `json:"grad_norm"`
	Skipped  bool     `json:"skipped"`
	// TargetTokens is the global count of target tokens of the step.
	TargetTokens int64 `json:"target_tokens"`
	// TokensPerSecond is TargetTokens over the step's wall time on the slowest rank.
	TokensPerSecond float64 `json:"tokens_per_s"`
	// BytesSentPerNode is the mean over ranks of the payload bytes each sent.
	BytesSentPerNode int64 `json:"bytes_sent_per_node"`
	// The maxima over ranks of forward+backward time, all-reduce time and the
	// all-reduce time that backward did not hide, in seconds.
	ComputeSeconds          float64 `json:"compute_s"`
	AllReduceSeconds        float64 `json:"allreduce_s"`
	ExposedAllReduceSeconds float64 `json:"exposed_allreduce_s"`
	// StepSeconds is rank 0's wall time of the step, from taking the
	// micro-batches to the coordinator's reply, evaluation and checkpoint excluded.
	StepSeconds     float64 `json:"step_s"`
	PeakMemoryBytes int64   `json:"peak_memory_bytes"`
	ElapsedSeconds  float64 `json:"elapsed_s"`
	// Eval fields are set on the steps that evaluated.
	EvalLoss       *float64 `json:"eval_loss,omitempty"`
	EvalPerplexity *float64 `json:"eval_perplexity,omitempty"`
	EvalTokens     int      `json:"eval_target_tokens,omitempty"`
	// Checkpoint is the folder written after this step, if any.
	Checkpoint string `json:"checkpoint,omitempty"`
	// Recovered is set on a line written after a lost rank took the step's
	// own line with it. Such a line has the loss, learning rate and evaluation
	// only, with zero token counts and times.
	Recovered bool   `json:"recovered,omitempty"`
	Time      string `json:"time"`
}

func finiteOrNil(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

func stepLine(step, epoch int, stats train.Stats, d *pb.StepDecision, world int, wall, elapsed time.Duration) MetricsLine {
	s := d.GetSummary()
	return MetricsLine{
		Step:                    step,
		Epoch:                   epoch,
		Loss:                    finiteOrNil(stats.Loss),
		LR:                      stats.LR,
		GradNorm:                finiteOrNil(stats.GradNorm),
		Skipped:                 stats.Skipped,
		TargetTokens:            s.GetTokens(),
		TokensPerSecond:         s.GetTokensPerSecond(),
		BytesSentPerNode:        s.GetBytesSent() / int64(max(world, 1)),
		ComputeSeconds:          time.Duration(s.GetMaxComputeNs()).Seconds(),
		AllReduceSeconds:        time.Duration(s.GetMaxAllreduceNs()).Seconds(),
		ExposedAllReduceSeconds: time.Duration(s.GetMaxExposedAllreduceNs()).Seconds(),
		StepSeconds:             wall.Seconds(),
		PeakMemoryBytes:         s.GetMaxPeakMemoryBytes(),
		ElapsedSeconds:          elapsed.Seconds(),
		Time:                    time.Now().UTC().Format(time.RFC3339Nano),
	}
}

// metricsLog appends lines to metrics.jsonl.
type metricsLog struct {
	f *os.File
	w *bufio.Writer
	// lastStep and lastElapsed are the step and elapsed_s of the last line
	// kept from earlier generations or runs, or -1 and 0 without one.
	lastStep    int
	lastElapsed time.Duration
	// lastLine is that line, and lastOffset the file offset it starts at.
	lastLine   []byte
	lastOffset int64
}

// openMetricsLog opens metrics.jsonl in output for appending. A resumed run
// first drops the lines of steps after startStep, which the interrupted run
// logged but did not checkpoint, so that every step appears once.
func openMetricsLog(output string, startStep int) (*metricsLog, error) {
	if err := os.MkdirAll(output, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output folder: %w", err)
	}
	path := filepath.Join(output, MetricsFile)
	if err := truncateMetrics(path, startStep); err != nil {
		return nil, err
	}
	m := &metricsLog{lastStep: -1}
	if raw, err := os.ReadFile(path); err == nil {
		var offset int64
		for line := range bytes.Lines(raw) {
			var last struct {
				Step    int     `json:"step"`
				Elapsed float64 `json:"elapsed_s"`
			}
			if json.Unmarshal(line, &last) == nil {
				m.lastStep, m.lastElapsed = last.Step, time.Duration(last.Elapsed*float64(time.Second))
				m.lastLine, m.lastOffset = line, offset
			}
			offset += int64(len(line))
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	m.f, m.w = f, bufio.NewWriter(f)
	return m, nil
}

// truncateMetrics keeps the lines of steps 1 to keepStep and, when keepStep
// is positive, the step-0 evaluation of the run being resumed. It drops lines
// that do not parse.
func truncateMetrics(path string, keepStep int) error {
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var kept []byte
	for line := range bytes.Lines(raw) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		var head struct {
			Step *int `json:"step"`
		}
		if json.Unmarshal(line, &head) == nil && head.Step != nil && *head.Step >= 0 && *head.Step <= keepStep && keepStep > 0 {
			kept = append(append(kept, line...), '\n')
		}
	}
	return writeFileAtomic(path, kept)
}

// write appends one line and flushes it, so that a reader sees each step as
// soon as it ends.
func (m *metricsLog) write(line MetricsLine) error {
	raw, err := json.Marshal(line)
	if err != nil {
		return err
	}
	if _, err := m.w.Write(append(raw, '\n')); err != nil {
		return fmt.Errorf("writing %s: %w", MetricsFile, err)
	}
	return m.w.Flush()
}

// replaceLast replaces the last line kept from earlier generations with line.
// truncateMetrics left only lines that parse, so that line is the file's last.
func (m *metricsLog) replaceLast(line MetricsLine) error {
	if err := m.w.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", MetricsFile, err)
	}
	if err := m.f.Truncate(m.lastOffset); err != nil {
		return fmt.Errorf("rewriting the last line of %s: %w", MetricsFile, err)
	}
	return m.write(line)
}

func (m *metricsLog) close() {
	m.w.Flush()
	m.f.Close()
}
