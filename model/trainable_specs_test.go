package model

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTrainableSpecsMatchModel(t *testing.T) {
	cfg := goldenConfig(t)
	cases := []struct {
		name string
		opts Options
	}{
		{"full", Options{Mode: ModeFull}},
		{"lora attention", Options{Mode: ModeLoRA, LoRA: DefaultLoRA()}},
		{"lora all", Options{Mode: ModeLoRA, LoRA: LoRAConfig{Rank: 4, Alpha: 8, TargetModules: ProjectionModules()}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.MaxBatch, opts.MaxSeq = 1, 4
			m, err := New(newBackend(t), cfg, opts)
			require.NoError(t, err)
			t.Cleanup(m.Close)

			specs, err := TrainableSpecs(cfg, c.opts)
			require.NoError(t, err)
			params := m.Trainable()
			require.Len(t, specs, len(params))
			for i, p := range params {
				assert.Equal(t, p.Name, specs[i].Name, "tensor %d", i)
				assert.Equal(t, p.Grad.Shape(), specs[i].Shape, "tensor %s", p.Name)
				assert.Equal(t, p.Decay, specs[i].Decay, "tensor %s", p.Name)
			}
		})
	}
}

func TestTrainableSpecsRejectsBadLoRA(t *testing.T) {
	_, err := TrainableSpecs(goldenConfig(t), Options{Mode: ModeLoRA, LoRA: LoRAConfig{Rank: 0, Alpha: 1, TargetModules: []string{"q_proj"}}})
	assert.ErrorContains(t, err, "rank 0")
}
