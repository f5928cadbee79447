package data_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
)

const testPad = 0

// example makes an example of n tokens with ids first, first+1, ... that all take loss.
func example(line, first, n int) data.Example {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(first + i)
	}
	return data.Example{
		Pos:         data.Position{File: "test.jsonl", Line: line},
		IDs:         ids,
		Labels:      append([]int32(nil), ids...),
		OriginalLen: n,
		NextLabel:   data.IgnoreIndex,
	}
}

func examplesOfLengths(lengths ...int) []data.Example {
	examples := make([]data.Example, len(lengths))
	first := 100
	for i, n := range lengths {
		examples[i] = example(i+1, first, n)
		first += 100
	}
	return examples
}

func rowMembers(rows *data.Rows) [][]int {
	var members [][]int
	for i := range rows.Len() {
		members = append(members, append([]int(nil), rows.RowExamples(i)...))
	}
	return members
}

func TestPackRowsFirstFit(t *testing.T) {
	tests := []struct {
		name    string
		lengths []int
		rows    [][]int
	}{
		{name: "in order", lengths: []int{5, 3, 4, 2, 6}, rows: [][]int{{0, 1}, {2, 3}, {4}}},
		{name: "earlier row reused", lengths: []int{6, 6, 2, 2}, rows: [][]int{{0, 2}, {1, 3}}},
		{name: "full rows", lengths: []int{8, 8, 1}, rows: [][]int{{0}, {1}, {2}}},
		{name: "fills gaps left of newer rows", lengths: []int{7, 5, 4, 1, 3}, rows: [][]int{{0, 3}, {1, 4}, {2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := data.PackRows(examplesOfLengths(tt.lengths...), 8, testPad)
			require.NoError(t, err)

			assert.Equal(t, tt.rows, rowMembers(rows))
			assert.True(t, rows.Packed())
		})
	}
}

func TestPackedRowLayout(t *testing.T) {
	examples := examplesOfLengths(3, 2)
	examples[1].Labels[0] = data.IgnoreIndex // a prompt token
	examples[1].Labels[1] = 201
	rows, err := data.PackRows(examples, 8, testPad)
	require.NoError(t, err)

	row := rows.Row(0)

	assert.Equal(t, []int32{100, 101, 102, 200, 201, testPad, testPad, testPad}, row.IDs)
	assert.Equal(t, []int32{101, 102, data.IgnoreIndex, 201, data.IgnoreIndex, data.IgnoreIndex, data.IgnoreIndex, data.IgnoreIndex}, row.Targets)
	assert.Equal(t, []int32{0, 1, 2, 0, 1, 0, 1, 2}, row.Positions)
	assert.Equal(t, []int32{0, 3}, row.Starts)
	assert.Equal(t, 5, row.Length)
}

func TestTruncatedExampleKeepsNextTarget(t *testing.T) {
	ex := example(1, 10, 4)
	ex.OriginalLen = 9
	ex.NextLabel = 14
	rows, err := data.PadRows([]data.Example{ex}, 4, testPad)
	require.NoError(t, err)

	row := rows.Row(0)

	assert.Equal(t, []int32{11, 12, 13, 14}, row.Targets, "the last kept token predicts the first removed one")
	assert.True(t, ex.Truncated())
	assert.Equal(t, 4, ex.TargetTokens())
}

func TestPaddingFoundByLengthNotPadID(t *testing.T) {
	// A document that ends with the end-of-text token, whose id is also the pad id, as in
	// Qwen3, where <|endoftext|> is both.
	const endOfText = 7
	doc := data.Example{IDs: []int32{3, 4, endOfText}, Labels: []int32{3, 4, endOfText}, OriginalLen: 3, NextLabel: data.IgnoreIndex}
	rows, err := data.PadRows([]data.Example{doc}, 6, endOfText)
	require.NoError(t, err)

	row := rows.Row(0)
	batch, err := data.NewBatch(rows, []int{0})
	require.NoError(t, err)

	assert.Equal(t, []int32{3, 4, endOfText, endOfText, endOfText, endOfText}, row.IDs)
	assert.Equal(t, 3, row.Length, "the end-of-text token is real, the rest is padding")
	assert.Equal(t, []int32{4, endOfText, data.IgnoreIndex, data.IgnoreIndex, data.IgnoreIndex, data.IgnoreIndex}, row.Targets,
		"the model learns to emit end-of-text, and padding takes no loss")
	assert.Equal(t, 3, batch.Tokens)
	assert.Equal(t, 2, batch.TargetTokens)
	assert.Equal(t, 3, rows.Stats().Tokens)
	assert.Equal(t, 3, rows.Stats().PaddingTokens)
}

func TestPadRowsOneExamplePerRow(t *testing.T) {
	rows, err := data.PadRows(examplesOfLengths(2, 5, 1), 6, testPad)
	require.NoError(t, err)

	assert.Equal(t, [][]int{{0}, {1}, {2}}, rowMembers(rows))
	assert.False(t, rows.Packed())
	assert.Equal(t, 2, rows.Row(0).Length)
	assert.Equal(t, []int32{0}, rows.Row(1).Starts)
	assert.Equal(t, data.RowStats{Rows: 3, Examples: 3, Tokens: 8, TargetTokens: 5, PaddingTokens: 10}, rows.Stats())
}

func TestRowsRejectInvalidExamples(t *testing.T) {
	tooLong := examplesOfLengths(2, 9)
	noTokens := []data.Example{{Pos: data.Position{File: "a.jsonl", Line: 3}}}
	misaligned := examplesOfLengths(3)
	misaligned[0].Labels = misaligned[0].Labels[:2]

	_, errTooLong := data.PackRows(tooLong, 8, testPad)
	_, errNoTokens := data.PadRows(noTokens, 8, testPad)
	_, errMisaligned := data.PackRows(misaligned, 8, testPad)
	_, errShortRow := data.PackRows(examplesOfLengths(1), 1, testPad)

	assert.EqualError(t, errTooLong, "test.jsonl:2: example has 9 tokens; expected 1 to 8 (tokenize with the same maximum sequence length as the rows)")
	assert.EqualError(t, errNoTokens, "a.jsonl:3: example has 0 tokens; expected 1 to 8 (tokenize with the same maximum sequence length as the rows)")
	assert.EqualError(t, errMisaligned, "test.jsonl:1: example has 2 labels for 3 tokens")
	assert.EqualError(t, errShortRow, "invalid row length 1; expected at least 2 tokens")
}

// randomExamples makes examples of random lengths in [1, seqLen] with random labels, some
// of them IgnoreIndex, and some truncated.
func randomExamples(rng *rand.Rand, n, seqLen int) []data.Example {
	examples := make([]data.Example, n)
	for i := range examples {
		length := 1 + rng.IntN(seqLen)
		if rng.IntN(4) == 0 {
			length = 1 + rng.IntN(min(seqLen, 4))
		}
		ex := data.Example{Pos: data.Position{File: "random", Line: i + 1}, IDs: make([]int32, length), Labels: make([]int32, length), OriginalLen: length, NextLabel: data.IgnoreIndex}
		for j := range length {
			ex.IDs[j] = int32(1 + rng.IntN(1000))
			ex.Labels[j] = ex.IDs[j]
			if rng.IntN(3) == 0 {
				ex.Labels[j] = data.IgnoreIndex
			}
		}
		if length == seqLen && rng.IntN(2) == 0 {
			ex.OriginalLen = seqLen + 5
			ex.NextLabel = int32(5000 + i)
		}
		examples[i] = ex
	}
	return examples
}

func TestPackRowsProperties(t *testing.T) {
	for trial := range 40 {
		rng := rand.New(rand.NewPCG(uint64(trial), 99))
		seqLen := 2 + rng.IntN(64)
		examples := randomExamples(rng, 1+rng.IntN(300), seqLen)
		name := fmt.Sprintf("trial %d, seq_len %d, %d examples", trial, seqLen, len(examples))

		rows, err := data.PackRows(examples, seqLen, testPad)
		require.NoError(t, err, name)
		again, err := data.PackRows(examples, seqLen, testPad)
		require.NoError(t, err, name)

		assert.Equal(t, rowMembers(rows), rowMembers(again), "%s: packing is deterministic", name)
		checkRows(t, name, rows, examples)
	}
}

func TestPadRowsProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	examples := randomExamples(rng, 200, 32)

	rows, err := data.PadRows(examples, 32, testPad)
	require.NoError(t, err)

	assert.Equal(t, len(examples), rows.Len())
	checkRows(t, "unpacked", rows, examples)
}

// checkRows verifies every row against the examples it holds: each example in exactly one
// row and whole, positions restarting at every start, targets that never cross a
// boundary, and padding after Length.
func checkRows(t *testing.T, name string, rows *data.Rows, examples []data.Example) {
	t.Helper()
	seen := make([]int, len(examples))
	tokens, targets := 0, 0
	for r := range rows.Len() {
		row := rows.Row(r)
		members := rows.RowExamples(r)
		require.Len(t, row.IDs, rows.SeqLen(), name)
		require.Len(t, row.Starts, len(members), "%s row %d", name, r)

		for k, e := range members {
			seen[e]++
			ex := examples[e]
			start := int(row.Starts[k])
			end := row.Length
			if k+1 < len(members) {
				end = int(row.Starts[k+1])
			}
			require.Equal(t, len(ex.IDs), end-start, "%s row %d example %d spans its whole length", name, r, e)
			if k > 0 {
				require.Less(t, members[k-1], e, "%s row %d keeps dataset order", name, r)
			}

			want := ex.Targets()
			for p := range len(ex.IDs) {
				require.Equal(t, ex.IDs[p], row.IDs[start+p], "%s row %d example %d id %d", name, r, e, p)
				require.Equal(t, int32(p), row.Positions[start+p], "%s row %d example %d position %d", name, r, e, p)
				require.Equal(t, want[p], row.Targets[start+p], "%s row %d example %d target %d", name, r, e, p)
			}
			last := row.Targets[end-1]
			require.True(t, last == data.IgnoreIndex || last == ex.NextLabel, "%s row %d: the last target of an example is its own", name, r)
		}
		for p := row.Length; p < rows.SeqLen(); p++ {
			require.Equal(t, int32(testPad), row.IDs[p], "%s row %d padding id", name, r)
			require.Equal(t, int32(data.IgnoreIndex), row.Targets[p], "%s row %d padding target", name, r)
			require.Equal(t, int32(p-row.Length), row.Positions[p], "%s row %d padding position", name, r)
		}
		tokens += row.Length
		for _, target := range row.Targets {
			if target != data.IgnoreIndex {
				targets++
			}
		}
	}
	for e, n := range seen {
		require.Equal(t, 1, n, "%s: example %d appears once", name, e)
	}
	st := rows.Stats()
	assert.Equal(t, tokens, st.Tokens, name)
	assert.Equal(t, targets, st.TargetTokens, name)
	assert.Equal(t, rows.Len()*rows.SeqLen()-tokens, st.PaddingTokens, name)
	assert.Equal(t, len(examples), st.Examples, name)
}

func TestPackRowsBeatsNextFit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	examples := randomExamples(rng, 2000, 128)

	rows, err := data.PackRows(examples, 128, testPad)
	require.NoError(t, err)

	nextFit, used := 0, 128
	for _, ex := range examples {
		if used+len(ex.IDs) > 128 {
			nextFit++
			used = 0
		}
		used += len(ex.IDs)
	}
	assert.LessOrEqual(t, rows.Len(), nextFit)
	fill := float64(rows.Stats().Tokens) / float64(rows.Len()*128)
	assert.Greater(t, fill, 0.9, "first fit leaves under 10%% padding on this mix")
}
