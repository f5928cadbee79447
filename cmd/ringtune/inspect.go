package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "summarize a model directory, a PEFT adapter directory or a safetensors file",
		ArgsUsage: "PATH",
		Description: `PATH is a Hugging Face model directory (config.json and safetensors weights), a PEFT
adapter directory (adapter_config.json and adapter_model.safetensors) or one
.safetensors file. A config.json or adapter_config.json path selects its directory, and
a model.safetensors.index.json the model in its directory with those weights, which
chooses them when the directory also has a model.safetensors. inspect prints the
configuration, the tensor and parameter counts, the dtypes and the size on disk. For
an adapter, the base model is --base, or else base_model_name_or_path when that is a
local directory. With a base, the adapter's shapes are checked against it and its
parameters are given as a percentage of the base's.

--json prints one object with these keys:
  kind           "model", "adapter" or "safetensors"
  path           PATH as given
  files          weight files, relative to the model or adapter directory
  tensors        number of tensors
  parameters     number of elements of all tensors
  dtypes         per dtype: {"tensors", "parameters", "bytes"}
  weights_bytes  size of the weight files in bytes
  size_bytes     size of all files directly in PATH in bytes, symbolic links followed
For a model:
  config             config.json: model_type and the fields ringtune reads
  config_parameters  parameters that config.json implies, tied embeddings counted once
  config_mismatches  tensors that config.json implies but the weights lack or shape
                     differently, and tensors of the weights that match no parameter
                     of config.json's model, as messages; empty when they agree.
                     A tied lm_head.weight of the embedding's shape is not listed,
                     because generate ignores it
For an adapter:
  config                  peft_type, r, lora_alpha, lora_dropout, scaling, use_rslora,
                          target_modules, exclude_modules, layers_to_transform,
                          base_model_name_or_path, revision, peft_version
  adapted_modules         number of modules with a lora_A and lora_B pair
  trainable_parameters    the adapter's parameters
  base                    null, or {"source", "path", "parameters"}
  trainable_percent       100 · trainable / base parameters, or null without a base
  peft_trainable_percent  100 · trainable / (base + trainable), the trainable% of PEFT's
                          print_trainable_parameters, or null without a base`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of text"},
			&cli.StringFlag{Name: "base", Usage: "for an adapter: base model `DIR`, its config.json, or a preset (" + strings.Join(model.PresetNames(), ", ") + ")"},
		},
		Action: runInspect,
	}
}

// dtypeStats counts the tensors of one dtype.
type dtypeStats struct {
	Tensors    int   `json:"tensors"`
	Parameters int64 `json:"parameters"`
	Bytes      int64 `json:"bytes"`
}

// inspectReport is the --json output. Fields tagged omitempty belong to one kind.
type inspectReport struct {
	Kind         string                 `json:"kind"`
	Path         string                 `json:"path"`
	Files        []string               `json:"files"`
	Tensors      int                    `json:"tensors"`
	Parameters   int64                  `json:"parameters"`
	DTypes       map[string]*dtypeStats `json:"dtypes"`
	WeightsBytes int64                  `json:"weights_bytes"`
	SizeBytes    int64                  `json:"size_bytes"`

	Config any `json:"config,omitempty"`

	ConfigParameters *int64    `json:"config_parameters,omitempty"`
	ConfigMismatches *[]string `json:"config_mismatches,omitempty"`

	adapter *adapterReport
}

// adapterReport holds the adapter keys, which are present (possibly null) for every
// adapter.
type adapterReport struct {
	AdaptedModules       int          `json:"adapted_modules"`
	TrainableParameters  int64        `json:"trainable_parameters"`
	Base                 *baseSummary `json:"base"`
	TrainablePercent     *float64     `json:"trainable_percent"`
	PEFTTrainablePercent *float64     `json:"peft_trainable_percent"`

	baseNote string // text output only: why no base was used
}

type baseSummary struct {
	Source     string `json:"source"` // "--base" or "base_model_name_or_path"
	Path       string `json:"path"`
	Parameters int64  `json:"parameters"`
}

// modelConfigSummary is config.json as inspect reports it.
type modelConfigSummary struct {
	ModelType string `json:"model_type"`
	model.Config
}

// adapterConfigSummary is adapter_config.json as inspect reports it.
type adapterConfigSummary struct {
	PEFTType            string   `json:"peft_type"`
	Rank                int      `json:"r"`
	Alpha               float64  `json:"lora_alpha"`
	Dropout             float64  `json:"lora_dropout"`
	Scaling             float64  `json:"scaling"`
	UseRSLoRA           bool     `json:"use_rslora"`
	TargetModules       []string `json:"target_modules"`
	ExcludeModules      []string `json:"exclude_modules"`
	LayersToTransform   []int    `json:"layers_to_transform"`
	BaseModelNameOrPath *string  `json:"base_model_name_or_path"`
	Revision            *string  `json:"revision"`
	PEFTVersion         *string  `json:"peft_version"`
}

func (r inspectReport) MarshalJSON() ([]byte, error) {
	type plain inspectReport // drops this method
	if r.adapter == nil {
		return json.Marshal(plain(r))
	}
	return json.Marshal(struct {
		plain
		*adapterReport
	}{plain(r), r.adapter})
}

// pathForms lists what inspect's PATH can be.
const pathForms = "a model directory, a PEFT adapter directory, a .safetensors file, or a config.json, adapter_config.json or model.safetensors.index.json file"

// errBaseForModel rejects --base for a PATH that is not an adapter.
var errBaseForModel = errors.New("--base applies to adapter directories only")

func runInspect(c *cli.Context) error {
	if c.NArg() == 0 {
		return errors.New("inspect needs one PATH: " + pathForms)
	}
	path := c.Args().First()
	// urfave/cli stops parsing flags at the first argument, so flags after PATH, as in
	// `ringtune inspect DIR --json`, arrive as arguments.
	trailing := flag.NewFlagSet("inspect", flag.ContinueOnError)
	trailing.SetOutput(io.Discard)
	asJSON := trailing.Bool("json", c.Bool("json"), "")
	baseFlag := trailing.String("base", c.String("base"), "")
	if err := trailing.Parse(c.Args().Tail()); err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if trailing.NArg() > 0 {
		return fmt.Errorf("inspect takes one PATH, got also %q", trailing.Args())
	}
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot inspect %s: %w", path, err)
	}

	var report *inspectReport
	if info.IsDir() {
		report, err = inspectDir(path, *baseFlag)
	} else {
		report, err = inspectPathFile(path, *baseFlag)
	}
	if err != nil {
		return err
	}

	if *asJSON {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	printInspect(c.App.Writer, report)
	return nil
}

// inspectDir inspects a model or adapter directory.
func inspectDir(dir, baseFlag string) (*inspectReport, error) {
	switch {
	case fileExists(filepath.Join(dir, peft.ConfigFile)):
		return inspectAdapter(dir, dir, baseFlag)
	case !fileExists(filepath.Join(dir, model.ConfigFile)):
		return nil, fmt.Errorf("%s has neither %s (a model directory) nor %s (a PEFT adapter directory)", dir, model.ConfigFile, peft.ConfigFile)
	case baseFlag != "":
		return nil, errBaseForModel
	}
	if err := checkUnambiguousWeights(dir, "PATH"); err != nil {
		return nil, err
	}
	return inspectModel(dir, dir, dir)
}

// inspectPathFile inspects a file: a safetensors file, or a JSON file that selects the
// model or adapter in its directory.
func inspectPathFile(path, baseFlag string) (*inspectReport, error) {
	dir, name := filepath.Dir(path), filepath.Base(path)
	switch {
	case name == peft.ConfigFile:
		return inspectAdapter(path, dir, baseFlag)
	case baseFlag != "":
		return nil, errBaseForModel
	case name == model.ConfigFile:
		if err := checkUnambiguousWeights(dir, "PATH"); err != nil {
			return nil, err
		}
		return inspectModel(path, dir, dir)
	case strings.HasSuffix(name, ".safetensors.index.json"):
		if !fileExists(filepath.Join(dir, model.ConfigFile)) {
			return nil, fmt.Errorf("cannot inspect %s: the index needs %s next to it. Inspect a shard as a .safetensors file instead", path, model.ConfigFile)
		}
		return inspectModel(path, dir, path)
	case strings.HasSuffix(name, ".safetensors"):
		return inspectFile(path)
	case strings.HasSuffix(name, ".bin") || strings.HasSuffix(name, ".bin.index.json"):
		return nil, fmt.Errorf("cannot inspect %s: PyTorch .bin weights are not supported. Convert them to safetensors", path)
	}
	return nil, fmt.Errorf("cannot inspect %s: PATH must be %s", path, pathForms)
}

// checkUnambiguousWeights rejects a model directory with both model.safetensors and
// model.safetensors.index.json, naming the command-line argument that chooses one.
// checkpoint.OpenModel rejects such a directory too, but its message is for Go callers.
func checkUnambiguousWeights(dir, argument string) error {
	if !fileExists(filepath.Join(dir, checkpoint.SingleFileName)) || !fileExists(filepath.Join(dir, checkpoint.IndexFileName)) {
		return nil
	}
	return fmt.Errorf("%s contains both %s and %s, so the weights to use are unclear: delete the stale one, or pass the file to use as %s",
		dir, checkpoint.SingleFileName, checkpoint.IndexFileName, argument)
}

func fileExists(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular()
}

// countTensors fills the tensor, parameter and dtype counts.
func (r *inspectReport) countTensors(infos []checkpoint.TensorInfo) {
	r.DTypes = map[string]*dtypeStats{}
	r.Tensors = len(infos)
	for _, t := range infos {
		stats := r.DTypes[string(t.DType)]
		if stats == nil {
			stats = &dtypeStats{}
			r.DTypes[string(t.DType)] = stats
		}
		stats.Tensors++
		stats.Parameters += t.NumElements()
		stats.Bytes += t.Size()
		r.Parameters += t.NumElements()
	}
}

// countBytes fills the file sizes. files are relative to dir.
func (r *inspectReport) countBytes(dir string, files []string) error {
	for _, name := range files {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		r.WeightsBytes += info.Size()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		info, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // a dangling symbolic link
			}
			return err
		}
		if info.Mode().IsRegular() {
			r.SizeBytes += info.Size()
		}
	}
	return nil
}

func inspectFile(path string) (*inspectReport, error) {
	f, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	r := &inspectReport{Kind: "safetensors", Path: path, Files: []string{filepath.Base(path)}, WeightsBytes: info.Size(), SizeBytes: info.Size()}
	r.countTensors(f.Tensors())
	return r, nil
}

// inspectModel reports the model in dir with the weights at weights: dir itself, or an
// index or safetensors file in it. path is PATH as given.
func inspectModel(path, dir, weights string) (*inspectReport, error) {
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	m, err := checkpoint.OpenModel(weights)
	if err != nil {
		return nil, err
	}
	defer m.Close()

	r := &inspectReport{Kind: "model", Path: path, Config: modelConfigSummary{ModelType: "qwen3", Config: cfg}}
	r.countTensors(m.Tensors())
	for _, file := range m.Files() {
		r.Files = append(r.Files, filepath.Base(file))
	}
	if filepath.Base(m.Path()) == checkpoint.IndexFileName {
		r.Files = append(r.Files, checkpoint.IndexFileName)
	}
	if err := r.countBytes(dir, r.Files); err != nil {
		return nil, err
	}

	configParams := cfg.NumParams()
	mismatches := configMismatches(cfg, m)
	r.ConfigParameters, r.ConfigMismatches = &configParams, &mismatches
	return r, nil
}

// tiedHeadName is the output head's tensor name. With tie_word_embeddings the embedding
// is the head, and package model ignores an lm_head.weight of the embedding's shape.
const tiedHeadName = "lm_head.weight"

// configMismatches lists, as messages, the tensors that cfg implies but m lacks or
// shapes differently, then the tensors of m that match no parameter of cfg's model.
func configMismatches(cfg model.Config, m *checkpoint.Model) []string {
	mismatches := []string{}
	known := map[string]bool{}
	for _, p := range cfg.Params() {
		known[p.Name] = true
		info, err := m.Info(p.Name)
		switch {
		case err != nil:
			mismatches = append(mismatches, fmt.Sprintf("%s: missing", p.Name))
		case !slices.Equal(info.Shape, p.Shape):
			mismatches = append(mismatches, fmt.Sprintf("%s: shape %v, config.json implies %v", p.Name, info.Shape, p.Shape))
		}
	}
	for _, info := range m.Tensors() {
		switch {
		case known[info.Name]:
		case info.Name == tiedHeadName && cfg.TieWordEmbeddings:
			if head := []int{cfg.VocabSize, cfg.HiddenSize}; !slices.Equal(info.Shape, head) {
				mismatches = append(mismatches, fmt.Sprintf("%s: shape %v, but tie_word_embeddings is true, so it must be the embedding's %v", info.Name, info.Shape, head))
			}
		default:
			mismatches = append(mismatches, fmt.Sprintf("%s: not a parameter of the Qwen3 model that config.json describes (%d layers, tie_word_embeddings %t)",
				info.Name, cfg.NumLayers, cfg.TieWordEmbeddings))
		}
	}
	return mismatches
}

// inspectAdapter reports the adapter in dir. path is PATH as given.
func inspectAdapter(path, dir, baseFlag string) (*inspectReport, error) {
	cfg, err := peft.ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	f, err := peft.OpenWeights(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	weights := f.Path()

	adapter := &adapterReport{}
	base, err := resolveAdapterBase(cfg, baseFlag, adapter)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckTensors(weights, f.Tensors(), base); err != nil {
		return nil, err
	}

	r := &inspectReport{Kind: "adapter", Path: path, Files: []string{peft.WeightsFile}, adapter: adapter}
	r.Config = adapterConfigSummary{
		PEFTType: "LORA", Rank: cfg.Rank, Alpha: cfg.Alpha, Dropout: cfg.Dropout, Scaling: cfg.Scaling(),
		UseRSLoRA: cfg.UseRSLoRA, TargetModules: cfg.TargetModules, ExcludeModules: cfg.ExcludeModules,
		LayersToTransform: cfg.LayersToTransform, BaseModelNameOrPath: nullable(cfg.BaseModelNameOrPath),
		Revision: nullable(cfg.Revision), PEFTVersion: nullable(cfg.PEFTVersion),
	}
	r.countTensors(f.Tensors())
	if err := r.countBytes(dir, r.Files); err != nil {
		return nil, err
	}
	adapter.AdaptedModules = r.Tensors / 2 // CheckTensors ensured that every module has both matrices
	adapter.TrainableParameters = r.Parameters
	if adapter.Base != nil {
		baseParams := float64(adapter.Base.Parameters)
		trainable := float64(adapter.TrainableParameters)
		percent := 100 * trainable / baseParams
		peftPercent := 100 * trainable / (baseParams + trainable)
		adapter.TrainablePercent, adapter.PEFTTrainablePercent = &percent, &peftPercent
	}
	return r, nil
}

// resolveAdapterBase returns the base configuration from --base, or from
// base_model_name_or_path when that is a local model directory, or nil.
func resolveAdapterBase(cfg peft.Config, baseFlag string, adapter *adapterReport) (*model.Config, error) {
	source, path := "--base", baseFlag
	if baseFlag == "" {
		source, path = "base_model_name_or_path", cfg.BaseModelNameOrPath
		if path == "" {
			adapter.baseNote = "base_model_name_or_path is null: pass --base DIR for the shape check and the percentage"
			return nil, nil
		}
		if !fileExists(filepath.Join(path, model.ConfigFile)) {
			adapter.baseNote = fmt.Sprintf("%s is not a local model directory: pass --base DIR for the shape check and the percentage", path)
			return nil, nil
		}
	}
	base, err := model.ResolveConfig(path)
	if err != nil {
		return nil, fmt.Errorf("base model from %s: %w", source, err)
	}
	adapter.Base = &baseSummary{Source: source, Path: path, Parameters: base.NumParams()}
	return &base, nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func printInspect(w io.Writer, r *inspectReport) {
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-11s %s\n", label, fmt.Sprintf(format, args...))
	}
	row(r.Kind, "%s", r.Path)
	switch cfg := r.Config.(type) {
	case modelConfigSummary:
		tied := "separate lm_head"
		if cfg.TieWordEmbeddings {
			tied = "tied embeddings"
		}
		row("config", "%s: %d layers, hidden %d, intermediate %d, %d heads (%d key/value) of %d, vocab %d, %s",
			cfg.ModelType, cfg.NumLayers, cfg.HiddenSize, cfg.IntermediateSize, cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim, cfg.VocabSize, tied)
	case adapterConfigSummary:
		formula := "lora_alpha / r"
		if cfg.UseRSLoRA {
			formula = "lora_alpha / sqrt(r), use_rslora"
		}
		row("config", "LoRA r=%d, lora_alpha=%g, scaling %g (%s), lora_dropout %g", cfg.Rank, cfg.Alpha, cfg.Scaling, formula, cfg.Dropout)
		row("targets", "%s", strings.Join(cfg.TargetModules, ", "))
		if len(cfg.ExcludeModules) > 0 {
			row("excludes", "%s", strings.Join(cfg.ExcludeModules, ", "))
		}
		if cfg.LayersToTransform != nil {
			row("layers", "%v", cfg.LayersToTransform)
		}
	}
	row("files", "%s", strings.Join(r.Files, ", "))
	row("tensors", "%d", r.Tensors)

	switch {
	case r.ConfigParameters != nil:
		row("parameters", "%s (config.json implies %s)", thousands(r.Parameters), thousands(*r.ConfigParameters))
		if len(*r.ConfigMismatches) == 0 {
			row("check", "the weights have every tensor of config.json with its shape, and no other tensors")
		}
		for _, m := range *r.ConfigMismatches {
			row("mismatch", "%s", m)
		}
	case r.adapter != nil:
		a := r.adapter
		row("modules", "%d adapted", a.AdaptedModules)
		if a.Base != nil {
			row("base", "%s (from %s), %s parameters; tensor shapes match it", a.Base.Path, a.Base.Source, thousands(a.Base.Parameters))
			row("trainable", "%s parameters, %.4f%% of the base (PEFT's trainable%%: %.4f)", thousands(a.TrainableParameters), *a.TrainablePercent, *a.PEFTTrainablePercent)
		} else {
			row("base", "%s", a.baseNote)
			row("trainable", "%s parameters", thousands(a.TrainableParameters))
		}
	default:
		row("parameters", "%s", thousands(r.Parameters))
	}

	dtypes := make([]string, 0, len(r.DTypes))
	for d := range r.DTypes {
		dtypes = append(dtypes, d)
	}
	slices.Sort(dtypes)
	for i, d := range dtypes {
		label := ""
		if i == 0 {
			label = "dtypes"
		}
		s := r.DTypes[d]
		row(label, "%-5s %s, %s parameters, %s", d, countNoun(s.Tensors, "tensor", "tensors"), thousands(s.Parameters), humanBytes(s.Bytes))
	}
	row("size", "%s on disk, of which weights %s", humanBytes(r.SizeBytes), humanBytes(r.WeightsBytes))
}

// countNoun formats a count with the singular or plural noun.
func countNoun(n int, singular, plural string) string {
	if n == 1 {
		return "1 " + singular
	}
	return fmt.Sprintf("%d %s", n, plural)
}

// thousands formats n with commas between groups of three digits.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

// humanBytes formats a byte count in binary units with the exact count.
func humanBytes(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	value, unit := float64(n)/1024, units[0]
	for _, u := range units[1:] {
		if value < 1024 {
			break
		}
		value, unit = value/1024, u
	}
	return fmt.Sprintf("%.1f %s (%s bytes)", value, unit, thousands(n))
}
