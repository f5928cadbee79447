package data

import "fmt"

// Batch is a micro-batch of Size rows of SeqLen tokens, in row-major [Size][SeqLen]
// arrays, ready for the model.
type Batch struct {
	Size   int // rows, B
	SeqLen int // tokens per row, T

	// IDs, Targets and Positions hold B·T values. Row b is [b·T, (b+1)·T). Their meaning
	// is that of the fields of Row.
	IDs       []int32
	Targets   []int32
	Positions []int32
	// Starts holds the example start offsets of each row. Attention must not cross them.
	Starts [][]int32
	// Lengths holds the number of real tokens of each row. The rest is padding.
	Lengths []int
	// RowIndices are the dataset rows in the batch.
	RowIndices []int

	// Tokens counts the real tokens and TargetTokens the targets that take loss. To
	// average the loss over the target tokens of a global batch, divide the summed loss by
	// the sum of TargetTokens over micro-batches and ranks.
	Tokens       int
	TargetTokens int
}

// NewBatch builds a batch of the given rows.
func NewBatch(rows *Rows, indices []int) (*Batch, error) {
	t := rows.SeqLen()
	b := &Batch{
		Size:       len(indices),
		SeqLen:     t,
		IDs:        make([]int32, len(indices)*t),
		Targets:    make([]int32, len(indices)*t),
		Positions:  make([]int32, len(indices)*t),
		Starts:     make([][]int32, len(indices)),
		Lengths:    make([]int, len(indices)),
		RowIndices: append([]int(nil), indices...),
	}
	for k, i := range indices {
		if i < 0 || i >= rows.Len() {
			return nil, fmt.Errorf("row index %d out of range; the dataset has %d rows", i, rows.Len())
		}
		span := k * t
		b.Starts[k], b.Lengths[k] = rows.fillRow(i, b.IDs[span:span+t], b.Targets[span:span+t], b.Positions[span:span+t], nil)
		b.Tokens += b.Lengths[k]
		b.TargetTokens += countLabels(b.Targets[span : span+t])
	}
	return b, nil
}

// Row returns row k of the batch, as views into the batch arrays.
func (b *Batch) Row(k int) Row {
	span := k * b.SeqLen
	end := span + b.SeqLen
	return Row{
		IDs:       b.IDs[span:end],
		Targets:   b.Targets[span:end],
		Positions: b.Positions[span:end],
		Starts:    b.Starts[k],
		Length:    b.Lengths[k],
	}
}

// Loader yields the micro-batches of one rank: a Sampler over a set of rows.
type Loader struct {
	rows    *Rows
	sampler *Sampler
}

// NewLoader returns a loader over rows, positioned at the start of plan.Epoch.
func NewLoader(rows *Rows, plan ShardPlan) (*Loader, error) {
	sampler, err := NewSampler(rows.Len(), plan)
	if err != nil {
		return nil, err
	}
	return &Loader{rows: rows, sampler: sampler}, nil
}

// Next returns the next micro-batch, and false at the end of the epoch.
func (l *Loader) Next() (*Batch, bool) {
	indices, ok := l.sampler.Next()
	if !ok {
		return nil, false
	}
	// NewLoader made the sampler for rows.Len() rows, so every index is in range and
	// NewBatch cannot fail.
	b, err := NewBatch(l.rows, indices)
	if err != nil {
		return nil, false
	}
	return b, true
}

// Sampler returns the loader's sampler, for SetEpoch, State, Restore and the counts.
func (l *Loader) Sampler() *Sampler { return l.sampler }
