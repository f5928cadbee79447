package peft_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

// testdata/adapter_config.json is json.dumps(indent=2, sort_keys=True) of the fields of
// LoraConfig in PEFT v0.13.2 with their defaults, after save_pretrained set
// inference_mode, for r=8, lora_alpha=16, lora_dropout=0.05 on the attention
// projections. testdata/README.md describes how it was made.
func TestMarshalMatchesPEFT(t *testing.T) {
	want, err := os.ReadFile("testdata/adapter_config.json")
	require.NoError(t, err)
	cfg := peft.Config{
		Rank: 8, Alpha: 16, Dropout: 0.05,
		TargetModules:       []string{"q_proj", "k_proj", "v_proj", "o_proj"},
		BaseModelNameOrPath: "Qwen/Qwen3-0.6B",
	}
	got, err := cfg.Marshal()
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
}

func TestMarshalOptionalFields(t *testing.T) {
	cfg := peft.Config{
		Rank: 4, Alpha: 2.5, Dropout: 0,
		TargetModules:     []string{"self_attn.q_proj"},
		ExcludeModules:    []string{"model.layers.1.self_attn.q_proj"},
		LayersToTransform: []int{0, 1},
		UseRSLoRA:         true,
		Revision:          "main",
	}
	got, err := cfg.Marshal()
	require.NoError(t, err)
	text := string(got)
	assert.Contains(t, text, `"lora_alpha": 2.5,`)
	assert.Contains(t, text, `"lora_dropout": 0.0,`)
	assert.Contains(t, text, "\"layers_to_transform\": [\n    0,\n    1\n  ],")
	assert.Contains(t, text, "\"exclude_modules\": [\n    \"model.layers.1.self_attn.q_proj\"\n  ],")
	assert.Contains(t, text, `"base_model_name_or_path": null,`)
	assert.Contains(t, text, `"revision": "main",`)
	assert.Contains(t, text, `"use_rslora": true`)
	assert.False(t, strings.HasSuffix(text, "\n"), "json.dumps writes no final newline")

	back, err := peft.ParseConfig(got, "config")
	require.NoError(t, err)
	assert.Equal(t, cfg, back)
}

func TestMarshalEscapesLikePython(t *testing.T) {
	cfg := attentionConfig()
	cfg.BaseModelNameOrPath = "/models/Qwen3 é\t\U0001F600\x7f"
	got, err := cfg.Marshal()
	require.NoError(t, err)
	// Python: json.dumps("/models/Qwen3 é\t\U0001F600\x7f")
	assert.Contains(t, string(got), `"base_model_name_or_path": "/models/Qwen3 \u00e9\t\ud83d\ude00\u007f",`)
}

func TestMarshalFloatsLikePython(t *testing.T) {
	// Expected strings are Python 3.11's repr of each float.
	cases := []struct {
		dropout float64
		want    string
	}{
		{0, "0.0"},
		{0.05, "0.05"},
		{0.30000000000000004, "0.30000000000000004"}, // 0.1 + 0.2 in float64
		{0.0001, "0.0001"},
		{0.00001, "1e-05"},
		{1.5e-7, "1.5e-07"},
		{0.5, "0.5"},
	}
	for _, tc := range cases {
		cfg := attentionConfig()
		cfg.Dropout = tc.dropout
		got, err := cfg.Marshal()
		require.NoError(t, err)
		assert.Contains(t, string(got), `"lora_dropout": `+tc.want+",", "dropout %v", tc.dropout)
	}
}

func TestParseConfigPEFT013(t *testing.T) {
	data, err := os.ReadFile("testdata/adapter_config.json")
	require.NoError(t, err)
	cfg, err := peft.ParseConfig(data, "adapter_config.json")
	require.NoError(t, err)
	assert.Equal(t, 8, cfg.Rank)
	assert.Equal(t, 16.0, cfg.Alpha)
	assert.Equal(t, 0.05, cfg.Dropout)
	assert.Equal(t, []string{"q_proj", "k_proj", "v_proj", "o_proj"}, cfg.TargetModules)
	assert.Equal(t, "Qwen/Qwen3-0.6B", cfg.BaseModelNameOrPath)
	assert.Empty(t, cfg.Revision)
	assert.False(t, cfg.UseRSLoRA)
	assert.Nil(t, cfg.LayersToTransform)
	assert.Equal(t, 2.0, cfg.Scaling())

	lora, err := cfg.LoRA()
	require.NoError(t, err)
	assert.Equal(t, model.LoRAConfig{Rank: 8, Alpha: 16, Dropout: 0.05, TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj"}}, lora)
}

// testdata/adapter_config_peft0.18.json has the 37 keys that PEFT v0.18.1 writes, with
// use_rslora true.
func TestParseConfigPEFT018(t *testing.T) {
	data, err := os.ReadFile("testdata/adapter_config_peft0.18.json")
	require.NoError(t, err)
	cfg, err := peft.ParseConfig(data, "adapter_config.json")
	require.NoError(t, err)
	assert.Equal(t, 16, cfg.Rank)
	assert.True(t, cfg.UseRSLoRA)
	assert.Equal(t, "0.18.1", cfg.PEFTVersion)
	assert.Len(t, cfg.TargetModules, 7)
	assert.Equal(t, 8.0, cfg.Scaling(), "rs-LoRA scaling is lora_alpha / sqrt(r) = 32 / 4")
	_, err = cfg.LoRA()
	assert.ErrorContains(t, err, "use_rslora")
}

func TestParseConfigAllLinear(t *testing.T) {
	cfg, err := peft.ParseConfig([]byte(`{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": "all-linear"}`), "c")
	require.NoError(t, err)
	assert.Equal(t, model.ProjectionModules(), cfg.TargetModules)
}

func TestParseConfigRejects(t *testing.T) {
	base := `"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]`
	cases := []struct {
		name  string
		json  string
		field string
		kind  error
		parts []string
	}{
		{"dora", `"use_dora": true`, "use_dora", peft.ErrUnsupported, []string{"DoRA"}},
		{"rank pattern", `"rank_pattern": {"q_proj": 4}`, "rank_pattern", peft.ErrUnsupported, []string{"per-module ranks"}},
		{"alpha pattern", `"alpha_pattern": {"q_proj": 4}`, "alpha_pattern", peft.ErrUnsupported, []string{"per-module alphas"}},
		{"modules to save", `"modules_to_save": ["lm_head"]`, "modules_to_save", peft.ErrUnsupported, []string{"lm_head"}},
		{"bias", `"bias": "all"`, "bias", peft.ErrUnsupported, []string{`"all"`}},
		{"lora bias", `"lora_bias": true`, "lora_bias", peft.ErrUnsupported, nil},
		{"regex targets", `"target_modules": ".*(q|v)_proj"`, "target_modules", peft.ErrUnsupported, []string{"regular expression"}},
		{"regex excludes", `"exclude_modules": ".*q_proj"`, "exclude_modules", peft.ErrUnsupported, []string{"regular expression"}},
		{"unknown target", `"target_modules": ["c_attn"]`, "target_modules", peft.ErrUnsupported, []string{`"c_attn"`}},
		{"embedding target", `"target_modules": ["embed_tokens"]`, "target_modules", peft.ErrUnsupported, []string{`"embed_tokens"`}},
		{"pissa", `"init_lora_weights": "pissa_niter_4"`, "init_lora_weights", peft.ErrUnsupported, []string{"path_initial_model_for_weight_conversion"}},
		{"peft type", `"peft_type": "IA3"`, "peft_type", peft.ErrUnsupported, []string{`"IA3"`}},
		{"task type", `"task_type": "SEQ_CLS"`, "task_type", peft.ErrUnsupported, []string{"CAUSAL_LM"}},
		{"layers pattern", `"layers_pattern": "h"`, "layers_pattern", peft.ErrUnsupported, nil},
		{"layer replication", `"layer_replication": [[0, 2]]`, "layer_replication", peft.ErrUnsupported, nil},
		{"unknown field", `"future_option": 3`, "future_option", peft.ErrUnsupported, []string{"PEFT up to 0.20"}},
		{"rank zero", `"r": 0`, "r", peft.ErrInvalidConfig, []string{"positive"}},
		{"rank not integer", `"r": 8.5`, "r", peft.ErrInvalidConfig, []string{"integer"}},
		{"alpha string", `"lora_alpha": "16"`, "lora_alpha", peft.ErrInvalidConfig, []string{"not a number"}},
		{"dropout one", `"lora_dropout": 1`, "lora_dropout", peft.ErrInvalidConfig, []string{"[0, 1)"}},
		{"targets null", `"target_modules": null`, "target_modules", peft.ErrInvalidConfig, nil},
		{"negative layer", `"layers_to_transform": [-1]`, "layers_to_transform", peft.ErrInvalidConfig, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A later duplicate key wins in Go's decoder, as in Python's json.load.
			_, err := peft.ParseConfig([]byte("{"+base+", "+tc.json+"}"), "dir/adapter_config.json")
			parts := append([]string{"dir/adapter_config.json", `field "` + tc.field + `"`}, tc.parts...)
			requirePEFTError(t, err, tc.kind, parts...)
		})
	}
}

func TestParseConfigMissingField(t *testing.T) {
	_, err := peft.ParseConfig([]byte(`{"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}`), "c.json")
	requirePEFTError(t, err, peft.ErrInvalidConfig, `field "lora_alpha"`, "missing")
}

func TestParseConfigInvalidJSON(t *testing.T) {
	_, err := peft.ParseConfig([]byte(`{"peft_type": "LORA",`), "c.json")
	requirePEFTError(t, err, peft.ErrInvalidConfig, "c.json", "invalid JSON")
}

func TestReadConfigMissingFile(t *testing.T) {
	dir := t.TempDir()
	_, err := peft.ReadConfig(dir)
	requirePEFTError(t, err, peft.ErrInvalidConfig, filepath.Join(dir, "adapter_config.json"), "not found")
}

func TestWriteConfigReplacesFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, peft.WriteConfig(dir, attentionConfig()))
	cfg := attentionConfig()
	cfg.Rank = 16
	require.NoError(t, peft.WriteConfig(dir, cfg))
	back, err := peft.ReadConfig(dir)
	require.NoError(t, err)
	assert.Equal(t, 16, back.Rank)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")
	info, err := entries[0].Info()
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), info.Mode().Perm())
}

func TestTargetsFollowPEFTMatching(t *testing.T) {
	cfg := peft.Config{
		Rank: 2, Alpha: 2,
		TargetModules:  []string{"self_attn.q_proj", "model.layers.1.mlp.up_proj", "v_proj"},
		ExcludeModules: []string{"layers.0.self_attn.v_proj", "attn.q_proj"},
	}
	require.NoError(t, cfg.Validate())
	assert.True(t, cfg.Targets(0, "q_proj"))
	assert.True(t, cfg.Targets(1, "q_proj"), `"attn.q_proj" is no suffix of "...self_attn.q_proj" on a dot boundary`)
	assert.False(t, cfg.Targets(0, "up_proj"))
	assert.True(t, cfg.Targets(1, "up_proj"))
	assert.False(t, cfg.Targets(0, "v_proj"), "excluded")
	assert.True(t, cfg.Targets(1, "v_proj"))
	assert.False(t, cfg.Targets(0, "k_proj"))

	cfg.LayersToTransform = []int{1}
	assert.False(t, cfg.Targets(0, "q_proj"))
	assert.True(t, cfg.Targets(1, "q_proj"))

	// PEFT applies layers_to_transform to suffix matches only, not to a full module name.
	cfg.TargetModules = []string{"model.layers.0.mlp.up_proj", "down_proj"}
	assert.True(t, cfg.Targets(0, "up_proj"))
	assert.False(t, cfg.Targets(0, "down_proj"))
	assert.True(t, cfg.Targets(1, "down_proj"))
}

func TestModulesRejectMissingLayer(t *testing.T) {
	base := loadGoldenConfig(t)
	cfg := peft.Config{Rank: 2, Alpha: 2, TargetModules: []string{"model.layers.5.self_attn.q_proj"}}
	_, err := cfg.Modules(base)
	requirePEFTError(t, err, peft.ErrBase, `field "target_modules"`, "layer 5", "2 layers")

	cfg = peft.Config{Rank: 2, Alpha: 2, TargetModules: []string{"q_proj"}, LayersToTransform: []int{2}}
	_, err = cfg.Modules(base)
	requirePEFTError(t, err, peft.ErrBase, `field "layers_to_transform"`, "layer 2")

	cfg = peft.Config{Rank: 2, Alpha: 2, TargetModules: []string{"q_proj"}, ExcludeModules: []string{"q_proj"}}
	_, err = cfg.Modules(base)
	requirePEFTError(t, err, peft.ErrBase, "selects no projection")
}

func TestExpectedMatchesModelAdapters(t *testing.T) {
	base := loadGoldenConfig(t)
	lora := model.LoRAConfig{Rank: 4, Alpha: 8, TargetModules: model.ProjectionModules()}
	specs, err := peft.FromLoRA(lora, "").Expected(base)
	require.NoError(t, err)
	assert.Equal(t, base.Adapters(lora), specs)
}
