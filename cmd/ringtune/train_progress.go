package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/coordinator"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/node"
)

// trainProgress shows the coordinator's step summaries: a progress bar on a
// terminal, one log line per step elsewhere.
type trainProgress struct {
	mu    sync.Mutex
	total int
	nodes int
	bar   *progressbar.ProgressBar
	start time.Time
	first time.Time // when the first step completed
	steps int
}

func newTrainProgress(total, nodes int) *trainProgress {
	return &trainProgress{total: total, nodes: nodes, bar: newProgressBar(total, "waiting for nodes"), start: time.Now()}
}

// observe is the coordinator's OnSummary callback.
func (p *trainProgress) observe(s coordinator.StepSummary) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.steps == 0 {
		p.first = now
	}
	p.steps++

	// The ETA extrapolates from the steps after the first, which also carries
	// the start-up of the ring.
	eta := "?"
	if p.steps > 1 {
		perStep := now.Sub(p.first) / time.Duration(p.steps-1)
		eta = (time.Duration(p.total-s.Step) * perStep).Round(time.Second).String()
	}
	mbPerNode := float64(s.BytesSent) / float64(max(p.nodes, 1)) / 1e6
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("step %d/%d loss %.4f %.0f tok/s %.2f MB/node eta %s", s.Step, p.total, s.MeanLoss, s.TokensPerSecond, mbPerNode, eta))
		_ = p.bar.Set(s.Step)
		return
	}
	slog.Info("step", "step", s.Step, "of", p.total, "loss", s.MeanLoss, "tokens_per_s", math.Round(s.TokensPerSecond),
		"mb_sent_per_node", mbPerNode, "exposed_allreduce_s", s.MaxExposedAllReduceTime.Seconds(), "eta", eta)
}

func (p *trainProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// trainSummary is what train prints at the end of a job.
type trainSummary struct {
	node.Summary
	// The last eval perplexity, the median tokens/s over the steps and the mean
	// bytes each node sent per step.
	EvalPerplexity     *float64 `json:"eval_perplexity"`
	MedianTokensPerSec float64  `json:"median_tokens_per_s"`
	BytesPerNodeStep   float64  `json:"bytes_sent_per_node_per_step"`
	WallSeconds        float64  `json:"wall_s"`
	Metrics            string   `json:"metrics"`
}

func printTrainSummary(c *cli.Context, job *jobconfig.Config, wall time.Duration) error {
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
	fmt.Fprintf(w, "job %s: %s mode, %d nodes, %d steps in %s\n", s.JobID, s.Mode, s.WorldSize, s.Steps, wall.Round(time.Second))
	fmt.Fprintf(w, "  trainable parameters  %d of %d (%.2f%%)\n", s.TrainableParams, s.TotalParams, 100*float64(s.TrainableParams)/float64(max(s.TotalParams, 1)))
	fmt.Fprintf(w, "  final train loss      %s\n", formatOptional(s.Loss, "%.4f"))
	fmt.Fprintf(w, "  eval loss             %s (perplexity %s)\n", formatOptional(s.EvalLoss, "%.4f"), formatOptional(s.EvalPerplexity, "%.2f"))
	fmt.Fprintf(w, "  tokens/s              %.0f (median over steps)\n", s.MedianTokensPerSec)
	fmt.Fprintf(w, "  sent per node, step   %.2f MB (gradients: %.2f MB fp32)\n", s.BytesPerNodeStep/1e6, float64(s.GradientBytes)/1e6)
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
		rates = append(rates, line.TokensPerSecond)
		bytes += float64(line.BytesSentPerNode)
		if line.EvalPerplexity != nil {
			s.EvalPerplexity = line.EvalPerplexity
		}
	}
	if err := scanner.Err(); err != nil {
		return err
	}
	if len(rates) > 0 {
		slices.Sort(rates)
		s.MedianTokensPerSec = rates[len(rates)/2]
		s.BytesPerNodeStep = bytes / float64(len(rates))
	}
	return nil
}
