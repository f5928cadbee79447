package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
)

const goldenDir = "testdata/golden"

func TestLoadGoldenConfig(t *testing.T) {
	cfg, err := LoadConfig(goldenDir)
	require.NoError(t, err)
	assert.Equal(t, Config{
		VocabSize: 250, HiddenSize: 48, IntermediateSize: 80, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 16, RMSNormEps: 1e-6, RopeTheta: 1e6,
		MaxPositionEmbeddings: 512, TieWordEmbeddings: true, InitializerRange: 0.02,
	}, cfg)
}

// TestParamsMatchGoldenFile checks names and shapes against the safetensors file that
// PyTorch wrote with Hugging Face's names.
func TestParamsMatchGoldenFile(t *testing.T) {
	cfg, err := LoadConfig(goldenDir)
	require.NoError(t, err)
	f, err := checkpoint.Open(filepath.Join(goldenDir, "model.safetensors"))
	require.NoError(t, err)
	defer f.Close()

	want := map[string][]int{}
	for _, info := range f.Tensors() {
		want[info.Name] = info.Shape
	}
	got := map[string][]int{}
	for _, p := range cfg.Params() {
		got[p.Name] = p.Shape
	}
	assert.Equal(t, want, got)
}

func TestQwen3Sizes(t *testing.T) {
	cfg, err := Preset("qwen3-0.6b")
	require.NoError(t, err)
	assert.Equal(t, int64(596_049_920), cfg.NumParams(), "Qwen3-0.6B with the tied embedding")

	cases := []struct {
		rank    int
		targets []string
		want    int64
	}{
		{8, []string{"q_proj", "k_proj", "v_proj", "o_proj"}, 2_293_760},
		{16, []string{"q_proj", "k_proj", "v_proj", "o_proj"}, 4_587_520},
		{8, ProjectionModules(), 5_046_272},
		{16, ProjectionModules(), 10_092_544},
	}
	for _, c := range cases {
		lora := LoRAConfig{Rank: c.rank, Alpha: 16, TargetModules: c.targets}
		require.NoError(t, lora.Validate())
		assert.Equal(t, c.want, cfg.NumLoRAParams(lora), "rank %d on %v", c.rank, c.targets)
	}
}

func TestAdapterNames(t *testing.T) {
	cfg, err := LoadConfig(goldenDir)
	require.NoError(t, err)
	specs := cfg.Adapters(LoRAConfig{Rank: 4, Alpha: 8, TargetModules: []string{"q_proj", "down_proj"}})
	require.Len(t, specs, 2*2*cfg.NumLayers)
	assert.Equal(t, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", specs[0].Name)
	assert.Equal(t, []int{4, 48}, specs[0].Shape)
	assert.Equal(t, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", specs[1].Name)
	assert.Equal(t, []int{64, 4}, specs[1].Shape)
	assert.Equal(t, "model.layers.0.mlp.down_proj.weight", specs[2].Base)
	assert.Equal(t, []int{48, 4}, specs[3].Shape)
}

func TestPresets(t *testing.T) {
	assert.Equal(t, []string{"qwen3-0.6b", "small", "tiny"}, PresetNames())
	for _, name := range PresetNames() {
		cfg, err := ResolveConfig(name)
		require.NoError(t, err, name)
		assert.NoError(t, cfg.Validate(), name)
	}
	_, err := Preset("huge")
	assert.ErrorContains(t, err, `unknown model preset "huge"`)
}

func TestParseConfigRejects(t *testing.T) {
	base, err := os.ReadFile(filepath.Join(goldenDir, ConfigFile))
	require.NoError(t, err)
	cases := []struct{ old, new, want string }{
		{`"model_type": "qwen3"`, `"model_type": "llama"`, `model_type "llama" is not supported`},
		{`"attention_bias": false`, `"attention_bias": true`, "attention_bias true is not supported"},
		{`"use_sliding_window": false`, `"use_sliding_window": true`, "use_sliding_window true is not supported"},
		{`"rope_scaling": null`, `"rope_scaling": {"rope_type": "yarn", "factor": 4.0}`, "rope_scaling"},
		{`"hidden_act": "silu"`, `"hidden_act": "gelu"`, `hidden_act "gelu"`},
		{`"num_key_value_heads": 2`, `"num_key_value_heads": 3`, "not a multiple of num_key_value_heads 3"},
		{`"vocab_size": 250`, `"vocab_size": 0`, "vocab_size is 0"},
		{`"head_dim": 16`, `"head_dim": 15`, "head_dim 15 must be even"},
		{`"rms_norm_eps": 1e-06`, `"rms_norm_eps": -1`, "rms_norm_eps -1"},
		{`"vocab_size": 250`, `"vocab_size": "250"`, `field "vocab_size": expected an integer, found string`},
		{`"rope_scaling": null`, `"rope_scaling": "yarn"`, `rope_scaling: expected null or an object`},
		{`"num_hidden_layers": 2`, `"num_hidden_layers": 1000000000`, "num_hidden_layers is 1000000000, above the largest supported value"},
		{`"vocab_size": 250`, `"vocab_size": 1e12`, `field "vocab_size": expected an integer, found number 1e12`},
		{`"vocab_size": 250`, `"vocab_size": 250, "tie_word_embeddings": "yes"`, `field "tie_word_embeddings": expected true or false`},
	}
	for _, c := range cases {
		text := strings.Replace(string(base), c.old, c.new, 1)
		require.NotEqual(t, string(base), text, "replacement %q must apply", c.old)
		_, err := ParseConfig([]byte(text), "dir/config.json")
		require.Error(t, err, c.new)
		assert.Contains(t, err.Error(), "dir/config.json")
		assert.Contains(t, err.Error(), c.want)
	}
}

func TestParseConfigTransformers5(t *testing.T) {
	text := `{"model_type": "qwen3", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
		"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
		"max_position_embeddings": 64, "layer_types": ["full_attention"],
		"rope_parameters": {"rope_type": "default", "rope_theta": 5000.0}, "dtype": "bfloat16"}`
	cfg, err := ParseConfig([]byte(text), "config.json")
	require.NoError(t, err)
	assert.Equal(t, 5000.0, cfg.RopeTheta)
	assert.Equal(t, 4, cfg.HeadDim, "head_dim defaults to hidden_size / num_attention_heads")
	assert.False(t, cfg.TieWordEmbeddings)
	assert.Equal(t, "lm_head.weight", cfg.Params()[len(cfg.Params())-1].Name)

	_, err = ParseConfig([]byte(strings.Replace(text, `["full_attention"]`, `["sliding_attention"]`, 1)), "config.json")
	assert.ErrorContains(t, err, `layer_types[0] "sliding_attention"`)
}

func TestParseConfigDefaultsKVHeads(t *testing.T) {
	base, err := os.ReadFile(filepath.Join(goldenDir, ConfigFile))
	require.NoError(t, err)
	text := strings.Replace(string(base), `"num_key_value_heads": 2,`, ``, 1)
	cfg, err := ParseConfig([]byte(text), "config.json")
	require.NoError(t, err)
	assert.Equal(t, cfg.NumHeads, cfg.NumKVHeads, "transformers defaults num_key_value_heads to num_attention_heads")

	_, err = ParseConfig(append(base, []byte("{}")...), "config.json")
	assert.ErrorContains(t, err, "data after the top-level object")
}

func TestLoRAValidate(t *testing.T) {
	require.NoError(t, DefaultLoRA().Validate())
	assert.Equal(t, 2.0, DefaultLoRA().Scaling())
	cases := []struct {
		lora LoRAConfig
		want string
	}{
		{LoRAConfig{Rank: 0, Alpha: 1, TargetModules: []string{"q_proj"}}, "rank 0"},
		{LoRAConfig{Rank: 4, Alpha: 1, TargetModules: []string{"embed_tokens"}}, `"embed_tokens" is not a projection`},
		{LoRAConfig{Rank: 4, Alpha: 1, TargetModules: []string{"q_proj", "q_proj"}}, "listed twice"},
		{LoRAConfig{Rank: 4, Alpha: 1, Dropout: 1, TargetModules: []string{"q_proj"}}, "dropout 1"},
		{LoRAConfig{Rank: 4, Alpha: 1}, "at least one target"},
	}
	for _, c := range cases {
		assert.ErrorContains(t, c.lora.Validate(), c.want)
	}
}

func TestLoadConfigMissing(t *testing.T) {
	_, err := LoadConfig(t.TempDir())
	assert.ErrorContains(t, err, "config.json not found")
}
