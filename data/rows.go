package data

import "fmt"

// Row is one training row of SeqLen tokens. It holds one example, or several when the
// rows are packed, followed by padding.
type Row struct {
	// IDs are the input token ids. Padding tokens hold the pad id, but only Length marks
	// where padding starts, because a pad id such as Qwen's <|endoftext|> also ends real
	// documents.
	IDs []int32
	// Targets are the next-token targets: Targets[t] = Labels[t+1] of the same example.
	// The last token of an example gets the label of the first token that truncation
	// removed, or IgnoreIndex when nothing was removed. Padding gets IgnoreIndex.
	Targets []int32
	// Positions restart at 0 at every example start. The padding counts up from 0 too,
	// so a kernel that derives sequences from position resets treats it as a separate
	// sequence.
	Positions []int32
	// Starts holds the offset of each example in the row, in increasing order. Example k
	// spans [Starts[k], Starts[k+1]), and the last one ends at Length. Attention must
	// not cross these boundaries.
	Starts []int32
	// Length is the number of real tokens; [Length, SeqLen) is padding.
	Length int
}

// RowStats summarizes a set of rows.
type RowStats struct {
	Rows          int
	Examples      int
	Tokens        int // real tokens
	TargetTokens  int // targets that take loss
	PaddingTokens int
}

// Rows is a fixed list of training rows built from examples. It stores each example once
// and builds the padded row arrays on request.
type Rows struct {
	seqLen   int
	padID    int32
	packed   bool
	examples []Example
	members  []int // example indices, grouped by row
	bounds   []int // row i holds members[bounds[i]:bounds[i+1]]
	stats    RowStats
}

// PadRows puts every example in a row of its own, padded to seqLen with padID.
func PadRows(examples []Example, seqLen int, padID int32) (*Rows, error) {
	if err := checkExamples(examples, seqLen); err != nil {
		return nil, err
	}
	rowOf := make([]int, len(examples))
	for i := range rowOf {
		rowOf[i] = i
	}
	return newRows(examples, rowOf, len(examples), seqLen, padID, false), nil
}

// PackRows packs the examples into rows of seqLen tokens, padded with padID, by greedy
// first fit in dataset order: each example goes into the lowest-numbered row with room
// for all of it, and a new row opens when none has. Examples are never split, and the
// examples of a row keep their dataset order. The result depends only on the example
// lengths and order. Packing takes O(n log n) time for n examples.
func PackRows(examples []Example, seqLen int, padID int32) (*Rows, error) {
	if err := checkExamples(examples, seqLen); err != nil {
		return nil, err
	}

	free := newFirstFit(len(examples), seqLen)
	rowOf := make([]int, len(examples))
	numRows := 0
	for i := range examples {
		row := free.place(len(examples[i].IDs))
		rowOf[i] = row
		numRows = max(numRows, row+1)
	}
	return newRows(examples, rowOf, numRows, seqLen, padID, true), nil
}

func checkExamples(examples []Example, seqLen int) error {
	if seqLen < 2 {
		return fmt.Errorf("invalid row length %d; expected at least 2 tokens", seqLen)
	}
	for i := range examples {
		n := len(examples[i].IDs)
		if n == 0 || n > seqLen {
			return fmt.Errorf("%s: example has %d tokens; expected 1 to %d (tokenize with the same maximum sequence length as the rows)", examples[i].Pos, n, seqLen)
		}
		if len(examples[i].Labels) != n {
			return fmt.Errorf("%s: example has %d labels for %d tokens", examples[i].Pos, len(examples[i].Labels), n)
		}
	}
	return nil
}

// newRows groups the examples by row, keeping dataset order within each row.
func newRows(examples []Example, rowOf []int, numRows, seqLen int, padID int32, packed bool) *Rows {
	bounds := make([]int, numRows+1)
	for _, row := range rowOf {
		bounds[row+1]++
	}
	for i := 1; i <= numRows; i++ {
		bounds[i] += bounds[i-1]
	}
	members := make([]int, len(examples))
	next := append([]int(nil), bounds[:numRows]...)
	for i, row := range rowOf {
		members[next[row]] = i
		next[row]++
	}

	r := &Rows{seqLen: seqLen, padID: padID, packed: packed, examples: examples, members: members, bounds: bounds}
	r.stats.Rows = numRows
	r.stats.Examples = len(examples)
	for i := range examples {
		r.stats.Tokens += len(examples[i].IDs)
		r.stats.TargetTokens += examples[i].TargetTokens()
	}
	r.stats.PaddingTokens = numRows*seqLen - r.stats.Tokens
	return r
}

// Len returns the number of rows.
func (r *Rows) Len() int { return len(r.bounds) - 1 }

// SeqLen returns the row length in tokens.
func (r *Rows) SeqLen() int { return r.seqLen }

// PadID returns the token id that fills padding.
func (r *Rows) PadID() int32 { return r.padID }

// Packed reports whether rows may hold several examples.
func (r *Rows) Packed() bool { return r.packed }

// Examples returns the examples, in dataset order. The caller must not modify them.
func (r *Rows) Examples() []Example { return r.examples }

// RowExamples returns the indices into Examples of the examples in row i, in order.
func (r *Rows) RowExamples(i int) []int { return r.members[r.bounds[i]:r.bounds[i+1]] }

// Stats returns token and padding counts over all rows.
func (r *Rows) Stats() RowStats { return r.stats }

// Row builds row i.
func (r *Rows) Row(i int) Row {
	row := Row{
		IDs:       make([]int32, r.seqLen),
		Targets:   make([]int32, r.seqLen),
		Positions: make([]int32, r.seqLen),
	}
	row.Starts, row.Length = r.fillRow(i, row.IDs, row.Targets, row.Positions, nil)
	return row
}

// fillRow writes row i into ids, targets and positions, each seqLen long, and appends the
// example start offsets to starts.
func (r *Rows) fillRow(i int, ids, targets, positions, starts []int32) ([]int32, int) {
	offset := 0
	for _, e := range r.RowExamples(i) {
		ex := &r.examples[e]
		n := len(ex.IDs)
		starts = append(starts, int32(offset))
		copy(ids[offset:], ex.IDs)
		copy(targets[offset:], ex.Labels[1:])
		targets[offset+n-1] = ex.NextLabel
		for p := range n {
			positions[offset+p] = int32(p)
		}
		offset += n
	}

	length := offset
	for p := length; p < r.seqLen; p++ {
		ids[p] = r.padID
		targets[p] = IgnoreIndex
		positions[p] = int32(p - length)
	}
	return starts, length
}

// firstFit finds the lowest-numbered bin with enough free space, using a segment tree
// whose nodes hold the maximum free space below them.
type firstFit struct {
	leaves int
	tree   []int32
}

func newFirstFit(bins, capacity int) *firstFit {
	leaves := 1
	for leaves < bins {
		leaves *= 2
	}
	f := &firstFit{leaves: leaves, tree: make([]int32, 2*leaves)}
	for i := range f.tree {
		f.tree[i] = int32(capacity)
	}
	return f
}

// place takes size from the lowest-numbered bin with room for it and returns that bin.
// An unused bin always has room, because no example is longer than the capacity.
func (f *firstFit) place(length int) int {
	size := int32(length)
	node := 1
	for node < f.leaves {
		if f.tree[2*node] >= size {
			node = 2 * node
		} else {
			node = 2*node + 1
		}
	}
	f.tree[node] -= size
	for parent := node / 2; parent >= 1; parent /= 2 {
		f.tree[parent] = max(f.tree[2*parent], f.tree[2*parent+1])
	}
	return node - f.leaves
}
