package cpu

import (
	"fmt"

	"github.com/ringtune/ringtune/kernels"
)

// Token embedding: out[n] = table[ids[n]], and its backward, a scatter-add
// into the table gradient. See package kernels for the gradient policy and
// the dimension letters.

// EmbeddingForward gathers the rows of table named by ids.
func (b *Backend) EmbeddingForward(out, table, ids kernels.Tensor) {
	d, err := kernels.CheckEmbeddingForward(out, table, ids)
	if err != nil {
		panic(err)
	}
	idList := Int32s(ids)
	checkIDs("EmbeddingForward", idList, d.V)
	t := &b.tasks.embeddingForward
	*t = embeddingForwardTask{out: Float32s(out), ids: idList, c: d.C}
	if table.DType() == kernels.BF16 {
		t.tableBF16 = BF16s(table)
	} else {
		t.table = Float32s(table)
	}
	b.pool.run(t, d.N, max(1, elementGrain/max(1, d.C)))
	*t = embeddingForwardTask{}
}

// embeddingForwardTask copies one row per token.
// out: (N, C); table or tableBF16: (V, C); ids: (N).
type embeddingForwardTask struct {
	out       []float32
	table     []float32
	tableBF16 []uint16
	ids       []int32
	c         int
}

func (t *embeddingForwardTask) run(_, start, end int) {
	c := t.c
	for n := start; n < end; n++ {
		row := t.out[n*c : (n+1)*c]
		id := int(t.ids[n])
		if t.tableBF16 == nil {
			copy(row, t.table[id*c:(id+1)*c])
			continue
		}
		widenBF16Fast(row, t.tableBF16[id*c:(id+1)*c])
	}
}

// EmbeddingBackward adds each row of dOut into the row of dTable named by its
// id. The work is split by columns, so two workers never add into the same
// element and the sums come out in token order, independent of the number of
// workers.
func (b *Backend) EmbeddingBackward(dTable, dOut, ids kernels.Tensor) {
	d, err := kernels.CheckEmbeddingBackward(dTable, dOut, ids)
	if err != nil {
		panic(err)
	}
	idList := Int32s(ids)
	checkIDs("EmbeddingBackward", idList, d.V)
	t := &b.tasks.embeddingBackward
	*t = embeddingBackwardTask{dTable: Float32s(dTable), dOut: Float32s(dOut), ids: idList, c: d.C}
	b.pool.run(t, (d.C+embeddingColumnBlock-1)/embeddingColumnBlock, 1)
	*t = embeddingBackwardTask{}
}

// embeddingColumnBlock is the number of columns per task of
// EmbeddingBackward: 64 floats, a whole number of cache lines.
const embeddingColumnBlock = 64

// embeddingBackwardTask adds dOut into dTable over column blocks.
// dTable: (V, C), accumulated; dOut: (N, C); ids: (N).
type embeddingBackwardTask struct {
	dTable []float32
	dOut   []float32
	ids    []int32
	c      int
}

func (t *embeddingBackwardTask) run(_, start, end int) {
	c0 := start * embeddingColumnBlock
	c1 := min(t.c, end*embeddingColumnBlock)
	for n, id := range t.ids {
		src := t.dOut[n*t.c+c0 : n*t.c+c1]
		dst := t.dTable[int(id)*t.c+c0 : int(id)*t.c+c1]
		dst = dst[:len(src)]
		for i, g := range src {
			dst[i] += g
		}
	}
}

// checkIDs panics when an id is outside [0, v).
func checkIDs(op string, ids []int32, v int) {
	for n, id := range ids {
		if id < 0 || int(id) >= v {
			panic(fmt.Errorf("kernels: %s: id %d at index %d is out of range for a vocabulary of %d rows", op, id, n, v))
		}
	}
}
