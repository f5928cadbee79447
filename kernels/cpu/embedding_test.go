package cpu_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cpu"
)

func TestEmbeddingForwardGathersRows(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(51, 52))
	const vocab, channels = 11, 6
	tableHost := randomValues(rng, vocab*channels, 1)
	ids := []int32{3, 0, 10, 3, 7, 7}
	want := make([]float32, 0, len(ids)*channels)
	for _, id := range ids {
		want = append(want, tableHost[int(id)*channels:(int(id)+1)*channels]...)
	}

	out := newF32(t, be, nil, 2, 3, channels)
	be.EmbeddingForward(out, newF32(t, be, tableHost, vocab, channels), newI32(t, be, ids, 2, 3))
	require.Equal(t, want, toHost(t, be, out))

	// A BF16 table gives its values widened exactly.
	bf16 := toBF16(tableHost)
	be.EmbeddingForward(out, newBF16(t, be, bf16, vocab, channels), newI32(t, be, ids, 2, 3))
	widened := fromBF16(bf16)
	for n, id := range ids {
		require.Equal(t, widened[int(id)*channels:(int(id)+1)*channels], toHost(t, be, out)[n*channels:(n+1)*channels], "row %d", n)
	}
}

func TestEmbeddingBackwardScatterAdds(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	rng := rand.New(rand.NewPCG(53, 54))
	// 130 columns span three column blocks of 64.
	const vocab, channels = 9, 130
	ids := []int32{2, 5, 2, 8, 2, 0, 5}
	tableHost := randomValues(rng, vocab*channels, 1)
	rHost := randomValues(rng, len(ids)*channels, 1)
	initial := randomValues(rng, vocab*channels, 1)
	dTable := newF32(t, be, initial, vocab, channels)
	be.EmbeddingBackward(dTable, newF32(t, be, rHost, len(ids), channels), newI32(t, be, ids, len(ids)))

	// The loss Σ out·r with out[n] = table[ids[n]] has the gradient
	// dTable[v] = Σ_{n: ids[n] = v} r[n], added to the initial values.
	got := toHost(t, be, dTable)
	for i := range got {
		got[i] -= initial[i]
	}
	table64, r64 := widen(tableHost), widen(rHost)
	loss := func() float64 {
		var s float64
		for n, id := range ids {
			s += dot64(table64[int(id)*channels:(int(id)+1)*channels], r64[n*channels:(n+1)*channels])
		}
		return s
	}
	checkGradient(t, "table", table64, got, loss, rng)

	want := make([]float64, vocab*channels)
	for n, id := range ids {
		for c := range channels {
			want[int(id)*channels+c] += r64[n*channels+c]
		}
	}
	// Tolerance 1e-6: sums of at most three float32 values plus the initial
	// value, which the subtraction above rounds once more.
	requireClose(t, "dTable", got, want, 1e-6, 1e-6)
}

func TestEmbeddingRejectsOutOfRangeID(t *testing.T) {
	be := newBackend(t, cpu.Options{})
	table := newF32(t, be, nil, 4, 2)
	requirePanicsWith(t, func() {
		be.EmbeddingForward(newF32(t, be, nil, 2, 2), table, newI32(t, be, []int32{1, 4}, 2))
	}, "EmbeddingForward", "id 4 at index 1", "4 rows")
}
