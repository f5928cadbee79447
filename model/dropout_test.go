package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
)

// projectionOf returns projection module of decoder layer l.
func projectionOf(t testing.TB, m *Model, l int, module string) *projection {
	t.Helper()
	for _, p := range m.layers[l].projections() {
		if p.module == module {
			return p
		}
	}
	t.Fatalf("no projection %q", module)
	return nil
}

// projectionNames returns the names of the weight, lora_A and lora_B of p.
func projectionNames(p *projection) (weight, loraA, loraB string) {
	prefix := fmt.Sprintf("model.layers.%d.%s.%s", p.layer, p.group, p.module)
	return prefix + ".weight", "base_model.model." + prefix + ".lora_A.weight", "base_model.model." + prefix + ".lora_B.weight"
}

// projectionResult is what one linearForward and linearBackward call produce.
type projectionResult struct {
	y, dx, dA, dB []float32
}

// runProjection runs linearForward and linearBackward of p on host inputs x,
// (B, T, in), and dy, (B, T, out), at the model's bound batch shape, with
// zeroed gradients.
func runProjection(t testing.TB, m *Model, p *projection, x, dy []float32) projectionResult {
	t.Helper()
	be := m.backend
	batchSize, seqLen := m.acts.batchSize, m.acts.seqLen
	out, in := p.weight.shape[0], p.weight.shape[1]
	alloc := func(width int) kernels.Tensor {
		tensor, err := kernels.AllocTensor(be, kernels.F32, batchSize, seqLen, width)
		require.NoError(t, err)
		return tensor
	}
	xT, yT, dyT, dxT, hidden := alloc(in), alloc(out), alloc(out), alloc(in), alloc(m.opts.LoRA.Rank)
	require.NoError(t, be.CopyFromHostF32(xT, x))
	require.NoError(t, be.CopyFromHostF32(dyT, dy))
	m.ZeroGrad()

	m.linearForward(p, yT, xT, hidden)
	m.linearBackward(p, dxT, dyT, xT, hidden, false)

	var r projectionResult
	r.y = make([]float32, yT.Len())
	require.NoError(t, be.CopyToHostF32(r.y, yT))
	r.dx = make([]float32, dxT.Len())
	require.NoError(t, be.CopyToHostF32(r.dx, dxT))
	_, nameA, nameB := projectionNames(p)
	var err error
	r.dA, err = m.ReadGrad(nameA)
	require.NoError(t, err)
	r.dB, err = m.ReadGrad(nameB)
	require.NoError(t, err)
	return r
}

func randomFloats(rng *rand.Rand, n int, scale float64) []float32 {
	values := make([]float32, n)
	for i := range values {
		values[i] = float32(rng.NormFloat64() * scale)
	}
	return values
}

// TestDropoutProjectionExact checks one adapted projection with dropout
// against the same projection without dropout, run on the input that the
// test masks and scales itself. W is zero, so y and dx hold only the
// adapter's terms, and every product of the two runs has the same operands.
// y, dA and dB must therefore match bit for bit, and dx must equal
// mask ⊙ dx_ref·(1/(1−p)) rounded to float32 once.
func TestDropoutProjectionExact(t *testing.T) {
	const p = 0.3
	const batchSize, seqLen = 2, 8
	lora := LoRAConfig{Rank: 4, Alpha: 8, Dropout: p, TargetModules: ProjectionModules()}
	dropModel := newFullModel(t, Options{Mode: ModeLoRA, LoRA: lora, MaxBatch: batchSize, MaxSeq: seqLen})
	lora.Dropout = 0
	refModel := newFullModel(t, Options{Mode: ModeLoRA, LoRA: lora, MaxBatch: batchSize, MaxSeq: seqLen})
	require.Nil(t, refModel.dropout, "dropout 0 allocates no dropout state")
	require.NoError(t, dropModel.dropout.bind(batchSize, seqLen))
	keepScale := dropModel.dropout.keepScale
	require.Equal(t, float32(1/(1-p)), keepScale)

	rng := rand.New(rand.NewPCG(3, 4))
	for _, module := range []string{"q_proj", "o_proj", "down_proj"} {
		t.Run(module, func(t *testing.T) {
			pd, pr := projectionOf(t, dropModel, 1, module), projectionOf(t, refModel, 1, module)
			out, in := pd.weight.shape[0], pd.weight.shape[1]
			nameW, nameA, nameB := projectionNames(pd)
			a := randomFloats(rng, lora.Rank*in, 0.3)
			b := randomFloats(rng, out*lora.Rank, 0.3)
			for _, m := range []*Model{dropModel, refModel} {
				require.NoError(t, m.SetTensor(nameW, make([]float32, out*in)))
				require.NoError(t, m.SetTensor(nameA, a))
				require.NoError(t, m.SetTensor(nameB, b))
			}
			n := batchSize * seqLen
			x := randomFloats(rng, n*in, 1)
			dy := randomFloats(rng, n*out, 1)

			dropModel.training = true
			dropModel.dropoutStep = 7
			got := runProjection(t, dropModel, pd, x, dy)
			dropModel.training = false
			ids := make([]int32, n*in)
			require.NoError(t, dropModel.backend.CopyToHostI32(ids, dropModel.dropout.views[pd.index].ids))

			// The reference input: dropped elements zeroed, kept ones scaled.
			xRef := make([]float32, len(x))
			dropped := 0
			for i, id := range ids {
				switch id {
				case 0:
					dropped++
				case int32(i + 1):
					xRef[i] = x[i] * keepScale
				default:
					t.Fatalf("gather id %d of element %d is neither 0 nor %d", id, i, i+1)
				}
			}
			fraction := float64(dropped) / float64(len(ids))
			assert.InDelta(t, p, fraction, 0.1, "fraction of dropped inputs")
			require.Positive(t, dropped, "dropped inputs")

			want := runProjection(t, refModel, pr, xRef, dy)
			assert.Equal(t, want.y, got.y, "y")
			assert.Equal(t, want.dA, got.dA, "dA")
			assert.Equal(t, want.dB, got.dB, "dB")
			wantDx := make([]float32, len(want.dx))
			for i, id := range ids {
				if id != 0 {
					wantDx[i] = want.dx[i] * keepScale
				}
			}
			assert.Equal(t, wantDx, got.dx, "dx")
		})
	}
}

// TestDropoutMaskFraction checks that the mask drops a fraction p of the
// elements, that kept elements gather themselves, and that the masks of two
// steps, layers or projections are independent: both drop an element with
// probability p².
func TestDropoutMaskFraction(t *testing.T) {
	const n = 1 << 18
	for _, p := range []float64{0.05, 0.1, 0.5, 0.9} {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			threshold := dropoutThreshold(p)
			base := make([]int32, n)
			fillDropoutIDs(base, dropoutKey(1, 5, 0, 0), threshold)
			dropped := 0
			for i, id := range base {
				if id == 0 {
					dropped++
				} else {
					require.Equal(t, int32(i+1), id, "id of kept element %d", i)
				}
			}
			sigma := math.Sqrt(p * (1 - p) / n)
			assert.InDelta(t, p, float64(dropped)/n, 5*sigma, "fraction dropped")

			others := map[string]uint64{
				"next step":       dropoutKey(1, 6, 0, 0),
				"next layer":      dropoutKey(1, 5, 1, 0),
				"next projection": dropoutKey(1, 5, 0, 1),
				"another seed":    dropoutKey(2, 5, 0, 0),
			}
			other := make([]int32, n)
			for name, key := range others {
				fillDropoutIDs(other, key, threshold)
				both := 0
				for i := range base {
					if base[i] == 0 && other[i] == 0 {
						both++
					}
				}
				sigmaBoth := math.Sqrt(p * p * (1 - p*p) / n)
				assert.InDelta(t, p*p, float64(both)/n, 5*sigmaBoth, "fraction dropped by both this mask and the %s's", name)
			}
		})
	}
}

// newDropoutGoldenModel builds the lora_all_packed fixture model with LoRA
// dropout p and dropout seed.
func newDropoutGoldenModel(t testing.TB, c *goldenCase, p float64, seed uint64, checkpointing bool) *Model {
	t.Helper()
	return newGoldenModel(t, newBackend(t), c, func(o *Options) {
		o.LoRA.Dropout = p
		o.DropoutSeed = seed
		o.Checkpointing = checkpointing
	})
}

// TestDropoutOffInEvaluation checks that Loss, Logits and the Decoder of a
// model with dropout match those of the same model without it and leave the
// dropout step unchanged, while ForwardBackward applies dropout.
func TestDropoutOffInEvaluation(t *testing.T) {
	c := loadGoldenCase(t, "lora_all_packed")
	withDropout := newDropoutGoldenModel(t, c, 0.5, 1, false)
	without := newGoldenModel(t, newBackend(t), c, nil)

	lossDropout, countDropout, err := withDropout.Loss(c.batch)
	require.NoError(t, err)
	lossPlain, countPlain, err := without.Loss(c.batch)
	require.NoError(t, err)
	assert.Equal(t, lossPlain, lossDropout, "Loss")
	assert.Equal(t, countPlain, countDropout, "Loss target count")

	logitsDropout, err := withDropout.Logits(c.batch, 1)
	require.NoError(t, err)
	logitsPlain, err := without.Logits(c.batch, 1)
	require.NoError(t, err)
	assert.Equal(t, logitsPlain, logitsDropout, "Logits")

	sampling := SamplingConfig{Temperature: 1, Seed: 3}
	assert.Equal(t, generate(t, without, sampling).IDs, generate(t, withDropout, sampling).IDs, "generated tokens")
	assert.Zero(t, withDropout.DropoutStep(), "dropout step after evaluation")

	trainLoss, _, err := withDropout.ForwardBackward(c.batch, 1, nil)
	require.NoError(t, err)
	assert.NotEqual(t, lossPlain, trainLoss, "ForwardBackward loss with dropout 0.5")
	assert.Equal(t, uint64(1), withDropout.DropoutStep(), "dropout step after ForwardBackward")
}

// TestDropoutSeedAndStep checks that equal seeds and steps give equal losses
// and gradients, and that another step or seed draws other masks.
func TestDropoutSeedAndStep(t *testing.T) {
	c := loadGoldenCase(t, "lora_all_packed")
	first := newDropoutGoldenModel(t, c, 0.3, 11, false)
	second := newDropoutGoldenModel(t, c, 0.3, 11, false)
	otherSeed := newDropoutGoldenModel(t, c, 0.3, 12, false)
	run := func(m *Model) (float64, map[string][]float32) {
		m.ZeroGrad()
		lossSum, _, err := m.ForwardBackward(c.batch, 1/float32(c.targetCount), nil)
		require.NoError(t, err)
		return lossSum, trainableGrads(t, m)
	}

	loss0, grads0 := run(first)
	loss1, _ := run(first)
	assert.NotEqual(t, loss0, loss1, "losses of steps 0 and 1")
	assert.Equal(t, uint64(2), first.DropoutStep())

	lossSecond, gradsSecond := run(second)
	assert.Equal(t, loss0, lossSecond, "loss of a second model with the same seed")
	assert.Equal(t, grads0, gradsSecond, "gradients of a second model with the same seed")

	first.SetDropoutStep(0)
	lossAgain, gradsAgain := run(first)
	assert.Equal(t, loss0, lossAgain, "loss after SetDropoutStep(0)")
	assert.Equal(t, grads0, gradsAgain, "gradients after SetDropoutStep(0)")

	second.SetDropoutStep(1)
	lossStep1, _ := run(second)
	assert.Equal(t, loss1, lossStep1, "loss of step 1 set by SetDropoutStep")

	lossOther, _ := run(otherSeed)
	assert.NotEqual(t, loss0, lossOther, "loss with another seed")
}

// TestDropoutCheckpointingIdentical checks that a checkpointed layer's
// recomputation in backward draws the forward's masks, over three steps, the
// second of which binds a smaller batch shape.
func TestDropoutCheckpointingIdentical(t *testing.T) {
	c := loadGoldenCase(t, "lora_all_packed")
	batches := []*data.Batch{c.batch, subBatch(c.batch, 0, 1), c.batch}
	run := func(checkpointing bool) ([]float64, map[string][]float32) {
		m := newDropoutGoldenModel(t, c, 0.3, 5, checkpointing)
		var losses []float64
		for _, batch := range batches {
			lossSum, _, err := m.ForwardBackward(batch, 1/float32(c.targetCount), nil)
			require.NoError(t, err)
			losses = append(losses, lossSum)
		}
		return losses, trainableGrads(t, m)
	}
	lossesPlain, gradsPlain := run(false)
	lossesCheckpointed, gradsCheckpointed := run(true)
	assert.Equal(t, lossesPlain, lossesCheckpointed)
	assert.Equal(t, gradsPlain, gradsCheckpointed)
}

// TestDropoutGradientFiniteDifference checks the gradient of whole-model
// training with dropout and checkpointing against central differences of the
// loss at a fixed dropout step, which keeps the masks fixed. The model runs in
// float32, so the tolerance is 2% of the gradient plus 1e-4.
func TestDropoutGradientFiniteDifference(t *testing.T) {
	const step, eps = 3, 1e-2
	c := loadGoldenCase(t, "lora_all_packed")
	m := newDropoutGoldenModel(t, c, 0.3, 9, true)
	lossAt := func() float64 {
		m.SetDropoutStep(step)
		lossSum, _, err := m.ForwardBackward(c.batch, 1, nil)
		require.NoError(t, err)
		return lossSum
	}
	m.ZeroGrad()
	lossAt()
	grads := trainableGrads(t, m)

	names := []string{
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
		"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
		"base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight",
		"base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight",
	}
	for _, name := range names {
		grad := grads[name]
		require.NotEmpty(t, grad, name)
		largest := 0
		for i, g := range grad {
			if math.Abs(float64(g)) > math.Abs(float64(grad[largest])) {
				largest = i
			}
		}
		values, err := m.ReadTensor(name)
		require.NoError(t, err)
		original := values[largest]
		values[largest] = original + eps
		require.NoError(t, m.SetTensor(name, values))
		lossPlus := lossAt()
		values[largest] = original - eps
		require.NoError(t, m.SetTensor(name, values))
		lossMinus := lossAt()
		values[largest] = original
		require.NoError(t, m.SetTensor(name, values))

		difference := (lossPlus - lossMinus) / (2 * eps)
		want := float64(grad[largest])
		assert.InDelta(t, want, difference, 0.02*math.Abs(want)+1e-4, "%s[%d]", name, largest)
	}
}
