package jobconfig

import (
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"
)

// SetFlag is the repeatable flag that sets any config key by its YAML path.
const SetFlag = "set"

// flagDescriptions is the usage text of each leaf flag, keyed by YAML path.
var flagDescriptions = map[string]string{
	"job_id":                         "job name in logs, metrics and collective frames (default: the config file name without extension)",
	"seed":                           "seed of weight initialization, data order and eval split",
	"model.base":                     "Hugging Face model directory, config.json path or preset name",
	"model.init":                     "weight initialization: pretrained (load model.base) or random (full mode only)",
	"model.tokenizer":                "folder with tokenizer.json (default: model.base when it is a directory)",
	"model.frozen_bf16":              "store frozen weights in bfloat16 (lora mode only)",
	"model.activation_checkpointing": "recompute activations in backward to save memory",
	"mode":                           "training mode: full or lora",
	"lora.rank":                      "LoRA rank r (default 8)",
	"lora.alpha":                     "LoRA alpha, scaling the adapter output by alpha/r (default 16)",
	"lora.dropout":                   "dropout probability on the adapter input, in [0, 1) (default 0)",
	"lora.target_modules":            "comma-separated projections that get adapters (default q_proj,k_proj,v_proj,o_proj)",
	"data.train":                     "training data file (.txt or .jsonl)",
	"data.eval":                      "separate eval data file",
	"data.eval_fraction":             "fraction of data.train held out for eval, in [0, 1)",
	"data.format":                    "record format: auto, text, alpaca, chat or sharegpt",
	"data.seq_len":                   "row length in tokens (default 512)",
	"data.packing":                   "pack several examples per row: auto, on or off",
	"data.train_on_all":              "train on prompt tokens too instead of masking them",
	"data.skip_invalid":              "skip invalid records with a warning instead of failing",
	"data.shuffle":                   "shuffle the rows every epoch (default true)",
	"batch.micro_batch_size":         "rows per forward and backward pass on one rank (default 4)",
	"batch.grad_accum_steps":         "micro-batches per optimizer step (default 1)",
	"optimizer.lr":                   "peak learning rate (default 1e-4)",
	"optimizer.weight_decay":         "AdamW decoupled weight decay (default 0)",
	"optimizer.beta1":                "AdamW beta1 (default 0.9)",
	"optimizer.beta2":                "AdamW beta2 (default 0.999)",
	"optimizer.eps":                  "AdamW epsilon (default 1e-8)",
	"optimizer.max_grad_norm":        "clip the global gradient norm to this value, 0 to turn clipping off (default 1)",
	"schedule.steps":                 "number of optimizer steps (set this or schedule.epochs)",
	"schedule.epochs":                "number of epochs, may be fractional (default 1 when schedule.steps is 0)",
	"schedule.warmup_steps":          "optimizer steps of linear warmup",
	"schedule.warmup_ratio":          "warmup as a fraction of the total steps, in [0, 1)",
	"schedule.min_lr_ratio":          "floor of the cosine decay as a fraction of the peak learning rate (default 0.1)",
	"eval.every_steps":               "evaluate every this many steps and after the last, 0 only after the last",
	"eval.at_start":                  "also evaluate before the first step of a new run",
	"eval.max_batches":               "eval micro-batches per rank, 0 for every row",
	"eval.batch_size":                "rows per eval micro-batch (default: batch.micro_batch_size)",
	"checkpoint.every_steps":         "checkpoint every this many steps and after the last, 0 only after the last",
	"checkpoint.keep":                "number of most recent checkpoints to keep, 0 keeps all (default 2)",
	"cluster.nodes":                  "number of nodes in the job, the world size (default 1)",
	"cluster.bucket_mb":              "largest gradient bucket in MiB of fp32 gradients (default 25)",
	"cluster.wire_dtype":             "gradient element type on the wire: fp32 or bf16 (default fp32)",
	"cluster.join_timeout":           "time limit of the rendezvous, and of re-forming the ring after a lost node, as a Go duration (default 5m)",
	"cluster.max_restarts":           "times the ring may re-form after a lost node; 0 fails the job at the first lost node (default 0)",
	"cluster.coordinator":            "host:port of the coordinator for nodes started by hand (default 127.0.0.1:29400)",
	"output":                         "folder for metrics, checkpoints and the final model (default out/<job_id> next to the config)",
	"max_nonfinite_steps":            "stop after this many steps in a row with a non-finite loss or gradient norm (default 3)",
}

// flagName returns the flag of a YAML key path: optimizer.lr becomes optimizer-lr.
func flagName(path string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(path)
}

// flagLeaves returns the leaves that have a flag, which are all but the maps.
func flagLeaves() []leaf {
	var leaves []leaf
	for _, l := range configLeaves() {
		if l.typ.Kind() != reflect.Map {
			leaves = append(leaves, l)
		}
	}
	return leaves
}

// Flags returns one flag per config key, named by flagName, and the repeatable
// --set key.path=value. Only flags given on the command line override the file.
func Flags() []cli.Flag {
	var flags []cli.Flag
	for _, l := range flagLeaves() {
		name := flagName(l.path)
		usage := fmt.Sprintf("%s (config key %s)", flagDescriptions[l.path], l.path)
		category := "Job config"
		switch l.typ.Kind() {
		case reflect.String:
			flags = append(flags, &cli.StringFlag{Name: name, Usage: usage, Category: category, TakesFile: l.isPath()})
		case reflect.Int:
			flags = append(flags, &cli.IntFlag{Name: name, Usage: usage, Category: category})
		case reflect.Uint64:
			flags = append(flags, &cli.Uint64Flag{Name: name, Usage: usage, Category: category})
		case reflect.Float64:
			flags = append(flags, &cli.Float64Flag{Name: name, Usage: usage, Category: category})
		case reflect.Bool:
			flags = append(flags, &cli.BoolFlag{Name: name, Usage: usage, Category: category})
		case reflect.Slice:
			flags = append(flags, &cli.StringSliceFlag{Name: name, Usage: usage, Category: category})
		case reflect.Pointer:
			switch l.typ.Elem().Kind() {
			case reflect.Bool:
				flags = append(flags, &cli.BoolFlag{Name: name, Usage: usage, Category: category})
			case reflect.Int:
				flags = append(flags, &cli.IntFlag{Name: name, Usage: usage, Category: category})
			case reflect.Float64:
				flags = append(flags, &cli.Float64Flag{Name: name, Usage: usage, Category: category})
			default:
				panic(fmt.Sprintf("jobconfig: no flag type for %s of type %s", l.path, l.typ))
			}
		default:
			panic(fmt.Sprintf("jobconfig: no flag type for %s of type %s", l.path, l.typ))
		}
	}
	for _, f := range flags {
		setDefaultText(f)
	}
	flags = append(flags, &cli.StringSliceFlag{
		Name:     SetFlag,
		Usage:    "set a config key by its YAML path, such as --set optimizer.lr=2e-4 or --set model.overrides.hidden_size=128 (repeatable, applied after the other flags)",
		Category: "Job config",
	})
	return flags
}

// defaultPhrase matches the "(default X)" of a flag description.
var defaultPhrase = regexp.MustCompile(`\s*\(default:? ([^)]*)\)`)

// setDefaultText moves a description's "(default X)" into the flag's
// DefaultText, so that help shows the config default once, instead of beside
// the zero value that the flag itself starts from.
func setDefaultText(f cli.Flag) {
	var usage, text *string
	switch f := f.(type) {
	case *cli.StringFlag:
		usage, text = &f.Usage, &f.DefaultText
	case *cli.IntFlag:
		usage, text = &f.Usage, &f.DefaultText
	case *cli.Uint64Flag:
		usage, text = &f.Usage, &f.DefaultText
	case *cli.Float64Flag:
		usage, text = &f.Usage, &f.DefaultText
	case *cli.BoolFlag:
		usage, text = &f.Usage, &f.DefaultText
	case *cli.StringSliceFlag:
		usage, text = &f.Usage, &f.DefaultText
	default:
		return
	}
	if m := defaultPhrase.FindStringSubmatch(*usage); m != nil {
		*text = m[1]
		*usage = defaultPhrase.ReplaceAllString(*usage, "")
	}
}

// ApplyFlags copies the config flags that the command line set into cfg, then
// applies each --set in order. Relative paths from flags are made absolute against
// the current directory. Call it before Resolve.
func ApplyFlags(c *cli.Context, cfg *Config) error {
	for _, l := range flagLeaves() {
		name := flagName(l.path)
		if !c.IsSet(name) {
			continue
		}
		field := reflect.ValueOf(cfg).Elem().FieldByIndex(l.index)
		var value any
		switch kind := l.typ.Kind(); {
		case kind == reflect.String:
			value = c.String(name)
		case kind == reflect.Int, kind == reflect.Pointer && l.typ.Elem().Kind() == reflect.Int:
			value = c.Int(name)
		case kind == reflect.Uint64:
			value = c.Uint64(name)
		case kind == reflect.Float64, kind == reflect.Pointer && l.typ.Elem().Kind() == reflect.Float64:
			value = c.Float64(name)
		case kind == reflect.Bool, kind == reflect.Pointer && l.typ.Elem().Kind() == reflect.Bool:
			value = c.Bool(name)
		case kind == reflect.Slice:
			value = trimList(c.StringSlice(name))
		}
		if err := setField(field, l, value); err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
	}

	for _, assignment := range joinSetValues(c.StringSlice(SetFlag)) {
		if err := cfg.Set(assignment); err != nil {
			return fmt.Errorf("--%s %s: %w", SetFlag, assignment, err)
		}
	}
	return nil
}

// Set applies one key.path=value assignment, the argument of --set. Numbers and
// booleans are parsed as YAML scalars, lists as comma-separated strings or a YAML
// flow list, and model.overrides.KEY takes any YAML scalar. Relative paths are made
// absolute against the current directory.
func (c *Config) Set(assignment string) error {
	key, text, ok := strings.Cut(assignment, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return fmt.Errorf("expected key.path=value, such as optimizer.lr=2e-4")
	}

	if name, isOverride := strings.CutPrefix(key, "model.overrides."); isOverride {
		if name == "" || strings.Contains(name, ".") {
			return fmt.Errorf("expected model.overrides.KEY=VALUE with a config.json key, such as model.overrides.hidden_size=128")
		}
		var value any
		if err := yaml.Unmarshal([]byte(text), &value); err != nil || value == nil {
			return fmt.Errorf("invalid value %q for %s: use a number, or true or false", text, key)
		}
		if c.Model.Overrides == nil {
			c.Model.Overrides = map[string]any{}
		}
		c.Model.Overrides[name] = value
		return nil
	}

	l, found := findLeaf(key)
	if !found || l.typ.Kind() == reflect.Map {
		return unknownKeyError(key)
	}
	value, err := parseValue(l, text)
	if err != nil {
		return fmt.Errorf("invalid value %q for %s: %w", text, key, err)
	}
	return setField(reflect.ValueOf(c).Elem().FieldByIndex(l.index), l, value)
}

// unknownKeyError names the keys of the section that key points into, or the
// sections when its first part is not one.
func unknownKeyError(key string) error {
	if key == "model.overrides" {
		return fmt.Errorf("set one override at a time: model.overrides.KEY=VALUE")
	}
	var all []string
	for _, l := range flagLeaves() {
		all = append(all, l.path)
	}
	section, _, _ := strings.Cut(key, ".")
	var candidates []string
	for _, path := range all {
		if strings.HasPrefix(path, section+".") {
			candidates = append(candidates, path)
		}
	}
	if len(candidates) == 0 {
		candidates = all
	}
	message := fmt.Sprintf("unknown config key %q", key)
	if suggestion := closestKey(key, all); suggestion != "" {
		message += fmt.Sprintf(": did you mean %q?", suggestion)
	}
	return fmt.Errorf("%s The keys are %s, and model.overrides.KEY", message, strings.Join(candidates, ", "))
}

// parseValue converts the text of a --set assignment to the Go type of the leaf.
func parseValue(l leaf, text string) (any, error) {
	kind := l.typ.Kind()
	if kind == reflect.Pointer {
		kind = l.typ.Elem().Kind()
	}
	switch kind {
	case reflect.String:
		return text, nil
	case reflect.Slice:
		trimmed := strings.TrimSpace(text)
		if strings.HasPrefix(trimmed, "[") {
			var list []string
			if err := yaml.Unmarshal([]byte(trimmed), &list); err != nil {
				return nil, fmt.Errorf("use a comma-separated list or a YAML flow list: %v", err)
			}
			return list, nil
		}
		if trimmed == "" {
			return []string{}, nil
		}
		return trimList(strings.Split(trimmed, ",")), nil
	}

	target := reflect.New(reflect.TypeFor[int]())
	switch kind {
	case reflect.Uint64:
		target = reflect.New(reflect.TypeFor[uint64]())
	case reflect.Float64:
		target = reflect.New(reflect.TypeFor[float64]())
	case reflect.Bool:
		target = reflect.New(reflect.TypeFor[bool]())
	}
	if strings.TrimSpace(text) == "" {
		return nil, fmt.Errorf("the value is empty: use %s", goTypeName(target.Elem().Type().String()))
	}
	if err := yaml.Unmarshal([]byte(text), target.Interface()); err != nil {
		return nil, fmt.Errorf("use %s", goTypeName(target.Elem().Type().String()))
	}
	return target.Elem().Interface(), nil
}

// setField stores value, of the leaf's type or its pointer's element type, in
// field. Relative paths become absolute against the current directory.
func setField(field reflect.Value, l leaf, value any) error {
	if l.isPath() {
		path := value.(string)
		workingDir, err := filepath.Abs(".")
		if err != nil {
			return fmt.Errorf("resolve %q against the current directory: %w", path, err)
		}
		if l.path == "model.base" {
			value = resolveBase(path, workingDir)
		} else {
			value = resolvePath(path, workingDir)
		}
	}
	v := reflect.ValueOf(value)
	if l.typ.Kind() == reflect.Pointer {
		pointer := reflect.New(l.typ.Elem())
		pointer.Elem().Set(v)
		field.Set(pointer)
		return nil
	}
	field.Set(v)
	return nil
}

// joinSetValues undoes the comma split of cli.StringSliceFlag inside a --set value:
// a part without "=" continues the assignment before it, so that
// --set lora.target_modules=q_proj,v_proj stays one assignment.
func joinSetValues(parts []string) []string {
	var assignments []string
	for _, part := range parts {
		if len(assignments) > 0 && !strings.Contains(part, "=") {
			assignments[len(assignments)-1] += "," + part
			continue
		}
		assignments = append(assignments, part)
	}
	return assignments
}

// trimList trims spaces around list items and drops empty ones.
func trimList(items []string) []string {
	out := make([]string, 0, len(items))
	for _, item := range items {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return slices.Clip(out)
}

// LoadWithFlags loads the config file at path (or starts from Default when path
// is ""), applies the flags and --set assignments of c, resolves defaults and
// relative paths, and validates the result. Paths in the file are relative to the
// file, paths in flags to the current directory.
func LoadWithFlags(c *cli.Context, path string) (*Config, error) {
	cfg := Default()
	if path != "" {
		content, err := readConfigFile(path)
		if err != nil {
			return nil, err
		}
		if cfg, err = decode(content, path); err != nil {
			return nil, err
		}
	}
	if err := ApplyFlags(c, cfg); err != nil {
		return nil, err
	}
	configDir := ""
	if path != "" {
		configDir = filepath.Dir(path)
	}
	if err := cfg.Resolve(configDir); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid job config:\n%w", err)
	}
	return cfg, nil
}
