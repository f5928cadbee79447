package data

import (
	"errors"
	"fmt"
)

// ShardPlan selects which rows a rank reads and in which order, with the semantics of
// PyTorch's torch.utils.data.DistributedSampler followed by a DataLoader of BatchSize
// rows.
type ShardPlan struct {
	// Seed and Epoch select the shuffle. Every rank must use the same values.
	Seed  uint64
	Epoch int
	// WorldSize is the number of ranks and Rank is this one, 0 ≤ Rank < WorldSize.
	WorldSize int
	Rank      int
	// BatchSize is the number of rows in a micro-batch.
	BatchSize int
	// Shuffle permutes the rows every epoch. Without it ranks read rows in index order.
	Shuffle bool
	// DropLast drops the tail of the epoch's order that does not divide evenly among the
	// ranks. Without it the order is padded by repeating it from its start.
	DropLast bool
	// DropLastBatch drops a final micro-batch of fewer than BatchSize rows. The choice is
	// the same on every rank, because every rank gets the same number of rows.
	DropLastBatch bool
}

// Validate checks the plan on its own, without a dataset.
func (p ShardPlan) Validate() error {
	var errs []error
	if p.WorldSize < 1 {
		errs = append(errs, fmt.Errorf("invalid world size %d; expected at least 1", p.WorldSize))
	}
	if p.Rank < 0 || (p.WorldSize >= 1 && p.Rank >= p.WorldSize) {
		errs = append(errs, fmt.Errorf("invalid rank %d; expected 0 ≤ rank < world size %d", p.Rank, p.WorldSize))
	}
	if p.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("invalid batch size %d; expected at least 1 row", p.BatchSize))
	}
	if p.Epoch < 0 {
		errs = append(errs, fmt.Errorf("invalid epoch %d; expected 0 or more", p.Epoch))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid shard plan: %w", errors.Join(errs...))
	}
	return nil
}

// SamplerState is the position of a Sampler in its epoch. It is the same on every rank
// and encodes to JSON, so rank 0 can store it with a checkpoint. The plan fields let
// Restore reject a state saved under a different plan or dataset.
type SamplerState struct {
	Epoch int `json:"epoch"`
	// RowsConsumed is the number of rows each rank has taken in Epoch.
	RowsConsumed int    `json:"rows_consumed"`
	Seed         uint64 `json:"seed"`
	WorldSize    int    `json:"world_size"`
	NumRows      int    `json:"num_rows"`
	Shuffle      bool   `json:"shuffle"`
	DropLast     bool   `json:"drop_last"`
}

// Sampler yields the row indices of one rank's micro-batches.
//
// For an epoch it orders the n rows by a permutation seeded with (Seed, Epoch), identical
// on every rank, or by index without Shuffle. With DropLast it keeps the first
// floor(n/W)·W entries. Otherwise it pads the order to ceil(n/W)·W entries by repeating
// it from its start, as often as needed. Rank r then takes entries r, r+W, r+2W, and so
// on, so every rank gets the same number of rows. See rand.go for the permutation.
type Sampler struct {
	plan        ShardPlan
	numRows     int
	rowsPerRank int
	indices     []int // this rank's rows in the current epoch
	consumed    int
}

// NewSampler returns a sampler over numRows rows, positioned at the start of plan.Epoch.
func NewSampler(numRows int, plan ShardPlan) (*Sampler, error) {
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	if numRows < 1 {
		return nil, errors.New("invalid shard plan: the dataset has no rows")
	}

	s := &Sampler{plan: plan, numRows: numRows}
	if plan.DropLast {
		s.rowsPerRank = numRows / plan.WorldSize
		if s.rowsPerRank == 0 {
			return nil, fmt.Errorf("invalid shard plan: with drop_last, %d rows leave none for each of %d ranks; use fewer ranks or keep the last rows", numRows, plan.WorldSize)
		}
	} else {
		s.rowsPerRank = (numRows + plan.WorldSize - 1) / plan.WorldSize
	}
	if plan.DropLastBatch && s.rowsPerRank < plan.BatchSize {
		return nil, fmt.Errorf("invalid shard plan: each rank gets %d rows, fewer than the batch size %d, and the partial batch is dropped, so an epoch has no batches; lower the batch size or keep the partial batch", s.rowsPerRank, plan.BatchSize)
	}
	s.SetEpoch(plan.Epoch)
	return s, nil
}

// SetEpoch moves to the start of an epoch. Like DistributedSampler.set_epoch, call it
// before each epoch, or every epoch repeats the same order. A negative epoch is treated
// as 0.
func (s *Sampler) SetEpoch(epoch int) {
	epoch = max(epoch, 0)
	s.plan.Epoch = epoch

	var order []int
	if s.plan.Shuffle {
		order = newStream(s.plan.Seed, uint64(epoch)).permutation(s.numRows)
	}
	s.indices = make([]int, s.rowsPerRank)
	for k := range s.indices {
		// Entry rank+k·W of the padded order, which repeats the order from its start.
		i := (s.plan.Rank + k*s.plan.WorldSize) % s.numRows
		if order != nil {
			i = order[i]
		}
		s.indices[k] = i
	}
	s.consumed = 0
}

// Epoch returns the current epoch.
func (s *Sampler) Epoch() int { return s.plan.Epoch }

// RowsPerRank returns the number of rows each rank takes per epoch.
func (s *Sampler) RowsPerRank() int { return s.rowsPerRank }

// BatchesPerEpoch returns the number of micro-batches each rank takes per epoch.
func (s *Sampler) BatchesPerEpoch() int {
	if s.plan.DropLastBatch {
		return s.rowsPerRank / s.plan.BatchSize
	}
	return (s.rowsPerRank + s.plan.BatchSize - 1) / s.plan.BatchSize
}

// Indices returns this rank's row indices for the whole current epoch.
func (s *Sampler) Indices() []int { return append([]int(nil), s.indices...) }

// Next returns the row indices of the next micro-batch, and false at the end of the
// epoch. The last micro-batch has fewer rows than BatchSize when the rows do not divide
// evenly, unless DropLastBatch drops it.
func (s *Sampler) Next() ([]int, bool) {
	remaining := s.rowsPerRank - s.consumed
	if remaining == 0 || (s.plan.DropLastBatch && remaining < s.plan.BatchSize) {
		return nil, false
	}
	n := min(remaining, s.plan.BatchSize)
	batch := append([]int(nil), s.indices[s.consumed:s.consumed+n]...)
	s.consumed += n
	return batch, true
}

// State returns the position in the epoch.
func (s *Sampler) State() SamplerState {
	return SamplerState{
		Epoch:        s.plan.Epoch,
		RowsConsumed: s.consumed,
		Seed:         s.plan.Seed,
		WorldSize:    s.plan.WorldSize,
		NumRows:      s.numRows,
		Shuffle:      s.plan.Shuffle,
		DropLast:     s.plan.DropLast,
	}
}

// Restore moves to a saved position, so that Next continues exactly where the saved
// sampler stopped. The batch size may differ from the saved run's, but the seed, world
// size, row count, Shuffle and DropLast must match.
func (s *Sampler) Restore(st SamplerState) error {
	var mismatches []error
	check := func(name string, saved, current any) {
		if saved != current {
			mismatches = append(mismatches, fmt.Errorf("%s is %v in the saved state but %v now", name, saved, current))
		}
	}
	check("seed", st.Seed, s.plan.Seed)
	check("world size", st.WorldSize, s.plan.WorldSize)
	check("row count", st.NumRows, s.numRows)
	check("shuffle", st.Shuffle, s.plan.Shuffle)
	check("drop_last", st.DropLast, s.plan.DropLast)
	if len(mismatches) > 0 {
		return fmt.Errorf("cannot restore the sampler: %w", errors.Join(mismatches...))
	}
	if st.Epoch < 0 {
		return fmt.Errorf("cannot restore the sampler: invalid epoch %d in the saved state", st.Epoch)
	}
	if st.RowsConsumed < 0 || st.RowsConsumed > s.rowsPerRank {
		return fmt.Errorf("cannot restore the sampler: %d rows consumed in the saved state, but an epoch has %d rows per rank", st.RowsConsumed, s.rowsPerRank)
	}

	s.SetEpoch(st.Epoch)
	s.consumed = st.RowsConsumed
	return nil
}
