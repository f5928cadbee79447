package model

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// generateNewTokens is the length of the generations in these tests: it
// runs the cache of the 24-position golden model from a 6-token prompt to
// its end.
const generateNewTokens = 18

// goldenPrompt returns the first 6 tokens of row 0 of full_unpacked.
func goldenPrompt(t testing.TB) []int32 {
	t.Helper()
	return goldenRow0(t, loadGoldenCase(t, "full_unpacked"))[:6]
}

// generate runs Generate on a new decoder for m with room for the golden
// prompt and generateNewTokens.
func generate(t testing.TB, m *Model, sampling SamplingConfig) *Generation {
	t.Helper()
	prompt := goldenPrompt(t)
	d := newDecoder(t, m, DecoderOptions{MaxLen: len(prompt) + generateNewTokens})
	gen, err := d.Generate(prompt, GenerateConfig{MaxNewTokens: generateNewTokens, Sampling: sampling}, nil)
	require.NoError(t, err)
	require.Len(t, gen.IDs, generateNewTokens)
	return gen
}

// TestGenerateGreedyFollowsArgmax checks that greedy decoding is
// deterministic and that each token is the argmax of the training forward
// pass over the sequence before it.
func TestGenerateGreedyFollowsArgmax(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	m := newGoldenModel(t, newBackend(t), c, nil)
	first := generate(t, m, SamplingConfig{})
	second := generate(t, m, SamplingConfig{})
	assert.Equal(t, first.IDs, second.IDs, "two greedy runs")
	assert.Equal(t, StopLength, first.StopReason)
	assert.Equal(t, 6, first.PromptTokens)

	sequence := slices.Clone(goldenPrompt(t))
	vocab := m.Config().VocabSize
	for i, id := range first.IDs {
		logits, err := m.Logits(sequenceBatch(sequence), 0)
		require.NoError(t, err)
		want, err := argmax(logits[(len(sequence)-1)*vocab:])
		require.NoError(t, err)
		assert.Equal(t, want, id, "new token %d", i)
		sequence = append(sequence, id)
	}
}

// TestGenerateTinyTopPEqualsGreedy checks that a nucleus of one token gives
// the greedy tokens for any seed and temperature.
func TestGenerateTinyTopPEqualsGreedy(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	m := newGoldenModel(t, newBackend(t), c, nil)
	greedy := generate(t, m, SamplingConfig{})
	for _, sampling := range []SamplingConfig{
		{Temperature: 1, TopP: 1e-9, Seed: 1},
		{Temperature: 1, TopP: 1e-9, Seed: 2},
		{Temperature: 5, TopP: 1e-9, Seed: 3},
	} {
		assert.Equal(t, greedy.IDs, generate(t, m, sampling).IDs, "sampling %+v", sampling)
	}
}

// TestGenerateSeededSampling checks that a seed repeats its samples and that
// other seeds give other samples.
func TestGenerateSeededSampling(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	m := newGoldenModel(t, newBackend(t), c, nil)
	greedy := generate(t, m, SamplingConfig{})
	for _, topP := range []float64{1, 0.9} {
		first := generate(t, m, SamplingConfig{Temperature: 1, TopP: topP, Seed: 7})
		again := generate(t, m, SamplingConfig{Temperature: 1, TopP: topP, Seed: 7})
		other := generate(t, m, SamplingConfig{Temperature: 1, TopP: topP, Seed: 8})
		assert.Equal(t, first.IDs, again.IDs, "same seed, top-p %v", topP)
		assert.NotEqual(t, first.IDs, other.IDs, "seeds 7 and 8, top-p %v", topP)
		assert.NotEqual(t, greedy.IDs, first.IDs, "sampling at temperature 1, top-p %v", topP)
	}
}

// TestGenerateStopToken stops on a token that greedy decoding produces and
// checks that it ends the generation.
func TestGenerateStopToken(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	m := newGoldenModel(t, newBackend(t), c, nil)
	greedy := generate(t, m, SamplingConfig{})
	stopAt := 4
	stop := greedy.IDs[stopAt]
	stopAt = slices.Index(greedy.IDs, stop) // its first occurrence

	prompt := goldenPrompt(t)
	d := newDecoder(t, m, DecoderOptions{MaxLen: len(prompt) + generateNewTokens})
	var streamed []int32
	gen, err := d.Generate(prompt, GenerateConfig{MaxNewTokens: generateNewTokens, StopTokens: []int32{stop, -5}},
		func(id int32) error { streamed = append(streamed, id); return nil })
	require.NoError(t, err)
	assert.Equal(t, greedy.IDs[:stopAt+1], gen.IDs, "tokens up to and including the stop token")
	assert.Equal(t, gen.IDs, streamed, "onToken sees every token")
	assert.Equal(t, StopToken, gen.StopReason)
	assert.Equal(t, len(prompt)+stopAt, d.Cache().Len(), "the stop token is not fed back")
}

func TestGenerateCallbackErrorStops(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	m := newGoldenModel(t, newBackend(t), c, nil)
	prompt := goldenPrompt(t)
	d := newDecoder(t, m, DecoderOptions{MaxLen: 24})
	errCanceled := errors.New("canceled")
	calls := 0
	gen, err := d.Generate(prompt, GenerateConfig{MaxNewTokens: 10}, func(int32) error {
		calls++
		if calls == 3 {
			return errCanceled
		}
		return nil
	})
	assert.ErrorIs(t, err, errCanceled)
	require.NotNil(t, gen)
	assert.Len(t, gen.IDs, 3, "tokens before the error")
}

func TestGenerateRejectsInvalidConfig(t *testing.T) {
	c := loadGoldenCase(t, "full_unpacked")
	m := newGoldenModel(t, newBackend(t), c, nil)
	d := newDecoder(t, m, DecoderOptions{MaxLen: 10})
	prompt := []int32{1, 2, 3, 4}

	_, err := d.Generate(nil, GenerateConfig{MaxNewTokens: 1}, nil)
	assert.ErrorContains(t, err, "prompt has no tokens")
	_, err = d.Generate(prompt, GenerateConfig{}, nil)
	assert.ErrorContains(t, err, "MaxNewTokens is 0")
	_, err = d.Generate(prompt, GenerateConfig{MaxNewTokens: 8}, nil)
	assert.ErrorContains(t, err, "need 11 cache positions, but the decoder has 10")
	_, err = d.Generate(prompt, GenerateConfig{MaxNewTokens: 7, Sampling: SamplingConfig{Temperature: -1}}, nil)
	assert.ErrorContains(t, err, "temperature -1")

	gen, err := d.Generate(prompt, GenerateConfig{MaxNewTokens: 7}, nil)
	require.NoError(t, err, "the last token needs no cache position")
	assert.Len(t, gen.IDs, 7)
}

// TestAdapterGenerationEqualsMerged checks that an adapter changes the
// logits, and that merging it into the base weights gives the logits and
// greedy tokens of the model that applies it in its projections.
func TestAdapterGenerationEqualsMerged(t *testing.T) {
	c := loadGoldenCase(t, "lora_all_packed")
	be := newBackend(t)
	prompt := goldenPrompt(t)
	prefill := func(m *Model) []float32 {
		d := newDecoder(t, m, DecoderOptions{MaxLen: len(prompt)})
		logits, err := d.Forward(prompt, true)
		require.NoError(t, err)
		return logits
	}

	adapted := newGoldenModel(t, be, c, nil)
	base := newGoldenModel(t, be, loadGoldenCase(t, "full_unpacked"), nil)
	merged := newGoldenModel(t, be, loadGoldenCase(t, "full_unpacked"), nil)
	scaling := c.lora.Scaling()
	for _, spec := range goldenConfig(t).Adapters(c.lora) {
		if !spec.IsA {
			continue
		}
		loraB := strings.TrimSuffix(spec.Name, "lora_A.weight") + "lora_B.weight"
		require.NoError(t, merged.MergeLoRA(spec.Base, c.adapters[spec.Name], c.adapters[loraB], scaling), spec.Base)
	}

	withAdapter, withoutAdapter, withMerged := prefill(adapted), prefill(base), prefill(merged)
	assert.Greater(t, relativeError(withoutAdapter, withAdapter), 1e-2, "the adapter changes the logits")
	assert.Less(t, relativeError(withMerged, withAdapter), 1e-5, "merged weights against the adapter")

	greedyAdapted := generate(t, adapted, SamplingConfig{})
	assert.NotEqual(t, generate(t, base, SamplingConfig{}).IDs, greedyAdapted.IDs, "the adapter changes the greedy tokens")
	assert.Equal(t, greedyAdapted.IDs, generate(t, merged, SamplingConfig{}).IDs, "merged weights generate what the adapter does")
}

func TestMergeLoRARejectsMismatchedShapes(t *testing.T) {
	m := newGoldenModel(t, newBackend(t), loadGoldenCase(t, "full_unpacked"), nil)
	const weight = "model.layers.0.self_attn.q_proj.weight" // (64, 48)
	a, b := make([]float32, 4*48), make([]float32, 64*4)
	require.NoError(t, m.MergeLoRA(weight, a, b, 2), "zero adapters")

	assert.ErrorContains(t, m.MergeLoRA(weight, a[:47], b, 2), "lora_A has 47 values, want (r, 48)")
	assert.ErrorContains(t, m.MergeLoRA(weight, a, b[:63], 2), "lora_B has 63 values, want (64, 4)")
	assert.ErrorContains(t, m.MergeLoRA("model.norm.weight", a, b, 2), "not a weight matrix")
	assert.ErrorContains(t, m.MergeLoRA("model.layers.0.q_proj.weight", a, b, 2), "model has no tensor")
}

// TestSamplerTopPDistribution draws many tokens from a fixed distribution
// and compares the frequencies with the renormalized nucleus.
func TestSamplerTopPDistribution(t *testing.T) {
	probs := []float64{0.05, 0.5, 0.15, 0.3} // ranked 1, 3, 2, 0
	logits := make([]float32, len(probs))
	for i, p := range probs {
		logits[i] = float32(math.Log(p))
	}
	cases := []struct {
		name        string
		temperature float64
		topP        float64
		want        []float64
	}{
		{"all tokens", 1, 1, probs},
		{"top-p 0 keeps all", 1, 0, probs},
		{"two tokens", 1, 0.75, []float64{0, 0.5 / 0.8, 0, 0.3 / 0.8}},
		{"three tokens", 1, 0.9, []float64{0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95}},
		{"one token", 1, 0.4, []float64{0, 1, 0, 0}},
		{"temperature 2", 2, 1, sqrtNormalized(probs)},
	}
	const draws = 40000
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSampler(SamplingConfig{Temperature: tc.temperature, TopP: tc.topP, Seed: 3})
			require.NoError(t, err)
			counts := make([]int, len(probs))
			for range draws {
				id, err := s.Sample(logits)
				require.NoError(t, err)
				counts[id]++
			}
			for i, p := range tc.want {
				if p == 0 {
					assert.Zero(t, counts[i], "token %d is outside the nucleus", i)
					continue
				}
				// Five standard deviations of a binomial frequency.
				tolerance := 5 * math.Sqrt(p*(1-p)/draws)
				assert.InDelta(t, p, float64(counts[i])/draws, tolerance+1e-9, "frequency of token %d", i)
			}
		})
	}
}

// sqrtNormalized returns p^(1/2) normalized: the distribution of softmax
// at temperature 2 over the logits log p.
func sqrtNormalized(probs []float64) []float64 {
	out := make([]float64, len(probs))
	var sum float64
	for i, p := range probs {
		out[i] = math.Sqrt(p)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

// TestSamplerNucleusOfLargeVocabulary checks the nucleus search against a
// full sort, on vocabularies of Qwen3's size with a long tail, with many
// equal weights and with a uniform distribution, whose nucleus is the
// tokens of the lowest ids.
func TestSamplerNucleusOfLargeVocabulary(t *testing.T) {
	const vocab = 151936
	distributions := []struct {
		name  string
		logit func(i int) float64
	}{
		// A few likely tokens and a long flat tail that holds most of the
		// probability in total.
		{"long tail", func(i int) float64 {
			switch i {
			case 5:
				return 0
			case 77:
				return -0.5
			case 1000:
				return -1
			}
			return -12 + float64(i%97)/97
		}},
		{"1000 distinct weights", func(i int) float64 { return float64(i%1000) / 1000 * 0.3 }},
		{"uniform", func(int) float64 { return 0 }},
		{"random", func(i int) float64 { return float64((i*7919)%10007) / 1000 }},
	}
	for _, dist := range distributions {
		weights := make([]float64, vocab)
		var total float64
		for i := range weights {
			weights[i] = math.Exp(dist.logit(i))
			total += weights[i]
		}
		order := make([]int32, vocab)
		for i := range order {
			order[i] = int32(i)
		}
		slices.SortStableFunc(order, func(a, b int32) int {
			switch {
			case weights[a] > weights[b]:
				return -1
			case weights[a] < weights[b]:
				return 1
			}
			return 0
		})

		for _, topP := range []float64{1e-9, 0.05, 0.5, 0.95} {
			var mass float64
			size := 0
			for size < vocab && mass < topP*total {
				mass += weights[order[size]]
				size++
			}
			want := slices.Clone(order[:size])
			slices.Sort(want)

			s, err := NewSampler(SamplingConfig{Temperature: 1, TopP: topP})
			require.NoError(t, err)
			nucleus, nucleusMass := s.nucleus(slices.Clone(weights), total)
			got := slices.Clone(nucleus)
			slices.Sort(got)
			assert.Equal(t, want, got, "%s: nucleus at top-p %v", dist.name, topP)
			assert.InEpsilon(t, mass, nucleusMass, 1e-9, "%s: nucleus mass at top-p %v", dist.name, topP)
			if dist.name == "uniform" {
				assert.Equal(t, int32(size-1), got[len(got)-1], "%s: equal weights rank by id", dist.name)
			}
		}
	}
}

// BenchmarkSamplerTopPFlat measures one top-p sample from a flat
// distribution over Qwen3's vocabulary, the worst case of the nucleus
// search.
func BenchmarkSamplerTopPFlat(b *testing.B) {
	logits := make([]float32, 151936)
	for i := range logits {
		logits[i] = float32(i%1000) / 1000 * 0.3
	}
	s, err := NewSampler(SamplingConfig{Temperature: 0.8, TopP: 0.9})
	require.NoError(b, err)
	for b.Loop() {
		if _, err := s.Sample(logits); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSamplerGreedyAndInvalidLogits(t *testing.T) {
	s, err := NewSampler(SamplingConfig{})
	require.NoError(t, err)
	id, err := s.Sample([]float32{1, 3, -2, 3})
	require.NoError(t, err)
	assert.Equal(t, int32(1), id, "the first of equal maxima")

	_, err = s.Sample([]float32{1, float32(math.NaN())})
	assert.ErrorContains(t, err, "logit 1 is NaN")
	inf := float32(math.Inf(-1))
	_, err = s.Sample([]float32{inf, inf})
	assert.ErrorContains(t, err, "every logit is −Inf")
	_, err = s.Sample(nil)
	assert.ErrorContains(t, err, "empty logits")

	hot, err := NewSampler(SamplingConfig{Temperature: 1, TopP: 0.5})
	require.NoError(t, err)
	id, err = hot.Sample([]float32{inf, 0, inf})
	require.NoError(t, err)
	assert.Equal(t, int32(1), id, "masked tokens are never drawn")
}

func TestSamplingConfigValidate(t *testing.T) {
	for _, cfg := range []SamplingConfig{
		{Temperature: -0.1},
		{Temperature: math.NaN()},
		{Temperature: math.Inf(1)},
		{Temperature: 1, TopP: -0.1},
		{Temperature: 1, TopP: 1.5},
		{Temperature: 1, TopP: math.NaN()},
	} {
		assert.Error(t, cfg.Validate(), "%+v", cfg)
	}
	for _, cfg := range []SamplingConfig{{}, {Temperature: 0.7, TopP: 0.8}, {Temperature: 2, TopP: 1}} {
		assert.NoError(t, cfg.Validate(), "%+v", cfg)
	}
}
