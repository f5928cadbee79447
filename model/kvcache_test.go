package model

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
)

// newDecoder returns a decoder for m that Close releases when the test ends.
func newDecoder(t testing.TB, m *Model, opts DecoderOptions) *Decoder {
	t.Helper()
	d, err := NewDecoder(m, opts)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

// sequenceBatch returns ids as a batch of one row at positions 0, 1, ...,
// with no targets, for Model.Logits.
func sequenceBatch(ids []int32) *data.Batch {
	n := len(ids)
	batch := &data.Batch{
		Size: 1, SeqLen: n, Tokens: n,
		IDs:       ids,
		Targets:   make([]int32, n),
		Positions: make([]int32, n),
		Starts:    [][]int32{{0}},
	}
	for i := range n {
		batch.Targets[i] = kernels.IgnoreIndex
		batch.Positions[i] = int32(i)
	}
	return batch
}

// goldenRow0 returns the ids of row 0 of an unpacked case, one example at
// positions 0 to T−1.
func goldenRow0(t testing.TB, c *goldenCase) []int32 {
	t.Helper()
	T := c.batch.SeqLen
	require.Equal(t, []int32{0}, c.batch.Starts[0], "row 0 holds one example")
	for i, p := range c.batch.Positions[:T] {
		require.Equal(t, int32(i), p, "position of token %d", i)
	}
	return c.batch.IDs[:T]
}

// TestDecoderPrefillMatchesGolden checks the logits of every prompt position
// against the PyTorch fixtures, in one chunk and in chunks that do not divide
// the prompt.
func TestDecoderPrefillMatchesGolden(t *testing.T) {
	for _, name := range []string{"full_unpacked", "lora_unpacked"} {
		c := loadGoldenCase(t, name)
		ids := goldenRow0(t, c)
		for _, chunk := range []int{0, 1, 5, len(ids)} {
			t.Run(fmt.Sprintf("%s/chunk=%d", name, chunk), func(t *testing.T) {
				m := newGoldenModel(t, newBackend(t), c, nil)
				d := newDecoder(t, m, DecoderOptions{MaxLen: len(ids), MaxChunk: chunk})
				logits, err := d.Forward(ids, true)
				require.NoError(t, err)
				assert.Less(t, relativeError(logits, c.logitsRow0), goldenTolerance, "logits against PyTorch")
				assert.Equal(t, len(ids), d.Cache().Len(), "cached positions")

				training, err := m.Logits(c.batch, 0)
				require.NoError(t, err)
				assert.Less(t, relativeError(logits, training), 1e-5, "logits against the training forward pass")
			})
		}
	}
}

// TestDecoderStepsMatchFullForward decodes a sequence one token at a time
// after a short prompt and compares each step's logits with the training
// forward pass over the whole sequence so far.
func TestDecoderStepsMatchFullForward(t *testing.T) {
	ids := goldenRow0(t, loadGoldenCase(t, "full_unpacked"))
	cases := []struct {
		name, goldenCase string
		adjust           func(*Options)
	}{
		{"full", "full_unpacked", nil},
		{"lora", "lora_all_packed", nil},
		{"lora bf16", "lora_all_packed", func(o *Options) { o.FrozenBF16 = true }},
	}
	const promptLen = 4
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newGoldenModel(t, newBackend(t), loadGoldenCase(t, tc.goldenCase), tc.adjust)
			d := newDecoder(t, m, DecoderOptions{MaxLen: len(ids)})

			logits, err := d.Forward(ids[:promptLen], false)
			require.NoError(t, err)
			for n := promptLen; ; n++ {
				full, err := m.Logits(sequenceBatch(ids[:n]), 0)
				require.NoError(t, err)
				want := full[(n-1)*m.Config().VocabSize:]
				assert.Less(t, relativeError(logits, want), 1e-4, "logits after %d tokens", n)
				if n == len(ids) {
					break
				}
				logits, err = d.Forward(ids[n:n+1], false)
				require.NoError(t, err)
				assert.Equal(t, n+1, d.Cache().Len())
			}
		})
	}
}

// TestKVCacheTruncate checks that a sequence continued from a truncated
// cache computes what it computed from the same prefix before.
func TestKVCacheTruncate(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	ids := goldenRow0(t, c)
	m := newGoldenModel(t, newBackend(t), c, nil)
	d := newDecoder(t, m, DecoderOptions{MaxLen: len(ids), MaxChunk: 4})

	_, err := d.Forward(ids[:10], false)
	require.NoError(t, err)
	first, err := d.Forward(ids[10:15], true)
	require.NoError(t, err)
	_, err = d.Forward(ids[15:], false)
	require.NoError(t, err)

	require.NoError(t, d.Cache().Truncate(10))
	assert.Equal(t, 10, d.Cache().Len())
	again, err := d.Forward(ids[10:15], true)
	require.NoError(t, err)
	assert.Equal(t, first, again)

	assert.ErrorContains(t, d.Cache().Truncate(16), "cannot truncate a KV cache of 15 positions to 16")
	assert.Error(t, d.Cache().Truncate(-1))
	d.Cache().Reset()
	assert.Equal(t, 0, d.Cache().Len())
}

func TestDecoderRejectsInvalidInput(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	m := newGoldenModel(t, newBackend(t), c, nil)
	d := newDecoder(t, m, DecoderOptions{MaxLen: 8})
	_, err := d.Forward([]int32{1, 2, 3}, false)
	require.NoError(t, err)

	_, err = d.Forward(nil, false)
	assert.ErrorContains(t, err, "no token ids")
	_, err = d.Forward([]int32{4, 250}, false)
	assert.ErrorContains(t, err, "token 1 has id 250, outside the vocabulary [0, 250)")
	_, err = d.Forward([]int32{-1}, false)
	assert.ErrorContains(t, err, "id -1")
	_, err = d.Forward(make([]int32, 6), false)
	assert.ErrorContains(t, err, "6 new tokens do not fit the KV cache, which has 3 of 8 positions filled")
	assert.Equal(t, 3, d.Cache().Len(), "a rejected call leaves the cache unchanged")

	_, err = NewDecoder(m, DecoderOptions{})
	assert.ErrorContains(t, err, "MaxLen 0 must be positive")
	_, err = NewDecoder(m, DecoderOptions{MaxLen: 4, MaxChunk: -1})
	assert.ErrorContains(t, err, "MaxChunk -1")
}

// TestDecoderStepAllocatesNothing checks that a decoding step allocates
// nothing once the backend's scratch memory has grown.
func TestDecoderStepAllocatesNothing(t *testing.T) {
	if raceDetectorOn {
		t.Skip("the race detector's instrumentation allocates")
	}
	c := loadGoldenCase(t, "lora_all_packed")
	m := newGoldenModel(t, newBackend(t), c, nil)
	const steps = 40
	d := newDecoder(t, m, DecoderOptions{MaxLen: steps})
	token := []int32{7}
	step := func() {
		if d.Cache().Len() == steps {
			d.Cache().Reset()
		}
		if _, err := d.Forward(token, false); err != nil {
			panic(err)
		}
	}
	runtime.GC()
	for range steps {
		step()
	}
	assert.Zero(t, testing.AllocsPerRun(20, step), "allocations per decoding step")
}

// BenchmarkDecoderStep measures one decoding step of the tiny preset
// (vocabulary 151,936, 4 layers of width 256) after a 128-token prompt, with
// the cache up to 512 positions. The head's (1, 256)·(256, 151936) product
// dominates at this size.
func BenchmarkDecoderStep(b *testing.B) {
	cfg, err := Preset("tiny")
	require.NoError(b, err)
	m, err := New(newBackend(b), cfg, Options{MaxBatch: 1, MaxSeq: 1})
	require.NoError(b, err)
	defer m.Close()
	require.NoError(b, m.InitRandom(1))
	const promptLen, maxLen = 128, 512
	d := newDecoder(b, m, DecoderOptions{MaxLen: maxLen})
	prompt := make([]int32, promptLen)
	for i := range prompt {
		prompt[i] = int32(i * 997 % cfg.VocabSize)
	}
	token := []int32{42}

	b.ResetTimer()
	for b.Loop() {
		if d.Cache().Len() == 0 || d.Cache().Len() == maxLen {
			b.StopTimer()
			d.Cache().Reset()
			_, err := d.Forward(prompt, false)
			require.NoError(b, err)
			b.StartTimer()
		}
		if _, err := d.Forward(token, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}
