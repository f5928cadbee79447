package jobconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/model"
	"go.yaml.in/yaml/v3"
)

// Defaults of the settings that Default fills in before decoding and Resolve fills
// in where they are still unset.
const (
	defaultInit              = "pretrained"
	defaultFormat            = "auto"
	defaultPacking           = "auto"
	defaultSeqLen            = 512
	defaultMicroBatchSize    = 4
	defaultLR                = 1e-4
	defaultMaxGradNorm       = 1.0
	defaultMinLRRatio        = 0.1
	defaultKeepCheckpoints   = 2
	defaultNodes             = 1
	defaultBucketMB          = 25
	defaultWireDType         = "fp32"
	defaultJoinTimeout       = "5m"
	defaultCoordinator       = "127.0.0.1:29400"
	defaultMaxNonFiniteSteps = 3
)

// Default returns a Config with the default of every setting that has one. Load
// decodes the YAML file over it, so a key that the file leaves out keeps its
// default and a key that the file sets to 0 or false keeps that value. Mode,
// Model.Base and Data.Train have no default.
func Default() *Config {
	lora := model.DefaultLoRA()
	adamw := model.DefaultAdamW()
	shuffle := true
	maxGradNorm := defaultMaxGradNorm
	minLRRatio := defaultMinLRRatio
	keep := defaultKeepCheckpoints
	return &Config{
		Model: ModelConfig{Init: defaultInit},
		LoRA: LoRAConfig{
			Rank:          lora.Rank,
			Alpha:         lora.Alpha,
			Dropout:       lora.Dropout,
			TargetModules: slices.Clone(lora.TargetModules),
		},
		Data: DataConfig{
			Format:  defaultFormat,
			SeqLen:  defaultSeqLen,
			Packing: defaultPacking,
			Shuffle: &shuffle,
		},
		Batch: BatchConfig{MicroBatchSize: defaultMicroBatchSize, GradAccumSteps: 1},
		Optimizer: OptimizerConfig{
			LR:          defaultLR,
			WeightDecay: adamw.WeightDecay,
			Beta1:       adamw.Beta1,
			Beta2:       adamw.Beta2,
			Eps:         adamw.Eps,
			MaxGradNorm: &maxGradNorm,
		},
		Schedule:   ScheduleConfig{MinLRRatio: &minLRRatio},
		Checkpoint: CheckpointConfig{Keep: &keep},
		Cluster: ClusterConfig{
			Nodes:       defaultNodes,
			BucketMB:    defaultBucketMB,
			WireDType:   defaultWireDType,
			JoinTimeout: defaultJoinTimeout,
			Coordinator: defaultCoordinator,
		},
		MaxNonFiniteSteps: defaultMaxNonFiniteSteps,
	}
}

// Load reads the config file at path, decodes it with Parse and resolves it. Call
// Validate on the result before using it.
func Load(path string) (*Config, error) {
	content, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(content, path)
}

func readConfigFile(path string) ([]byte, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the job config: %w", err)
	}
	return content, nil
}

// Parse decodes a YAML job config strictly over Default, then resolves defaults and
// relative paths with Resolve against the directory of path. path also names the
// file in errors and gives the default JobID. Call Validate on the result.
func Parse(content []byte, path string) (*Config, error) {
	cfg, err := decode(content, path)
	if err != nil {
		return nil, err
	}
	if err := cfg.Resolve(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decode decodes content over Default without resolving it.
func decode(content []byte, path string) (*Config, error) {
	name := path
	if name == "" {
		name = "job config"
	}

	var root yaml.Node
	if err := yaml.Unmarshal(content, &root); err != nil {
		return nil, rewriteYAMLError(name, nil, err)
	}
	if len(root.Content) == 0 || root.Content[0].Tag == "!!null" {
		return nil, fmt.Errorf("%s: the job config is empty: write a YAML mapping with at least mode, model.base and data.train (see examples/lora.yaml)", name)
	}
	if top := root.Content[0]; top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the job config must be a YAML mapping of keys such as mode, model and data, but it is %s", name, top.Line, nodeKindName(top))
	}

	cfg := Default()
	decoder := yaml.NewDecoder(bytes.NewReader(content))
	decoder.KnownFields(true)
	if err := decoder.Decode(cfg); err != nil {
		return nil, rewriteYAMLError(name, &root, err)
	}
	var next yaml.Node
	if err := decoder.Decode(&next); !errors.Is(err, io.EOF) {
		line := next.Line
		if err != nil {
			return nil, rewriteYAMLError(name, nil, err)
		}
		return nil, fmt.Errorf("%s:%d: the file contains a second YAML document: keep the whole job config in one document and remove the extra \"---\" line", name, line)
	}
	cfg.path = path
	return cfg, nil
}

func nodeKindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the scalar %q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "not a mapping"
}

var (
	syntaxErrorPattern  = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	lineErrorPattern    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownFieldPattern = regexp.MustCompile(`^field (.+) not found in type (\S+)$`)
	typeErrorPattern    = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// rewriteYAMLError turns an error of package yaml into lines of the form
// FILE:LINE: message, naming config keys instead of Go types. root, when not nil,
// is the parsed document, which gives the key at a line.
func rewriteYAMLError(name string, root *yaml.Node, err error) error {
	var typeErr *yaml.TypeError
	if !errors.As(err, &typeErr) {
		message := err.Error()
		if m := syntaxErrorPattern.FindStringSubmatch(message); m != nil {
			return fmt.Errorf("%s:%s: invalid YAML: %s", name, m[1], m[2])
		}
		return fmt.Errorf("%s: invalid YAML: %s", name, strings.TrimPrefix(message, "yaml: "))
	}

	configLeaves() // fills sections
	keys := keysByLine(root)
	lines := make([]string, 0, len(typeErr.Errors))
	for _, e := range typeErr.Errors {
		m := lineErrorPattern.FindStringSubmatch(e)
		if m == nil {
			lines = append(lines, fmt.Sprintf("%s: %s", name, e))
			continue
		}
		lines = append(lines, fmt.Sprintf("%s:%s: %s", name, m[1], describeDecodeError(m[2], keys[m[1]])))
	}
	return errors.New(strings.Join(lines, "\n"))
}

// describeDecodeError rewrites one message of a yaml.TypeError without its line
// prefix. keysAtLine are the key paths whose values start on that line.
func describeDecodeError(message string, keysAtLine []keyAtLine) string {
	if m := unknownFieldPattern.FindStringSubmatch(message); m != nil {
		return describeUnknownKey(m[1], m[2])
	}
	if m := typeErrorPattern.FindStringSubmatch(message); m != nil {
		key := ""
		for _, k := range keysAtLine {
			if m[2] == "" || k.value == m[2] || strings.HasPrefix(k.value, strings.TrimSuffix(m[2], "...")) {
				key = k.path
				break
			}
		}
		found := tagName(m[1])
		if m[2] != "" {
			found = fmt.Sprintf("%s %q", found, m[2])
		}
		expected := goTypeName(m[3])
		if key == "" {
			return fmt.Sprintf("invalid value: expected %s, found %s", expected, found)
		}
		return fmt.Sprintf("invalid value of %s: expected %s, found %s", key, expected, found)
	}
	return message
}

// describeUnknownKey explains a key that no field of the section has.
func describeUnknownKey(key, goType string) string {
	var sectionType reflect.Type
	section := ""
	for t, path := range sections {
		if t.String() == goType {
			sectionType, section = t, path
		}
	}
	if sectionType == nil {
		return fmt.Sprintf("unknown key %q in %s", key, goType)
	}
	where := "at the top level"
	if section != "" {
		where = "in " + section
	}
	keys := sectionKeys(sectionType)
	message := fmt.Sprintf("unknown key %q %s", key, where)
	if suggestion := closestKey(key, keys); suggestion != "" {
		message += fmt.Sprintf(": did you mean %q?", suggestion)
	}
	return message + fmt.Sprintf(" The keys allowed there are %s.", strings.Join(keys, ", "))
}

func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "the string"
	case "!!int":
		return "the integer"
	case "!!float":
		return "the number"
	case "!!bool":
		return "the boolean"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!null":
		return "null"
	}
	return tag
}

// goTypeName names a Go type in the words of a YAML user.
func goTypeName(goType string) string {
	switch goType {
	case "int", "*int":
		return "an integer"
	case "uint64":
		return "an integer of 0 or more"
	case "float64", "*float64":
		return "a number"
	case "bool", "*bool":
		return "true or false"
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	case "map[string]interface {}":
		return "a mapping of config.json keys to values"
	}
	for t, path := range sections {
		if t.String() == goType {
			if path == "" {
				return "a mapping of job config keys"
			}
			return "a mapping of the keys of " + path
		}
	}
	return goType
}

type keyAtLine struct {
	path  string
	value string
}

// keysByLine indexes the key paths of a parsed document by the line, as a decimal
// string, where each value starts.
func keysByLine(root *yaml.Node) map[string][]keyAtLine {
	keys := map[string][]keyAtLine{}
	if root == nil || len(root.Content) == 0 {
		return keys
	}
	var walk func(n *yaml.Node, prefix string, depth int)
	walk = func(n *yaml.Node, prefix string, depth int) {
		// The depth bound keeps deeply nested or aliased input from recursing without end.
		if n == nil || n.Kind != yaml.MappingNode || depth > 8 {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := n.Content[i], n.Content[i+1]
			path := key.Value
			if prefix != "" {
				path = prefix + "." + key.Value
			}
			line := fmt.Sprint(value.Line)
			keys[line] = append(keys[line], keyAtLine{path: path, value: value.Value})
			walk(value, path, depth+1)
		}
	}
	walk(root.Content[0], "", 0)
	return keys
}

// Resolve fills in the defaults that depend on other settings and makes relative
// paths absolute against configDir ("" means the current directory). It lower-cases
// the names of modes and formats and replaces aliases by canonical names, so that
// equal settings hash equal. Resolve leaves paths that are already absolute as they
// are, so apply flags and --set (which resolve their paths against the current
// directory) before it. Calling Resolve again changes nothing.
func (c *Config) Resolve(configDir string) error {
	dir, err := filepath.Abs(configDir)
	if err != nil {
		return fmt.Errorf("resolve the job config directory %q: %w", configDir, err)
	}

	c.normalizeNames()
	if c.JobID == "" && c.path != "" {
		base := filepath.Base(c.path)
		c.JobID = strings.TrimSuffix(base, filepath.Ext(base))
	}
	c.fillUnsetDefaults()

	c.Model.Base = resolveBase(c.Model.Base, dir)
	c.Model.Tokenizer = resolvePath(c.Model.Tokenizer, dir)
	c.Data.Train = resolvePath(c.Data.Train, dir)
	c.Data.Eval = resolvePath(c.Data.Eval, dir)
	c.Output = resolvePath(c.Output, dir)

	if c.Model.Tokenizer == "" && isDirectory(c.Model.Base) {
		c.Model.Tokenizer = c.Model.Base
	}
	if c.Output == "" && c.JobID != "" {
		c.Output = filepath.Join(dir, "out", c.JobID)
	}
	return nil
}

// normalizeNames lower-cases enumerated settings and maps aliases to the names
// that the parsing functions of the other packages return.
func (c *Config) normalizeNames() {
	c.Mode = strings.ToLower(strings.TrimSpace(c.Mode))
	c.Model.Init = strings.ToLower(strings.TrimSpace(c.Model.Init))
	c.Data.Format = strings.ToLower(strings.TrimSpace(c.Data.Format))
	c.Data.Packing = strings.ToLower(strings.TrimSpace(c.Data.Packing))
	c.Cluster.WireDType = strings.ToLower(strings.TrimSpace(c.Cluster.WireDType))

	if format, err := data.ParseFormat(c.Data.Format); err == nil && format != data.FormatAuto {
		c.Data.Format = string(format)
	}
	if dtype, err := collective.ParseWireDType(c.Cluster.WireDType); err == nil {
		c.Cluster.WireDType = dtype.String()
	}
}

// fillUnsetDefaults sets empty names and nil pointers, which a YAML null or an
// empty string leaves, to their defaults. Numbers keep their values, because 0 is
// a valid setting of many of them and Validate rejects the others.
func (c *Config) fillUnsetDefaults() {
	setIfEmpty := func(s *string, value string) {
		if *s == "" {
			*s = value
		}
	}
	setIfEmpty(&c.Model.Init, defaultInit)
	setIfEmpty(&c.Data.Format, defaultFormat)
	setIfEmpty(&c.Data.Packing, defaultPacking)
	setIfEmpty(&c.Cluster.WireDType, defaultWireDType)
	setIfEmpty(&c.Cluster.JoinTimeout, defaultJoinTimeout)
	setIfEmpty(&c.Cluster.Coordinator, defaultCoordinator)

	defaults := Default()
	if c.Data.Shuffle == nil {
		c.Data.Shuffle = defaults.Data.Shuffle
	}
	if c.Optimizer.MaxGradNorm == nil {
		c.Optimizer.MaxGradNorm = defaults.Optimizer.MaxGradNorm
	}
	if c.Schedule.MinLRRatio == nil {
		c.Schedule.MinLRRatio = defaults.Schedule.MinLRRatio
	}
	if c.Checkpoint.Keep == nil {
		c.Checkpoint.Keep = defaults.Checkpoint.Keep
	}
	if c.Eval.BatchSize == 0 {
		c.Eval.BatchSize = c.Batch.MicroBatchSize
	}
}

// resolveBase makes Base absolute against dir unless it is a preset name, which
// model.ResolveConfig matches before paths. A name with a path separator is
// always a path.
func resolveBase(base, dir string) string {
	if base == "" || filepath.IsAbs(base) {
		return base
	}
	if !strings.ContainsAny(base, `/\`) && isPreset(base) {
		return base
	}
	return filepath.Join(dir, base)
}

func isPreset(name string) bool {
	return slices.Contains(model.PresetNames(), strings.ToLower(name))
}

func resolvePath(path, dir string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

func isDirectory(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}
