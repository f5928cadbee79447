package model

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// goldenTolerance is the largest max|Δ| / max|ref| per tensor accepted against
// the PyTorch fixtures. float32 torch itself differs from them by up to 2.1e-6
// (testdata/golden/README.md).
const goldenTolerance = 1e-4

// goldenCaseNames lists the case files of testdata/golden.
var goldenCaseNames = []string{"full_unpacked", "full_packed", "lora_unpacked", "lora_packed", "lora_all_packed"}

// goldenCase is one case file of testdata/golden.
type goldenCase struct {
	name        string
	mode        Mode
	lora        LoRAConfig
	batch       *data.Batch
	loss        float64 // loss_sum / target_count
	lossSum     float64
	targetCount int
	logitsRow0  []float32            // (T, V)
	grads       map[string][]float32 // by tensor name, gradients of the mean loss
	adapters    map[string][]float32 // by PEFT key, LoRA cases only
}

func newBackend(t testing.TB) *cpu.Backend {
	t.Helper()
	be, err := cpu.New(cpu.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { be.Close() })
	return be
}

func goldenConfig(t testing.TB) Config {
	t.Helper()
	cfg, err := LoadConfig(goldenDir)
	require.NoError(t, err)
	return cfg
}

func readInt32s(t testing.TB, f *checkpoint.File, name string) []int32 {
	t.Helper()
	info, err := f.Info(name)
	require.NoError(t, err)
	require.Equal(t, checkpoint.I32, info.DType, name)
	raw := make([]byte, info.Size())
	require.NoError(t, f.ReadRaw(name, raw))
	values := make([]int32, len(raw)/4)
	for i := range values {
		values[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return values
}

func readFloats(t testing.TB, f *checkpoint.File, name string) []float32 {
	t.Helper()
	info, err := f.Info(name)
	require.NoError(t, err)
	values := make([]float32, info.NumElements())
	require.NoError(t, f.ReadFloat32(name, values))
	return values
}

func loadGoldenCase(t testing.TB, name string) *goldenCase {
	t.Helper()
	f, err := checkpoint.Open(filepath.Join(goldenDir, "case_"+name+".safetensors"))
	require.NoError(t, err)
	defer f.Close()

	ids := readInt32s(t, f, "input_ids")
	info, err := f.Info("input_ids")
	require.NoError(t, err)
	batchSize, seqLen := info.Shape[0], info.Shape[1]
	startsInfo, err := f.Info("starts")
	require.NoError(t, err)
	flatStarts := readInt32s(t, f, "starts")
	lengths := readInt32s(t, f, "lengths")

	batch := &data.Batch{
		Size:      batchSize,
		SeqLen:    seqLen,
		IDs:       ids,
		Targets:   readInt32s(t, f, "targets"),
		Positions: readInt32s(t, f, "position_ids"),
		Starts:    make([][]int32, batchSize),
		Lengths:   make([]int, batchSize),
	}
	perRow := startsInfo.Shape[1]
	for b := range batchSize {
		for _, s := range flatStarts[b*perRow : (b+1)*perRow] {
			if s >= 0 {
				batch.Starts[b] = append(batch.Starts[b], s)
			}
		}
		batch.Lengths[b] = int(lengths[b])
		batch.Tokens += int(lengths[b])
	}
	for _, target := range batch.Targets {
		if target != kernels.IgnoreIndex {
			batch.TargetTokens++
		}
	}

	c := &goldenCase{
		name:        name,
		batch:       batch,
		loss:        float64(readFloats(t, f, "loss")[0]),
		lossSum:     float64(readFloats(t, f, "loss_sum")[0]),
		targetCount: int(readInt32s(t, f, "target_count")[0]),
		logitsRow0:  readFloats(t, f, "logits_row0"),
		grads:       map[string][]float32{},
		adapters:    map[string][]float32{},
	}
	for _, ti := range f.Tensors() {
		switch {
		case strings.HasPrefix(ti.Name, "grad."):
			c.grads[strings.TrimPrefix(ti.Name, "grad.")] = readFloats(t, f, ti.Name)
		case strings.HasPrefix(ti.Name, "lora."):
			c.adapters[strings.TrimPrefix(ti.Name, "lora.")] = readFloats(t, f, ti.Name)
		}
	}
	meta := f.Metadata()
	mode, err := ParseMode(meta["mode"])
	require.NoError(t, err)
	c.mode = mode
	if mode == ModeLoRA {
		c.lora = LoRAConfig{
			Rank:          int(readInt32s(t, f, "lora_rank")[0]),
			Alpha:         float64(readFloats(t, f, "lora_alpha")[0]),
			TargetModules: strings.Split(meta["lora_target_modules"], ","),
		}
	}
	return c
}

// newGoldenModel builds the fixture model for c with the weights of
// testdata/golden and, in LoRA mode, the case's adapters. adjust may change
// the options first.
func newGoldenModel(t testing.TB, be kernels.Backend, c *goldenCase, adjust func(*Options)) *Model {
	t.Helper()
	opts := Options{Mode: c.mode, LoRA: c.lora, MaxBatch: c.batch.Size, MaxSeq: c.batch.SeqLen}
	if adjust != nil {
		adjust(&opts)
	}
	m, err := New(be, goldenConfig(t), opts)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.LoadBase(goldenDir))
	for name, values := range c.adapters {
		require.NoError(t, m.SetTensor(name, values), name)
	}
	return m
}

// relativeError returns max|got − want| / max|want|.
func relativeError(got, want []float32) float64 {
	var maxDiff, maxRef float64
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-float64(want[i])))
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
	}
	if maxRef == 0 {
		return maxDiff
	}
	return maxDiff / maxRef
}

// trainableGrads returns a host copy of every trainable gradient by name.
func trainableGrads(t testing.TB, m *Model) map[string][]float32 {
	t.Helper()
	grads := map[string][]float32{}
	for _, p := range m.Trainable() {
		values, err := m.ReadGrad(p.Name)
		require.NoError(t, err)
		grads[p.Name] = values
	}
	return grads
}

// subBatch returns rows [start, end) of batch as a batch of its own.
func subBatch(batch *data.Batch, start, end int) *data.Batch {
	span := func(values []int32) []int32 { return values[start*batch.SeqLen : end*batch.SeqLen] }
	sub := &data.Batch{
		Size:      end - start,
		SeqLen:    batch.SeqLen,
		IDs:       span(batch.IDs),
		Targets:   span(batch.Targets),
		Positions: span(batch.Positions),
		Starts:    batch.Starts[start:end],
		Lengths:   batch.Lengths[start:end],
	}
	for _, target := range sub.Targets {
		if target != kernels.IgnoreIndex {
			sub.TargetTokens++
		}
	}
	return sub
}
