package node

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
)

// evaluate computes the loss over the held-out rows. Rank r takes rows r, r+N,
// r+2N and so on, and one all-reduce sums the losses and target counts, so the
// result is the mean over every eval row, the same on all ranks.
func (l *stepLoop) evaluate(ctx context.Context, step int, line *MetricsLine) error {
	begin := time.Now()
	rows := l.in.Dataset.Eval
	batchSize := l.job.Eval.BatchSize
	if batchSize <= 0 {
		batchSize = l.job.Batch.MicroBatchSize
	}
	world := world(l)

	var lossSum float64
	var targets, batches int
	indices := make([]int, 0, batchSize)
	for first := l.rank; first < rows.Len(); {
		if l.job.Eval.MaxBatches > 0 && batches == l.job.Eval.MaxBatches {
			break
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
		indices = indices[:0]
		for ; first < rows.Len() && len(indices) < batchSize; first += world {
			indices = append(indices, first)
		}
		batch, err := data.NewBatch(rows, indices)
		if err != nil {
			return err
		}
		sum, count, err := l.model.Loss(batch)
		if err != nil {
			return fmt.Errorf("eval at step %d: %w", step, err)
		}
		lossSum += sum
		targets += count
		batches++
	}

	// The count travels as a high and a low part of 12 bits each, because
	// float32 holds integers exactly only up to 2^24.
	buf := []float32{float32(lossSum), float32(targets >> 12), float32(targets & (1<<12 - 1))}
	if err := l.comm.AllReduceFloat32(ctx, buf, collective.Sum); err != nil {
		return fmt.Errorf("eval at step %d: all-reduce of the eval loss failed: %w", step, err)
	}
	total := int(buf[1])<<12 + int(buf[2])
	if total == 0 {
		return fmt.Errorf("eval at step %d: the eval rows have no target tokens", step)
	}
	loss := float64(buf[0]) / float64(total)
	l.evalLoss = loss
	line.EvalLoss = finiteOrNil(loss)
	line.EvalPerplexity = finiteOrNil(math.Exp(loss))
	line.EvalTokens = total
	l.side.observeEval(loss)
	l.log.Info("eval", "step", step, "eval_loss", loss, "eval_perplexity", math.Exp(loss),
		"target_tokens", total, "seconds", time.Since(begin).Seconds())
	return nil
}
