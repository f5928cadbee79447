package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Text generation on a Decoder: a prefill of the prompt, then one decoding
// step per new token, each drawn from the last logits by a Sampler.

// SamplingConfig selects how a token is drawn from the logits.
type SamplingConfig struct {
	// Temperature divides the logits before the softmax, ≥ 0. 0 selects
	// greedy decoding: the token of the largest logit, the lowest id among
	// equal ones.
	Temperature float64
	// TopP keeps the smallest set of most likely tokens whose probabilities
	// sum to at least TopP and draws from them, as transformers'
	// TopPLogitsWarper does (nucleus sampling). It is in [0, 1], where 0 and
	// 1 both keep every token, and greedy decoding ignores it. A tiny TopP
	// keeps only the most likely token, which greedy decoding also picks.
	TopP float64
	// Seed seeds the PCG generator that draws the samples, so a seed repeats
	// its samples for the same logits.
	Seed uint64
}

// Validate checks the ranges.
func (s SamplingConfig) Validate() error {
	if !(s.Temperature >= 0) || math.IsInf(s.Temperature, 1) {
		return fmt.Errorf("invalid sampling temperature %v: want a finite value ≥ 0 (0 selects greedy decoding)", s.Temperature)
	}
	if !(s.TopP >= 0 && s.TopP <= 1) {
		return fmt.Errorf("invalid top-p %v: want a value in [0, 1], where 0 and 1 keep every token", s.TopP)
	}
	return nil
}

// Sampler draws tokens from logits. It keeps its random generator and
// scratch memory between calls and is not safe for concurrent use.
type Sampler struct {
	cfg        SamplingConfig
	rng        *rand.Rand
	weights    []float64 // unnormalized probabilities, V long
	candidates []int32   // token ids of the top-p candidates
}

// samplerStream is the PCG stream of every Sampler. Seed selects the state.
const samplerStream = 0x72696e6774756e65 // "ringtune"

// NewSampler returns a sampler for cfg.
func NewSampler(cfg SamplingConfig) (*Sampler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Sampler{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, samplerStream))}, nil
}

// Sample returns the id of the token drawn from logits, (V). It fails when
// a logit is NaN or every logit is −Inf.
func (s *Sampler) Sample(logits []float32) (int32, error) {
	best, err := argmax(logits)
	if err != nil || s.cfg.Temperature == 0 {
		return best, err
	}

	// Softmax weights exp((logit − max)/T) in float64. The most likely
	// token has weight 1, so the sum is at least 1.
	if cap(s.weights) < len(logits) {
		s.weights = make([]float64, len(logits))
	}
	weights := s.weights[:len(logits)]
	maxLogit := float64(logits[best])
	var total float64
	for i, x := range logits {
		w := math.Exp((float64(x) - maxLogit) / s.cfg.Temperature)
		weights[i] = w
		total += w
	}
	if s.cfg.TopP == 0 || s.cfg.TopP == 1 {
		return s.draw(weights, nil, total), nil
	}
	nucleus, mass := s.nucleus(weights, total)
	return s.draw(weights, nucleus, mass), nil
}

// argmax returns the index of the largest value, the first of equal ones.
func argmax(logits []float32) (int32, error) {
	if len(logits) == 0 {
		return 0, errors.New("sampling from empty logits")
	}
	best := 0
	for i, x := range logits {
		if x != x {
			return 0, fmt.Errorf("logit %d is NaN: the forward pass overflowed or a weight is NaN", i)
		}
		if x > logits[best] {
			best = i
		}
	}
	if math.IsInf(float64(logits[best]), -1) {
		return 0, errors.New("every logit is −Inf: no token can be sampled")
	}
	return int32(best), nil
}

// nucleus returns the top-p tokens and their total weight. Tokens rank by
// weight, and equal weights by id. A token belongs to the nucleus when the
// tokens ranked above it hold less than TopP·total, so the most likely token
// always does. The nucleus comes in no particular order, but the same weights
// always give the same order.
//
// Sorting all V = 151,936 weights of a flat distribution took about 23 ms
// per token on one core of a Xeon, more than a small model's decoding step.
// So the nucleus is found as quickselect finds an order statistic, in
// expected O(V): partition the undecided tokens around a pivot weight into
// heavier, equal and lighter ones, then accept, reject or recurse into each
// part by its mass.
func (s *Sampler) nucleus(weights []float64, total float64) ([]int32, float64) {
	target := s.cfg.TopP * total
	ids := s.candidates[:0]
	for i, w := range weights {
		if w > 0 {
			ids = append(ids, int32(i))
		}
	}
	s.candidates = ids

	// ids[:accepted] are in the nucleus and hold mass < target in total.
	// ids[accepted:end] are undecided, and ids[end:] are out of it.
	accepted, end := 0, len(ids)
	var mass float64
	for accepted < end {
		undecided := ids[accepted:end]
		pivot := medianOfThree(weights[undecided[0]], weights[undecided[len(undecided)/2]], weights[undecided[len(undecided)-1]])
		heavier, equal, heavierMass, equalMass := partitionByWeight(undecided, weights, pivot)
		switch {
		case mass+heavierMass >= target:
			// The heavier tokens reach the target, so the nucleus ends among
			// them. heavier ≥ 1 here, because mass < target.
			end = accepted + heavier
		case mass+heavierMass+equalMass >= target:
			// The nucleus ends among the tokens of the pivot's weight, which
			// rank by id.
			mass += heavierMass
			accepted += heavier
			ties := ids[accepted : accepted+equal]
			slices.Sort(ties)
			for _, id := range ties {
				if mass >= target {
					break
				}
				mass += weights[id]
				accepted++
			}
			return ids[:accepted], mass
		default:
			mass += heavierMass + equalMass
			accepted += heavier + equal
		}
	}
	// Only float64 rounding between the sums reaches this point.
	return ids[:accepted], mass
}

// partitionByWeight reorders ids into those heavier than pivot, those of
// weight pivot and the lighter ones, and returns the counts and masses of
// the first two groups.
func partitionByWeight(ids []int32, weights []float64, pivot float64) (heavier, equal int, heavierMass, equalMass float64) {
	lo, mid, hi := 0, 0, len(ids)
	for mid < hi {
		w := weights[ids[mid]]
		switch {
		case w > pivot:
			ids[lo], ids[mid] = ids[mid], ids[lo]
			lo++
			mid++
			heavierMass += w
		case w < pivot:
			hi--
			ids[mid], ids[hi] = ids[hi], ids[mid]
		default:
			mid++
			equalMass += w
		}
	}
	return lo, mid - lo, heavierMass, equalMass
}

func medianOfThree(a, b, c float64) float64 {
	return max(min(a, b), min(max(a, b), c))
}

// draw returns a token with probability weight/mass, over the tokens of
// nucleus or, when it is nil, over every token.
func (s *Sampler) draw(weights []float64, nucleus []int32, mass float64) int32 {
	u := s.rng.Float64() * mass
	if nucleus == nil {
		for i, w := range weights {
			if u < w {
				return int32(i)
			}
			u -= w
		}
		// Rounding in the running difference can leave u ≥ the weights
		// left, and then the last token that has weight takes it.
		for i := len(weights) - 1; i > 0; i-- {
			if weights[i] > 0 {
				return int32(i)
			}
		}
		return 0
	}
	for _, id := range nucleus {
		if u < weights[id] {
			return id
		}
		u -= weights[id]
	}
	return nucleus[len(nucleus)-1]
}

// GenerateConfig configures Decoder.Generate.
type GenerateConfig struct {
	// MaxNewTokens is the largest number of tokens to generate, ≥ 1, a stop
	// token included.
	MaxNewTokens int
	// StopTokens end the generation when sampled, such as the tokenizer's
	// EOS, <|im_end|> and <|endoftext|>. The stop token is the last of
	// Generation.IDs.
	StopTokens []int32
	Sampling   SamplingConfig
}

// StopReason is the condition that ended a generation.
type StopReason string

const (
	// StopToken means a token of GenerateConfig.StopTokens was sampled.
	StopToken StopReason = "stop"
	// StopLength means GenerateConfig.MaxNewTokens tokens were generated.
	StopLength StopReason = "length"
)

// Generation is the result of Decoder.Generate.
type Generation struct {
	// IDs are the new tokens, ending with the stop token when StopReason is
	// StopToken.
	IDs          []int32
	PromptTokens int
	StopReason   StopReason
	// PrefillTime is the time of the forward pass over the prompt, and
	// DecodeTime the time of the rest: sampling every new token and the
	// forward pass of each but the last.
	PrefillTime, DecodeTime time.Duration
}

// Generate resets the cache, runs the prompt through the model and samples
// up to cfg.MaxNewTokens tokens, each fed back as the next input. It calls
// onToken, when not nil, with each new token as soon as it is sampled, the
// stop token included. An error from onToken ends the generation and is
// returned with the tokens so far.
//
// The cache needs len(prompt) + MaxNewTokens − 1 positions, because the last
// token is not fed back.
func (d *Decoder) Generate(prompt []int32, cfg GenerateConfig, onToken func(id int32) error) (*Generation, error) {
	if len(prompt) == 0 {
		return nil, errors.New("generate: the prompt has no tokens")
	}
	if cfg.MaxNewTokens < 1 {
		return nil, fmt.Errorf("generate: MaxNewTokens is %d, want at least 1", cfg.MaxNewTokens)
	}
	if need := len(prompt) + cfg.MaxNewTokens - 1; need > d.cache.maxLen {
		return nil, fmt.Errorf("generate: a prompt of %d tokens and up to %d new tokens need %d cache positions, but the decoder has %d (DecoderOptions.MaxLen)",
			len(prompt), cfg.MaxNewTokens, need, d.cache.maxLen)
	}
	sampler, err := NewSampler(cfg.Sampling)
	if err != nil {
		return nil, err
	}
	stop := map[int32]bool{}
	for _, id := range cfg.StopTokens {
		stop[id] = true
	}

	d.cache.Reset()
	gen := &Generation{PromptTokens: len(prompt), StopReason: StopLength}
	start := time.Now()
	logits, err := d.Forward(prompt, false)
	if err != nil {
		return nil, err
	}
	gen.PrefillTime = time.Since(start)
	start = time.Now()
	defer func() { gen.DecodeTime = time.Since(start) }()

	next := make([]int32, 1) // the input of a decoding step
	for len(gen.IDs) < cfg.MaxNewTokens {
		id, err := sampler.Sample(logits)
		if err != nil {
			return gen, fmt.Errorf("generate: new token %d: %w", len(gen.IDs), err)
		}
		gen.IDs = append(gen.IDs, id)
		if onToken != nil {
			if err := onToken(id); err != nil {
				return gen, err
			}
		}
		if stop[id] {
			gen.StopReason = StopToken
			break
		}
		if len(gen.IDs) == cfg.MaxNewTokens {
			break
		}
		next[0] = id
		if logits, err = d.Forward(next, false); err != nil {
			return gen, err
		}
	}
	return gen, nil
}

// MergeLoRA adds scaling·B·A to the named base weight W, (out, in), with
// loraA (r, in) and loraB (out, r) in row-major order, as PEFT's
// merge_and_unload does. Each element is computed in float64 and rounded
// once, so a model with merged weights generates what the model with the
// adapter does, up to float32 rounding. It works in either mode, and a
// weight stored in BF16 is rounded to it.
func (m *Model) MergeLoRA(weight string, loraA, loraB []float32, scaling float64) error {
	e, err := m.lookup(weight)
	if err != nil {
		return err
	}
	if e.adapter || len(e.shape) != 2 {
		return fmt.Errorf("MergeLoRA: %q is not a weight matrix of the base model", weight)
	}
	out, in := e.shape[0], e.shape[1]
	if len(loraA) == 0 || len(loraA)%in != 0 {
		return fmt.Errorf("MergeLoRA %q: lora_A has %d values, want (r, %d) for r ≥ 1", weight, len(loraA), in)
	}
	rank := len(loraA) / in
	if len(loraB) != out*rank {
		return fmt.Errorf("MergeLoRA %q: lora_B has %d values, want (%d, %d) to match lora_A's rank %d", weight, len(loraB), out, rank, rank)
	}
	values, err := m.readValue(e.value)
	if err != nil {
		return err
	}
	for i := range out {
		bRow := loraB[i*rank : (i+1)*rank]
		for j := range in {
			var delta float64
			for k, b := range bRow {
				delta += float64(b) * float64(loraA[k*in+j])
			}
			values[i*in+j] = float32(float64(values[i*in+j]) + scaling*delta)
		}
	}
	return m.SetTensor(weight, values)
}
