package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ringtune/ringtune/internal/chart"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/node"
)

// Files that compare writes into its folder.
const (
	compareReportFile  = "REPORT.md"
	compareJSONFile    = "report.json"
	compareLossChart   = "loss.png"
	compareStepChart   = "step_time.png"
	compareBytesChart  = "bytes_per_step.png"
	compareMemoryChart = "peak_memory.png"
)

// compareReport is the content of report.json.
type compareReport struct {
	Config  string        `json:"config"`
	Base    string        `json:"base"`
	Nodes   int           `json:"nodes"`
	Created string        `json:"created"`
	Runs    []*compareRun `json:"runs"`
	// Metrics holds one entry per row of the report's table, in its order.
	Metrics []compareMetric `json:"metrics"`
	Charts  []string        `json:"charts"`
}

// compareMetric is one measured quantity of both runs.
type compareMetric struct {
	Key    string `json:"key"`
	Label  string `json:"label"`
	Unit   string `json:"unit"`
	Method string `json:"method"`
	// Full and LoRA are nil when the run failed or its files lack the value.
	Full *measuredValue `json:"full"`
	LoRA *measuredValue `json:"lora"`
	// FullToLoRA is Full.Value / LoRA.Value.
	FullToLoRA *float64 `json:"full_to_lora"`
	format     func(float64) string
}

// measuredValue is one number and the file it was read or measured from.
type measuredValue struct {
	Value  float64 `json:"value"`
	Source string  `json:"source"`
}

// metric returns the metric with key, or nil.
func (r *compareReport) metric(key string) *compareMetric {
	for i := range r.Metrics {
		if r.Metrics[i].Key == key {
			return &r.Metrics[i]
		}
	}
	return nil
}

// runFiles contains the summary and metrics of one finished run.
type runFiles struct {
	run         *compareRun
	summary     node.Summary
	summaryPath string
	lines       []node.MetricsLine
	metricsPath string
}

// readRunFiles reads summary.json and metrics.jsonl of a finished run.
func readRunFiles(run *compareRun) (*runFiles, error) {
	files := &runFiles{run: run,
		summaryPath: filepath.Join(run.Output, node.SummaryFile),
		metricsPath: filepath.Join(run.Output, node.MetricsFile)}
	raw, err := os.ReadFile(files.summaryPath)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &files.summary); err != nil {
		return nil, fmt.Errorf("%s: %w", files.summaryPath, err)
	}
	f, err := os.Open(files.metricsPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for number := 1; scanner.Scan(); number++ {
		var line node.MetricsLine
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", files.metricsPath, number, err)
		}
		files.lines = append(files.lines, line)
	}
	return files, scanner.Err()
}

// stepLines returns the lines of training steps, without the step-0
// evaluation before training.
func (f *runFiles) stepLines() []node.MetricsLine {
	var steps []node.MetricsLine
	for _, line := range f.lines {
		if line.Step > 0 {
			steps = append(steps, line)
		}
	}
	return steps
}

// medianOf returns the median of value over the step lines, leaving out the
// lines written again after a lost rank, which have no statistics of their own.
func (f *runFiles) medianOf(value func(node.MetricsLine) float64) (*measuredValue, bool) {
	var values []float64
	for _, line := range f.stepLines() {
		if !line.Recovered {
			values = append(values, value(line))
		}
	}
	if len(values) == 0 {
		return nil, false
	}
	return &measuredValue{Value: median(values), Source: f.metricsPath}, true
}

// median returns the middle value, or the mean of the two middle values.
func median(values []float64) float64 {
	sorted := slices.Sorted(slices.Values(values))
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// finalOutputDir returns the run's final model or adapter folder.
func (f *runFiles) finalOutputDir() string {
	if f.run.Mode == "lora" {
		return filepath.Join(f.run.Output, "adapter")
	}
	return filepath.Join(f.run.Output, "model")
}

// lastCheckpointDir returns the complete checkpoint of the highest step.
func (f *runFiles) lastCheckpointDir() (string, error) {
	steps, err := node.CheckpointSteps(f.run.Output)
	if err != nil {
		return "", err
	}
	if len(steps) == 0 {
		return "", fmt.Errorf("%s contains no complete checkpoint", filepath.Join(f.run.Output, "checkpoints"))
	}
	return node.CheckpointPath(f.run.Output, steps[len(steps)-1]), nil
}

// evalAt returns the eval line of step, or nil.
func (f *runFiles) evalAt(step int) *node.MetricsLine {
	for i := range f.lines {
		if f.lines[i].Step == step && f.lines[i].EvalLoss != nil {
			return &f.lines[i]
		}
	}
	return nil
}

// commonEvalStep returns the last step > 0 at which every run evaluated, or -1.
func commonEvalStep(runs []*runFiles) int {
	best := -1
	if len(runs) == 0 {
		return best
	}
	for _, line := range runs[0].lines {
		if line.Step <= 0 || line.EvalLoss == nil {
			continue
		}
		everyRun := true
		for _, other := range runs[1:] {
			if other.evalAt(line.Step) == nil {
				everyRun = false
			}
		}
		if everyRun {
			best = max(best, line.Step)
		}
	}
	return best
}

// metricSpec describes one row of the table and how to measure it for a run.
type metricSpec struct {
	key, label, unit, method string
	format                   func(float64) string
	measure                  func(*runFiles) (*measuredValue, error)
}

// compareMetricSpecs returns the rows of the table. evalStep is the step whose
// evaluation both runs report, or -1.
func compareMetricSpecs(evalStep int) []metricSpec {
	fromSummary := func(value func(node.Summary) float64) func(*runFiles) (*measuredValue, error) {
		return func(f *runFiles) (*measuredValue, error) {
			return &measuredValue{Value: value(f.summary), Source: f.summaryPath}, nil
		}
	}
	medianOf := func(value func(node.MetricsLine) float64) func(*runFiles) (*measuredValue, error) {
		return func(f *runFiles) (*measuredValue, error) {
			v, ok := f.medianOf(value)
			if !ok {
				return nil, fmt.Errorf("%s contains no training step", f.metricsPath)
			}
			return v, nil
		}
	}
	evalValue := func(value func(node.MetricsLine) *float64) func(*runFiles) (*measuredValue, error) {
		return func(f *runFiles) (*measuredValue, error) {
			line := f.evalAt(evalStep)
			if line == nil || value(*line) == nil {
				return nil, fmt.Errorf("%s has no evaluation at step %d", f.metricsPath, evalStep)
			}
			return &measuredValue{Value: *value(*line), Source: f.metricsPath}, nil
		}
	}
	sizeOf := func(dir func(*runFiles) (string, error)) func(*runFiles) (*measuredValue, error) {
		return func(f *runFiles) (*measuredValue, error) {
			path, err := dir(f)
			if err != nil {
				return nil, err
			}
			size, err := node.DirBytes(path)
			if err != nil {
				return nil, err
			}
			return &measuredValue{Value: float64(size), Source: path}, nil
		}
	}

	specs := []metricSpec{
		{"trainable_params", "Parameters updated (% of total)", "parameters", "trainable_params of summary.json: the values the optimizer updates",
			formatCount, fromSummary(func(s node.Summary) float64 { return float64(s.TrainableParams) })},
		{"trainable_percent", "Parameters updated, % of total", "percent", "100 × trainable_params / total_params of summary.json",
			formatPercent, fromSummary(func(s node.Summary) float64 {
				return 100 * float64(s.TrainableParams) / float64(max(s.TotalParams, 1))
			})},
		{"total_params", "Parameters in the model", "parameters", "total_params of summary.json: every value, adapters included",
			formatCount, fromSummary(func(s node.Summary) float64 { return float64(s.TotalParams) })},
		{"peak_memory_bytes", "Peak memory per node (max over ranks)", "bytes", "max over steps of peak_memory_bytes in metrics.jsonl, which is the max over ranks",
			formatMB, func(f *runFiles) (*measuredValue, error) {
				steps := f.stepLines()
				if len(steps) == 0 {
					return nil, fmt.Errorf("%s contains no training step", f.metricsPath)
				}
				var peak int64
				for _, line := range steps {
					peak = max(peak, line.PeakMemoryBytes)
				}
				return &measuredValue{Value: float64(peak), Source: f.metricsPath}, nil
			}},
		{"compute_s", "Step compute time (median)", "seconds", "median over steps of compute_s in metrics.jsonl (forward and backward, max over ranks)",
			formatSeconds, medianOf(func(l node.MetricsLine) float64 { return l.ComputeSeconds })},
		{"exposed_allreduce_s", "Step exposed all-reduce time (median)", "seconds", "median over steps of exposed_allreduce_s in metrics.jsonl (all-reduce time that backward did not hide, max over ranks)",
			formatSeconds, medianOf(func(l node.MetricsLine) float64 { return l.ExposedAllReduceSeconds })},
		{"compute_plus_exposed_s", "Step time, compute + exposed all-reduce (median)", "seconds", "median over steps of compute_s + exposed_allreduce_s in metrics.jsonl",
			formatSeconds, medianOf(func(l node.MetricsLine) float64 { return l.ComputeSeconds + l.ExposedAllReduceSeconds })},
		{"step_s", "Step wall time without evaluation and checkpoints (median)", "seconds", "median over steps of step_s in metrics.jsonl: rank 0's wall time from taking the micro-batches to the coordinator's reply",
			formatSeconds, medianOf(func(l node.MetricsLine) float64 { return l.StepSeconds })},
		{"wall_step_s", "Step wall time (median)", "seconds", "median over steps of the difference of elapsed_s between consecutive lines of metrics.jsonl, which includes evaluation and checkpoints",
			formatSeconds, func(f *runFiles) (*measuredValue, error) {
				var intervals []float64
				steps := f.stepLines()
				for i := 1; i < len(steps); i++ {
					intervals = append(intervals, steps[i].ElapsedSeconds-steps[i-1].ElapsedSeconds)
				}
				if len(intervals) == 0 {
					return nil, nil // a run of one step has no interval; the table shows no value
				}
				return &measuredValue{Value: median(intervals), Source: f.metricsPath}, nil
			}},
		{"tokens_per_s", "Tokens/s (median)", "target tokens per second", "median over steps of tokens_per_s in metrics.jsonl (global target tokens over the slowest rank's step time)",
			formatRate, medianOf(func(l node.MetricsLine) float64 { return l.TokensPerSecond })},
		{"bytes_sent_per_node", "Sent per node per step (median)", "bytes", "median over steps of bytes_sent_per_node in metrics.jsonl (all-reduce payload, mean over ranks)",
			formatMB, medianOf(func(l node.MetricsLine) float64 { return float64(l.BytesSentPerNode) })},
		{"final_output_bytes", "Result on disk (model/ or adapter/)", "bytes", "sum of the file sizes in the final model folder (full, tokenizer files included) or adapter folder (LoRA), measured with os.Stat",
			formatMB, sizeOf(func(f *runFiles) (string, error) { return f.finalOutputDir(), nil })},
		{"last_checkpoint_bytes", "Last checkpoint on disk, optimizer state included", "bytes", "sum of the file sizes in the checkpoint folder of the highest step, measured with os.Stat",
			formatMB, sizeOf((*runFiles).lastCheckpointDir)},
	}
	if evalStep >= 0 {
		specs = append(specs,
			metricSpec{"eval_loss", fmt.Sprintf("Eval loss after step %d", evalStep), "mean cross-entropy per target token", fmt.Sprintf("eval_loss of step %d in metrics.jsonl, the last step at which both runs evaluated", evalStep),
				formatLoss, evalValue(func(l node.MetricsLine) *float64 { return l.EvalLoss })},
			metricSpec{"eval_perplexity", fmt.Sprintf("Eval perplexity after step %d", evalStep), "perplexity", fmt.Sprintf("eval_perplexity of step %d in metrics.jsonl", evalStep),
				formatPerplexity, evalValue(func(l node.MetricsLine) *float64 { return l.EvalPerplexity })})
	}
	specs = append(specs, metricSpec{"wall_s", "Wall time of the run", "seconds", "wall time of the train process, measured by compare (start-up, evaluation and writing included)",
		formatDuration, func(f *runFiles) (*measuredValue, error) {
			return &measuredValue{Value: f.run.WallSeconds, Source: f.run.Output}, nil
		}})
	return specs
}

// writeCompareReport reads the files of the runs that finished and writes
// report.json, REPORT.md and the charts into out. It returns a nil report when
// no run finished.
func writeCompareReport(out, configPath string, job *jobconfig.Config, runs []*compareRun) (*compareReport, error) {
	var finished []*runFiles
	var errs []error
	for _, run := range runs {
		if run.Error != "" {
			continue
		}
		files, err := readRunFiles(run)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the %s run: %w", run.Mode, err))
			run.Error = err.Error()
			continue
		}
		finished = append(finished, files)
	}
	if len(finished) == 0 {
		return nil, errors.Join(errs...)
	}

	report := &compareReport{Config: absOrSame(configPath), Base: job.Model.Base, Nodes: job.Cluster.Nodes,
		Created: time.Now().UTC().Format(time.RFC3339), Runs: runs}
	for _, spec := range compareMetricSpecs(commonEvalStep(finished)) {
		m := compareMetric{Key: spec.key, Label: spec.label, Unit: spec.unit, Method: spec.method, format: spec.format}
		for _, files := range finished {
			value, err := spec.measure(files)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s of the %s run: %w", spec.key, files.run.Mode, err))
				continue
			}
			if files.run.Mode == "full" {
				m.Full = value
			} else {
				m.LoRA = value
			}
		}
		if m.Full != nil && m.LoRA != nil && m.LoRA.Value != 0 {
			ratio := m.Full.Value / m.LoRA.Value
			m.FullToLoRA = &ratio
		}
		report.Metrics = append(report.Metrics, m)
	}

	charts, err := writeCompareCharts(out, report, finished)
	if err != nil {
		errs = append(errs, err)
	}
	report.Charts = charts
	if err := writeJSONReport(filepath.Join(out, compareJSONFile), report); err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	if err := os.WriteFile(filepath.Join(out, compareReportFile), []byte(report.markdown()), 0o644); err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	return report, errors.Join(errs...)
}

func absOrSame(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

func writeJSONReport(path string, report *compareReport) error {
	raw, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

// modeLabel returns the name of a mode in the report.
func modeLabel(mode string) string {
	if mode == "lora" {
		return "LoRA"
	}
	return mode
}

// writeCompareCharts draws the charts of the finished runs and returns their
// file names.
func writeCompareCharts(out string, report *compareReport, finished []*runFiles) ([]string, error) {
	var charts []string
	var errs []error
	add := func(name string, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		charts = append(charts, name)
	}

	var series []chart.Series
	for _, files := range finished {
		train := chart.Series{Name: modeLabel(files.run.Mode) + " train loss"}
		eval := chart.Series{Name: modeLabel(files.run.Mode) + " eval loss", Dashed: true}
		for _, line := range files.lines {
			if line.Step > 0 && line.Loss != nil {
				train.X, train.Y = append(train.X, float64(line.Step)), append(train.Y, *line.Loss)
			}
			if line.EvalLoss != nil {
				eval.X, eval.Y = append(eval.X, float64(line.Step)), append(eval.Y, *line.EvalLoss)
			}
		}
		series = append(series, train, eval)
	}
	add(compareLossChart, chart.Lines(filepath.Join(out, compareLossChart), "Loss per step", "step", "mean cross-entropy per target token", series))

	// Each bar chart has one bar per run that has the value.
	bars := func(keys []string, scale float64) ([]string, [][]float64) {
		var categories []string
		values := make([][]float64, len(keys))
		for _, files := range finished {
			row := make([]float64, len(keys))
			complete := true
			for i, key := range keys {
				v := report.metric(key).value(files.run.Mode)
				if v == nil {
					complete = false
					break
				}
				row[i] = v.Value * scale
			}
			if !complete {
				continue
			}
			categories = append(categories, modeLabel(files.run.Mode))
			for i := range keys {
				values[i] = append(values[i], row[i])
			}
		}
		return categories, values
	}
	if categories, values := bars([]string{"compute_s", "exposed_allreduce_s"}, 1); len(categories) > 0 {
		add(compareStepChart, chart.StackedBars(filepath.Join(out, compareStepChart), "Step time (median over steps)", "seconds", categories,
			[]chart.BarGroup{{Name: "compute", Values: values[0]}, {Name: "exposed all-reduce", Values: values[1]}}))
	}
	if categories, values := bars([]string{"bytes_sent_per_node"}, 1e-6); len(categories) > 0 {
		add(compareBytesChart, chart.Bars(filepath.Join(out, compareBytesChart), "Sent per node per step (median)", "MB", categories,
			[]chart.BarGroup{{Name: "all-reduce payload", Values: values[0]}}))
	}
	if categories, values := bars([]string{"peak_memory_bytes"}, 1e-6); len(categories) > 0 {
		add(compareMemoryChart, chart.Bars(filepath.Join(out, compareMemoryChart), "Peak memory per node (max over steps and ranks)", "MB", categories,
			[]chart.BarGroup{{Name: "peak memory", Values: values[0]}}))
	}
	return charts, errors.Join(errs...)
}

// value returns the metric of mode, or nil.
func (m *compareMetric) value(mode string) *measuredValue {
	if m == nil {
		return nil
	}
	if mode == "lora" {
		return m.LoRA
	}
	return m.Full
}

// table returns the report's table in Markdown.
func (r *compareReport) table() string {
	var b strings.Builder
	b.WriteString("| measured | full | LoRA | full : LoRA |\n| --- | ---: | ---: | ---: |\n")
	percent := r.metric("trainable_percent")
	for _, m := range r.Metrics {
		if m.Key == "trainable_percent" {
			continue // shown beside the count
		}
		cell := func(v *measuredValue) string {
			if v == nil {
				return "n/a"
			}
			return m.format(v.Value)
		}
		if m.Key == "trainable_params" {
			cell = func(v *measuredValue) string {
				if v == nil {
					return "n/a"
				}
				text := m.format(v.Value)
				if share := percent.value(modeOf(m, v)); share != nil {
					text += " (" + formatPercent(share.Value) + ")"
				}
				return text
			}
		}
		ratio := "n/a"
		if m.FullToLoRA != nil {
			ratio = formatRatio(*m.FullToLoRA)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", m.Label, cell(m.Full), cell(m.LoRA), ratio)
	}
	return b.String()
}

// modeOf returns the mode whose value of m is v.
func modeOf(m compareMetric, v *measuredValue) string {
	if v == m.LoRA {
		return "lora"
	}
	return "full"
}

// markdown returns REPORT.md.
func (r *compareReport) markdown() string {
	var b strings.Builder
	b.WriteString("# Full fine-tuning and LoRA compared\n\n")
	fmt.Fprintf(&b, "The job `%s` ran twice on this host with %s, the same base model (`%s`), data, steps and seed: once with every weight trained and once with LoRA adapters. ", r.Config, plural(r.Nodes, "node"), r.Base)
	b.WriteString("Every number below comes from the runs' files; `report.json` keeps the raw values and the file of each.\n\n")
	for _, run := range r.Runs {
		status := "finished"
		if run.Error != "" {
			status = "failed: " + run.Error
		}
		fmt.Fprintf(&b, "- %s: `%s`, %s\n", modeLabel(run.Mode), run.Output, status)
	}
	b.WriteString("\n## Results\n\n")
	b.WriteString(r.table())
	b.WriteString("\nMB are 10^6 bytes. The ratio column divides the full run's value by the LoRA run's.\n")

	if len(r.Charts) > 0 {
		b.WriteString("\n## Charts\n\n")
		for _, name := range r.Charts {
			fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(name, ".png"), name)
		}
		b.WriteString("The loss chart draws train loss per step as solid lines and eval loss as dashed lines. The step time chart stacks the median compute time and the median exposed all-reduce time; their sum need not equal the median of the sum.\n")
	}

	b.WriteString("\n## How each number is measured\n\n")
	for _, m := range r.Metrics {
		fmt.Fprintf(&b, "- %s (%s): %s.\n", m.Label, m.Unit, m.Method)
	}
	b.WriteString("\nTimes and memory are maxima over ranks, because each line of metrics.jsonl aggregates the ranks of one step that way. Medians take every training step, the first one included.\n")
	return b.String()
}

func formatCount(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func formatPercent(v float64) string    { return fmt.Sprintf("%.2f%%", v) }
func formatMB(v float64) string         { return fmt.Sprintf("%.2f MB", v/1e6) }
func formatSeconds(v float64) string    { return fmt.Sprintf("%.3f s", v) }
func formatRate(v float64) string       { return fmt.Sprintf("%.0f", v) }
func formatLoss(v float64) string       { return fmt.Sprintf("%.4f", v) }
func formatPerplexity(v float64) string { return fmt.Sprintf("%.2f", v) }

func formatDuration(v float64) string {
	if v < 60 {
		return fmt.Sprintf("%.1f s", v)
	}
	return (time.Duration(v * float64(time.Second))).Round(time.Second).String()
}

func formatRatio(v float64) string {
	switch {
	case math.IsInf(v, 0) || math.IsNaN(v):
		return "n/a"
	case v >= 100:
		return fmt.Sprintf("%.0f : 1", v)
	case v >= 10:
		return fmt.Sprintf("%.1f : 1", v)
	}
	return fmt.Sprintf("%.2f : 1", v)
}
