package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/coordinator"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/node"
)

// trainProgress shows the coordinator's step summaries: a progress bar on a
// terminal, one log line per step elsewhere. A goroutine of its own does the
// writing, so that a terminal that blocks output cannot stall the coordinator.
type trainProgress struct {
	summaries chan coordinator.StepSummary
	done      chan struct{}

	mu    sync.Mutex
	total int
	nodes int
	bar   *progressbar.ProgressBar
	start time.Time
	first time.Time // when the first step completed
	steps int

	// metrics is rank 0's metrics.jsonl, read from offset for evaluation
	// results of steps after lastEval.
	metrics  string
	offset   int64
	lastEval int
}

// newTrainProgress returns the display of a job of total steps that resumes
// after startStep (0 for a new job).
func newTrainProgress(total, startStep, nodes int, metricsPath string) *trainProgress {
	lastEval := startStep
	if startStep == 0 {
		lastEval = -1 // a new job may evaluate at step 0
	}
	p := &trainProgress{total: total, nodes: nodes, bar: newProgressBar(total, "waiting for nodes"), start: time.Now(),
		metrics: metricsPath, lastEval: lastEval,
		summaries: make(chan coordinator.StepSummary, 1024), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for s := range p.summaries {
			p.show(s)
		}
	}()
	return p
}

// reportEvals logs the evaluation results that rank 0 appended to
// metrics.jsonl since the last call. Rank 0 writes a step's line after the
// coordinator's summary of that step, so a result may show one step late.
func (p *trainProgress) reportEvals() {
	f, err := os.Open(p.metrics)
	if err != nil {
		return // not written yet
	}
	defer f.Close()
	// A resumed run's rank 0 replaces the file with the lines up to its
	// checkpoint, so a shorter file is read again from the start.
	if info, err := f.Stat(); err != nil || info.Size() < p.offset {
		p.offset = 0
	}
	if _, err := f.Seek(p.offset, io.SeekStart); err != nil {
		return
	}
	reader := bufio.NewReader(f)
	for {
		line, err := reader.ReadBytes('\n')
		if err != nil {
			return // an incomplete line is read again next time
		}
		p.offset += int64(len(line))
		var m node.MetricsLine
		if json.Unmarshal(line, &m) != nil || m.EvalLoss == nil || m.Step <= p.lastEval {
			continue
		}
		p.lastEval = m.Step
		if p.bar != nil {
			_ = p.bar.Clear()
		}
		slog.Info("eval", "step", m.Step, "eval_loss", *m.EvalLoss, "eval_perplexity", deref(m.EvalPerplexity))
	}
}

func deref(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

// observe is the coordinator's OnSummary callback. It drops a summary when
// the display is 1024 summaries behind.
func (p *trainProgress) observe(s coordinator.StepSummary) {
	select {
	case p.summaries <- s:
	default:
	}
}

func (p *trainProgress) show(s coordinator.StepSummary) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.steps == 0 {
		p.first = now
	}
	p.steps++
	p.reportEvals()

	// The ETA extrapolates from the steps after the first, which also carries
	// the start-up of the ring.
	eta := "?"
	if p.steps > 1 {
		perStep := now.Sub(p.first) / time.Duration(p.steps-1)
		eta = (time.Duration(p.total-s.Step) * perStep).Round(time.Second).String()
	}
	mbPerNode := float64(s.BytesSent) / float64(max(p.nodes, 1)) / 1e6
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("step %d/%d loss %.4f lr %.2e %.0f tok/s %.2f MB/node eta %s", s.Step, p.total, s.MeanLoss, s.LR, s.TokensPerSecond, mbPerNode, eta))
		_ = p.bar.Set(s.Step)
		return
	}
	slog.Info("step", "step", s.Step, "of", p.total, "loss", s.MeanLoss, "lr", s.LR, "tokens_per_s", math.Round(s.TokensPerSecond),
		"mb_sent_per_node", mbPerNode, "exposed_allreduce_s", s.MaxExposedAllReduceTime.Seconds(), "eta", eta)
}

// finish shows the summaries still queued and ends the display. The
// coordinator must have stopped calling observe.
func (p *trainProgress) finish() {
	close(p.summaries)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reportEvals()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// trainSummary is the summary that train prints at the end of a job.
type trainSummary struct {
	node.Summary
	// The median tokens/s over the steps and the mean bytes each node sent per step.
	// EvalLossAtStart is the evaluation before the first step, with eval.at_start.
	EvalLossAtStart    *float64 `json:"eval_loss_at_start,omitempty"`
	MedianTokensPerSec float64  `json:"median_tokens_per_s"`
	BytesPerNodeStep   float64  `json:"bytes_sent_per_node_per_step"`
	WallSeconds        float64  `json:"wall_s"`
	Metrics            string   `json:"metrics"`
	// measuredSteps counts the lines the two figures above come from.
	measuredSteps int
}

// printTrainSummary prints the summary of a run that started after startStep.
func printTrainSummary(c *cli.Context, job *jobconfig.Config, startStep int, wall time.Duration) error {
	raw, err := os.ReadFile(filepath.Join(job.Output, node.SummaryFile))
	if err != nil {
		return fmt.Errorf("the job finished but rank 0 wrote no summary: %w", err)
	}
	var s trainSummary
	if err := json.Unmarshal(raw, &s.Summary); err != nil {
		return fmt.Errorf("%s: %w", node.SummaryFile, err)
	}
	s.WallSeconds = wall.Seconds()
	s.Metrics = filepath.Join(job.Output, node.MetricsFile)
	if err := addMetricStats(&s); err != nil {
		return err
	}

	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	steps := fmt.Sprintf("%d steps", s.Steps)
	switch {
	case startStep > 0 && startStep >= s.Steps:
		steps = fmt.Sprintf("no step after step %d", startStep)
	case startStep > 0:
		steps = fmt.Sprintf("steps %d to %d", startStep+1, s.Steps)
	}
	fmt.Fprintf(w, "job %s: %s mode, %s, %s in %s\n", s.JobID, s.Mode, plural(s.WorldSize, "node"), steps, wall.Round(time.Second))
	fmt.Fprintf(w, "  trainable parameters  %d of %d (%.2f%%)\n", s.TrainableParams, s.TotalParams, 100*float64(s.TrainableParams)/float64(max(s.TotalParams, 1)))
	fmt.Fprintf(w, "  final train loss      %s\n", formatOptional(s.Loss, "%.4f"))
	fmt.Fprintf(w, "  eval loss             %s (perplexity %s)", formatOptional(s.EvalLoss, "%.4f"), formatOptional(s.EvalPerplexity, "%.2f"))
	if s.EvalLossAtStart != nil {
		fmt.Fprintf(w, ", %.4f before training", *s.EvalLossAtStart)
	}
	fmt.Fprintln(w)
	if s.measuredSteps > 0 {
		fmt.Fprintf(w, "  tokens/s              %.0f (median over steps)\n", s.MedianTokensPerSec)
		fmt.Fprintf(w, "  sent per node, step   %.2f MB (gradients: %.2f MB fp32)\n", s.BytesPerNodeStep/1e6, float64(s.GradientBytes)/1e6)
	} else {
		fmt.Fprintf(w, "  tokens/s              n/a (no step in metrics.jsonl)\n")
		fmt.Fprintf(w, "  sent per node, step   n/a (gradients: %.2f MB fp32)\n", float64(s.GradientBytes)/1e6)
	}
	fmt.Fprintf(w, "  output                %s (%.1f MB)\n", s.Output, float64(s.OutputBytes)/1e6)
	fmt.Fprintf(w, "  metrics               %s\n", s.Metrics)
	return nil
}

func formatOptional(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

// addMetricStats reads metrics.jsonl for the median tokens/s, the mean bytes
// per node and step, and the last eval perplexity.
func addMetricStats(s *trainSummary) error {
	f, err := os.Open(s.Metrics)
	if err != nil {
		return err
	}
	defer f.Close()
	var rates []float64
	var bytes float64
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		var line node.MetricsLine
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			return fmt.Errorf("%s: %w", s.Metrics, err)
		}
		if line.Step == 0 {
			s.EvalLossAtStart = line.EvalLoss // the evaluation before training
			continue
		}
		if line.Recovered {
			continue // no throughput of its own
		}
		rates = append(rates, line.TokensPerSecond)
		bytes += float64(line.BytesSentPerNode)
	}
	if err := scanner.Err(); err != nil {
		return err
	}
	if len(rates) > 0 {
		s.MedianTokensPerSec = median(rates)
		s.BytesPerNodeStep = bytes / float64(len(rates))
		s.measuredSteps = len(rates)
	}
	return nil
}
