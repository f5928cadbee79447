package model

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
)

// trainSteps runs steps AdamW updates on batch with a constant learning rate
// and returns the mean loss before each update.
func trainSteps(t *testing.T, m *Model, opt *AdamW, batch *data.Batch, steps int, lr float64) []float64 {
	t.Helper()
	var losses []float64
	for range steps {
		m.ZeroGrad()
		lossSum, count, err := m.ForwardBackward(batch, 1/float32(batch.TargetTokens), nil)
		require.NoError(t, err)
		losses = append(losses, lossSum/float64(count))
		m.ClipGradNorm(1)
		require.NoError(t, opt.Step(lr))
	}
	return losses
}

func TestAdamWLowersLoss(t *testing.T) {
	c := loadGoldenCase(t, "full_packed")
	lora := LoRAConfig{Rank: 8, Alpha: 16, TargetModules: ProjectionModules()}
	cases := []struct {
		name string
		opts Options
		// maxRatio bounds the last loss as a fraction of the first.
		maxRatio float64
	}{
		{"full", Options{}, 0.1},
		{"lora", Options{Mode: ModeLoRA, LoRA: lora}, 0.1},
		{"lora bf16 checkpointing", Options{Mode: ModeLoRA, LoRA: lora, FrozenBF16: true, Checkpointing: true}, 0.1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newFullModel(t, tc.opts)
			require.NoError(t, m.InitRandom(11))
			if tc.opts.Mode == ModeLoRA {
				// A random base with std 0.02 gives LoRA too little to adapt,
				// so adapt the golden weights instead.
				require.NoError(t, m.LoadBase(goldenDir))
			}
			opt, err := NewAdamW(m, DefaultAdamW())
			require.NoError(t, err)
			defer opt.Close()

			losses := trainSteps(t, m, opt, c.batch, 30, 1e-2)
			first, last := losses[0], losses[len(losses)-1]
			t.Logf("mean loss %.3f before the first update, %.3f before the last", first, last)
			if tc.opts.Mode == ModeFull {
				assert.InDelta(t, math.Log(250), first, 0.05, "a new model predicts about uniformly over the 250 tokens")
			} else {
				assert.InEpsilon(t, c.loss, first, 1e-3, "a new adapter leaves the golden model's loss unchanged")
			}
			assert.Less(t, last, tc.maxRatio*first, "losses %v", losses)
			assert.Equal(t, 30, opt.StepCount())
		})
	}
}

// TestAdamWWeightDecay checks that with zero gradients an update only decays
// the tensors with Decay set, by the factor 1 − lr·weight_decay.
func TestAdamWWeightDecay(t *testing.T) {
	m := newFullModel(t, Options{})
	require.NoError(t, m.InitRandom(5))
	before := readAll(t, m)
	opt, err := NewAdamW(m, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.5})
	require.NoError(t, err)
	defer opt.Close()

	const lr = 0.1
	require.NoError(t, opt.Step(lr))
	after := readAll(t, m)
	for _, p := range m.Trainable() {
		factor := float32(1)
		if p.Decay {
			factor = 1 - lr*0.5
		}
		for i, v := range before[p.Name] {
			if !assert.InDelta(t, v*factor, after[p.Name][i], 1e-7, "%s[%d], decay %t", p.Name, i, p.Decay) {
				break
			}
		}
	}
	assert.ErrorContains(t, opt.Step(math.NaN()), "learning rate NaN")
	assert.Equal(t, 1, opt.StepCount(), "a rejected step changes nothing")
}

// TestAdamWResumeExact saves the weights and the optimizer state after two
// steps and checks that a restored run takes the same next two steps, bit for
// bit.
func TestAdamWResumeExact(t *testing.T) {
	c := loadGoldenCase(t, "full_packed")
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	m := newFullModel(t, Options{})
	require.NoError(t, m.InitRandom(1))
	opt, err := NewAdamW(m, cfg)
	require.NoError(t, err)
	defer opt.Close()
	trainSteps(t, m, opt, c.batch, 2, 1e-2)

	dir := t.TempDir()
	statePath := filepath.Join(dir, "optimizer.safetensors")
	require.NoError(t, m.SaveBase(dir))
	require.NoError(t, opt.SaveState(statePath))
	wantLosses := trainSteps(t, m, opt, c.batch, 2, 1e-2)
	want := readAll(t, m)

	resumed := newFullModel(t, Options{})
	require.NoError(t, resumed.LoadBase(dir))
	resumedOpt, err := NewAdamW(resumed, cfg)
	require.NoError(t, err)
	defer resumedOpt.Close()
	require.NoError(t, resumedOpt.LoadState(statePath))
	assert.Equal(t, 2, resumedOpt.StepCount())
	gotLosses := trainSteps(t, resumed, resumedOpt, c.batch, 2, 1e-2)

	assert.Equal(t, wantLosses, gotLosses)
	assert.Equal(t, want, readAll(t, resumed))
	assert.Equal(t, 4, resumedOpt.StepCount())
}

func TestLoadStateRejects(t *testing.T) {
	m := newFullModel(t, Options{})
	opt, err := NewAdamW(m, DefaultAdamW())
	require.NoError(t, err)
	defer opt.Close()
	path := filepath.Join(t.TempDir(), "optimizer.safetensors")
	require.NoError(t, opt.SaveState(path))

	other := DefaultAdamW()
	other.Beta2 = 0.95
	otherOpt, err := NewAdamW(m, other)
	require.NoError(t, err)
	defer otherOpt.Close()
	assert.ErrorContains(t, otherOpt.LoadState(path), "saved with beta2 0.999, but this optimizer has 0.95")

	lora := newFullModel(t, Options{Mode: ModeLoRA, LoRA: DefaultLoRA()})
	loraOpt, err := NewAdamW(lora, DefaultAdamW())
	require.NoError(t, err)
	defer loraOpt.Close()
	assert.ErrorContains(t, loraOpt.LoadState(path), "matches no trainable tensor")

	loraPath := filepath.Join(t.TempDir(), "lora.safetensors")
	require.NoError(t, loraOpt.SaveState(loraPath))
	wider := newFullModel(t, Options{Mode: ModeLoRA, LoRA: LoRAConfig{Rank: 8, Alpha: 16, TargetModules: ProjectionModules()}})
	widerOpt, err := NewAdamW(wider, DefaultAdamW())
	require.NoError(t, err)
	defer widerOpt.Close()
	assert.ErrorContains(t, widerOpt.LoadState(loraPath), `missing tensor "exp_avg.base_model.model.model.layers.0.mlp.down_proj.lora_A.weight" and 23 more`)

	assert.ErrorContains(t, opt.LoadState(filepath.Join(goldenDir, "model.safetensors")), "not an optimizer state")
}

func TestClipGradNorm(t *testing.T) {
	c := loadGoldenCase(t, "full_packed")
	m := newGoldenModel(t, newBackend(t), c, nil)
	_, _, err := m.ForwardBackward(c.batch, 1/float32(c.targetCount), nil)
	require.NoError(t, err)

	var sumSquares float64
	for _, g := range c.grads {
		for _, v := range g {
			sumSquares += float64(v) * float64(v)
		}
	}
	norm := m.GradNorm()
	assert.InEpsilon(t, math.Sqrt(sumSquares), norm, 1e-4, "global norm of the PyTorch gradients")

	assert.Equal(t, norm, m.ClipGradNorm(2*norm), "the returned norm is the norm before clipping")
	assert.Equal(t, norm, m.GradNorm(), "a norm below maxNorm leaves the gradients unchanged")
	assert.Equal(t, norm, m.ClipGradNorm(norm/4))
	assert.InEpsilon(t, norm/4, m.GradNorm(), 1e-5)
}

func TestScheduleLR(t *testing.T) {
	s := Schedule{PeakLR: 1e-3, WarmupSteps: 10, TotalSteps: 110, MinLRRatio: 0.1}
	require.NoError(t, s.Validate())
	cases := []struct {
		step int
		want float64
	}{
		{0, 0},
		{1, 1e-4},
		{5, 5e-4},
		{10, 1e-3},
		{60, 1e-3 * (0.1 + 0.9*0.5)},
		{110, 1e-4},
		{500, 1e-4},
	}
	for _, c := range cases {
		assert.InDelta(t, c.want, s.LR(c.step), 1e-12, "step %d", c.step)
	}
	assert.Less(t, s.LR(61), s.LR(60), "the rate decreases after warmup")

	constant := Schedule{PeakLR: 2e-4, WarmupSteps: 0}
	assert.Equal(t, 2e-4, constant.LR(1))
	assert.Equal(t, 2e-4, constant.LR(1000))
}

func TestScheduleValidate(t *testing.T) {
	cases := []struct {
		schedule Schedule
		want     string
	}{
		{Schedule{PeakLR: -1}, "peak learning rate -1"},
		{Schedule{PeakLR: 1, WarmupSteps: -1}, "warmup steps -1"},
		{Schedule{PeakLR: 1, WarmupSteps: 10, TotalSteps: 5}, "total steps 5"},
		{Schedule{PeakLR: 1, MinLRRatio: 1.5}, "ratio 1.5"},
	}
	for _, c := range cases {
		assert.ErrorContains(t, c.schedule.Validate(), c.want)
	}
}
