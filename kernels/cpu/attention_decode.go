package cpu

import (
	"math"
	"sync"

	"github.com/ringtune/ringtune/kernels"
)

// Attention of new queries over a key/value cache, for inference. One task
// computes a block of queries of one head of one row in three steps. One
// Sgemm computes the scores S = scale·Q·Kᵀ against every key that the
// block's last query attends to. Each query's row then gets a max-subtracted
// softmax over its own keys, with zeros for the later ones, and a second
// Sgemm computes out = P·V. Unlike the tiled training kernel it holds whole
// rows of scores, rows × keys floats per worker, so the query block shrinks
// as the cache fills to keep that near decodeScoreFloats.
//
// q, out: (B, Tq, NH, HS); kCache, vCache: (B, S, NKV, HS). Query i sits at
// position length−Tq+i. See package kernels for the dimension letters.

// decodeScoreFloats bounds the scores of one task, 1 MiB per worker, unless a
// single query attends to more keys than that.
const decodeScoreFloats = 1 << 18

// decodeTasks recycles task structs. opTasks, where the other ops keep
// theirs, is shared by every op of this package, and a pool gives the same
// effect: no allocation per call once warm.
var decodeTasks = sync.Pool{New: func() any { return new(attentionDecodeTask) }}

// AttentionDecode computes out from q and the first length positions of the
// cache.
func (b *Backend) AttentionDecode(out, q, kCache, vCache kernels.Tensor, length int) {
	d, err := kernels.CheckAttentionDecode(out, q, kCache, vCache, length)
	if err != nil {
		panic(err)
	}
	rows := min(max(1, decodeScoreFloats/length), b.attentionQueryBlock, d.Tq)
	t := decodeTasks.Get().(*attentionDecodeTask)
	*t = attentionDecodeTask{
		backend: b,
		dims:    d,
		scale:   float32(1 / math.Sqrt(float64(d.HS))),
		rows:    rows, blocks: (d.Tq + rows - 1) / rows,
		out: Float32s(out), q: Float32s(q), k: Float32s(kCache), v: Float32s(vCache),
	}
	// Tasks are (b, h, query block), with the last query blocks, which read
	// the most keys, handed out first.
	b.pool.run(t, d.B*d.NH*t.blocks, 1)
	*t = attentionDecodeTask{}
	decodeTasks.Put(t)
}

// attentionDecodeTask computes one block of queries of one head per item.
type attentionDecodeTask struct {
	backend *Backend
	dims    kernels.DecodeDims
	scale   float32
	// rows is the number of queries per block, and blocks the number of
	// blocks per head.
	rows, blocks int
	out, q, k, v []float32
}

func (t *attentionDecodeTask) run(worker, start, end int) {
	for item := start; item < end; item++ {
		block := t.blocks - 1 - item%t.blocks
		head := item / t.blocks % t.dims.NH
		row := item / t.blocks / t.dims.NH
		t.queryBlockDecode(worker, row, head, block)
	}
}

// queryBlockDecode computes queries [i0, i1) of head h in row b.
func (t *attentionDecodeTask) queryBlockDecode(worker, b, h, block int) {
	d := t.dims
	hs := d.HS
	i0 := block * t.rows
	i1 := min(d.Tq, i0+t.rows)
	rows := i1 - i0
	first := d.Length - d.Tq // position of query 0
	keys := first + i1       // the block's last query attends to keys [0, keys)
	g := h / (d.NH / d.NKV)
	ldq, ldkv := d.NH*hs, d.NKV*hs

	qBlock := t.q[(b*d.Tq+i0)*ldq+h*hs:]
	oBlock := t.out[(b*d.Tq+i0)*ldq+h*hs:]
	kRow := t.k[b*d.S*ldkv+g*hs:]
	vRow := t.v[b*d.S*ldkv+g*hs:]
	scores := t.backend.workerScratch(worker, rows*keys)
	Sgemm(false, true, rows, keys, hs, t.scale, qBlock, ldq, kRow, ldkv, 0, scores, keys)

	for r := range rows {
		sRow := scores[r*keys : (r+1)*keys]
		visible := sRow[:first+i0+r+1]
		rowMax := visible[0]
		for _, x := range visible[1:] {
			rowMax = max(rowMax, x)
		}
		var sum float32
		for c, x := range visible {
			p := expf(x - rowMax)
			visible[c] = p
			sum += p
		}
		// sum ≥ 1, because the maximum contributes exp(0).
		inv := 1 / sum
		for c := range visible {
			visible[c] *= inv
		}
		clear(sRow[len(visible):])
	}
	Sgemm(false, false, rows, hs, keys, 1, scores, keys, vRow, ldkv, 0, oBlock, ldq)
}
