package node

import (
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/ringtune/ringtune/model"
)

// SummaryFile is the name of the run summary in the output folder.
const SummaryFile = "summary.json"

// Summary describes a finished run. Rank 0 writes it to summary.json.
type Summary struct {
	JobID     string `json:"job_id"`
	Mode      string `json:"mode"`
	WorldSize int    `json:"world_size"`
	Steps     int    `json:"steps"`
	// TrainableParams counts the values the optimizer updates, and TotalParams
	// every value of the model, adapters included.
	TrainableParams int64 `json:"trainable_params"`
	TotalParams     int64 `json:"total_params"`
	// GradientBytes is the size of the all-reduced gradients per step (fp32).
	GradientBytes int64    `json:"gradient_bytes"`
	Loss          *float64 `json:"loss"`
	EvalLoss      *float64 `json:"eval_loss"`
	// EvalPerplexity is exp(EvalLoss).
	EvalPerplexity *float64 `json:"eval_perplexity"`
	// Output is the final model (full mode) or adapter (LoRA mode) folder, and
	// OutputBytes the size of its files.
	Output         string  `json:"output"`
	OutputBytes    int64   `json:"output_bytes"`
	ElapsedSeconds float64 `json:"elapsed_s"`
	Finished       string  `json:"finished"`
}

// writeFinal writes the trained model or adapter and summary.json into the
// output folder. The model or adapter goes to a temporary folder first and is
// renamed, so an existing result is replaced only by a complete one.
func (l *stepLoop) writeFinal(res *Result) (string, error) {
	name := "model"
	if l.model.Options().Mode == model.ModeLoRA {
		name = "adapter"
	}
	final := filepath.Join(l.job.Output, name)
	tmp, err := makeTempDir(l.job.Output, "."+name+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a no-op after the rename

	if err := saveTrainable(tmp, l.model, l.job.Model.Base); err != nil {
		return "", err
	}
	if name == "model" {
		// A Hugging Face model folder carries its tokenizer, so that generate
		// and eval find it without a flag.
		for _, src := range tokenizerFiles(l.job.Model.Tokenizer) {
			if err := copyFile(src, filepath.Join(tmp, filepath.Base(src))); err != nil {
				return "", err
			}
		}
	}
	if err := replaceDir(tmp, final); err != nil {
		return "", fmt.Errorf("renaming the final %s into place: %w", name, err)
	}

	var trainable, total int64
	for _, p := range l.model.Params() {
		total += int64(p.Value.Len())
	}
	for _, p := range l.model.Trainable() {
		trainable += int64(p.Value.Len())
	}
	size, err := DirBytes(final)
	if err != nil {
		return "", err
	}
	summary := Summary{
		JobID:           l.job.JobID,
		Mode:            l.job.Mode,
		WorldSize:       res.WorldSize,
		Steps:           res.Steps,
		TrainableParams: trainable,
		TotalParams:     total,
		GradientBytes:   4 * trainable,
		Loss:            finiteOrNil(res.Loss),
		EvalLoss:        finiteOrNil(l.evalLoss),
		EvalPerplexity:  finiteOrNil(math.Exp(l.evalLoss)),
		Output:          final,
		OutputBytes:     size,
		ElapsedSeconds:  time.Since(l.start).Seconds(),
		Finished:        time.Now().UTC().Format(time.RFC3339),
	}
	if math.IsNaN(l.evalLoss) {
		summary.EvalLoss, summary.EvalPerplexity = nil, nil
	}
	if err := writeJSONFile(filepath.Join(l.job.Output, SummaryFile), summary); err != nil {
		return "", err
	}
	l.log.Info("wrote the final "+name, "path", final, "bytes", size)
	return final, nil
}

// DirBytes returns the sum of the sizes of the regular files under dir, each
// measured with os.Stat.
func DirBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
