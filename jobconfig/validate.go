package jobconfig

import (
	"errors"
	"fmt"
	"math"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/model"
)

// maxNodes is the largest world size that Validate accepts.
const maxNodes = 4096

// Validate checks every setting of a resolved Config and returns all problems
// joined, each naming the YAML key, the value and the allowed values. It does not
// check that files exist, because the node reports that when it opens them.
func (c *Config) Validate() error {
	v := &validator{}
	c.validateJob(v)
	c.validateModel(v)
	c.validateLoRA(v)
	c.validateData(v)
	c.validateBatch(v)
	c.validateOptimizer(v)
	c.validateSchedule(v)
	c.validateCluster(v)
	return errors.Join(v.errs...)
}

type validator struct {
	errs []error
}

// fail records that key has an invalid value and what to use instead.
func (v *validator) fail(key string, value any, rule string, args ...any) {
	shown := fmt.Sprint(value)
	if s, ok := value.(string); ok {
		shown = fmt.Sprintf("%q", s)
	}
	v.errs = append(v.errs, fmt.Errorf("%s: %s is invalid: %s", key, shown, fmt.Sprintf(rule, args...)))
}

// failf records a problem that concerns more than one key or a missing value.
func (v *validator) failf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func isFinite(x float64) bool {
	return !math.IsNaN(x) && !math.IsInf(x, 0)
}

func (c *Config) validateJob(v *validator) {
	switch {
	case c.JobID == "":
		v.failf("job_id is missing: set job_id, or load the config from a file whose name gives the default")
	case c.JobID == "." || c.JobID == ".." || strings.ContainsAny(c.JobID, `/\`) ||
		strings.ContainsFunc(c.JobID, unicode.IsControl):
		v.fail("job_id", c.JobID, "use a name without path separators or control characters, because the default output folder is out/<job_id>")
	}
	if c.Output == "" {
		v.failf("output is missing: set the folder for checkpoints and metrics")
	}
	if c.MaxNonFiniteSteps < 1 {
		v.fail("max_nonfinite_steps", c.MaxNonFiniteSteps, "use 1 or more")
	}
}

func (c *Config) validateModel(v *validator) {
	switch c.Mode {
	case "full", "lora":
	case "":
		v.failf("mode is missing: set mode to full (train every weight) or lora (train adapters)")
	default:
		v.fail("mode", c.Mode, "use full or lora")
	}

	if c.Model.Base == "" {
		v.failf("model.base is missing: set a Hugging Face model directory, a config.json path or a preset (%s)", strings.Join(model.PresetNames(), ", "))
	}
	switch c.Model.Init {
	case "pretrained":
	case "random":
		if c.Mode != "full" {
			v.fail("model.init", c.Model.Init, "random initialization needs mode full, but mode is %q", c.Mode)
		}
	default:
		v.fail("model.init", c.Model.Init, "use pretrained or random")
	}
	if c.Model.FrozenBF16 && c.Mode != "lora" {
		v.fail("model.frozen_bf16", true, "bfloat16 frozen weights need mode lora, because trained weights stay fp32")
	}
	c.validateOverrides(v)
}

// validateOverrides checks model.overrides against the json tags of model.Config.
func (c *Config) validateOverrides(v *validator) {
	if len(c.Model.Overrides) == 0 {
		return
	}
	if c.Model.Init != "random" {
		v.failf("model.overrides: overrides need model.init random, because pretrained weights fix the model shape")
	}
	fields := modelConfigFields()
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)

	keys := make([]string, 0, len(c.Model.Overrides))
	for key := range c.Model.Overrides {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		path := "model.overrides." + key
		value := c.Model.Overrides[key]
		kind, ok := fields[key]
		if !ok {
			v.failf("%s: unknown config.json key %q: use one of %s", path, key, strings.Join(names, ", "))
			continue
		}
		if err := checkOverrideValue(kind, value); err != nil {
			v.fail(path, value, "%v", err)
		}
	}
}

// modelConfigFields maps the config.json keys of model.Config to their Go kinds.
func modelConfigFields() map[string]reflect.Kind {
	fields := map[string]reflect.Kind{}
	t := reflect.TypeFor[model.Config]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = t.Field(i).Type.Kind()
		}
	}
	return fields
}

// checkOverrideValue checks that a YAML value fits a model.Config field of kind.
func checkOverrideValue(kind reflect.Kind, value any) error {
	number, isNumber := toFloat(value)
	switch kind {
	case reflect.Int, reflect.Int64:
		if !isNumber || number != math.Trunc(number) || math.Abs(number) > 1<<53 {
			return errors.New("use an integer")
		}
	case reflect.Float64:
		if !isNumber || !isFinite(number) {
			return errors.New("use a finite number")
		}
	case reflect.Bool:
		if _, ok := value.(bool); !ok {
			return errors.New("use true or false")
		}
	default:
		return fmt.Errorf("this key of kind %s cannot be overridden", kind)
	}
	return nil
}

// toFloat converts the numeric types that YAML decoding produces.
func toFloat(value any) (float64, bool) {
	switch x := value.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func (c *Config) validateLoRA(v *validator) {
	if c.Mode != "lora" {
		return
	}
	l := c.LoRA
	ok := true
	if l.Rank < 1 {
		v.fail("lora.rank", l.Rank, "use 1 or more")
		ok = false
	}
	if !(l.Alpha > 0) || !isFinite(l.Alpha) {
		v.fail("lora.alpha", l.Alpha, "use a finite number above 0")
		ok = false
	}
	if !(l.Dropout >= 0 && l.Dropout < 1) {
		v.fail("lora.dropout", l.Dropout, "use a number in [0, 1)")
		ok = false
	}
	if len(l.TargetModules) == 0 {
		v.failf("lora.target_modules is empty: list one or more of %s", strings.Join(model.ProjectionModules(), ", "))
		ok = false
	}
	if !ok {
		return
	}
	// model.LoRAConfig.Validate checks the module names and duplicates.
	if err := c.modelLoRA().Validate(); err != nil {
		v.failf("lora.target_modules: %v", err)
	}
}

func (c *Config) validateData(v *validator) {
	d := c.Data
	if d.Train == "" {
		v.failf("data.train is missing: set the training file (.txt or .jsonl)")
	}
	if d.Eval != "" && d.EvalFraction != 0 {
		v.failf("data.eval and data.eval_fraction are both set: keep data.eval for a separate eval file, or data.eval_fraction to split one off data.train")
	}
	if !(d.EvalFraction >= 0 && d.EvalFraction < 1) {
		v.fail("data.eval_fraction", d.EvalFraction, "use a number in [0, 1)")
	}
	if _, err := data.ParseFormat(d.Format); err != nil {
		v.fail("data.format", d.Format, "use auto, text, alpaca, chat or sharegpt (%v)", err)
	}
	if _, err := data.ParsePacking(d.Packing); err != nil {
		v.fail("data.packing", d.Packing, "use auto, on or off (%v)", err)
	}
	if d.SeqLen < 2 {
		v.fail("data.seq_len", d.SeqLen, "use 2 or more tokens, because each row needs an input and a target")
	}
}

func (c *Config) validateBatch(v *validator) {
	if c.Batch.MicroBatchSize < 1 {
		v.fail("batch.micro_batch_size", c.Batch.MicroBatchSize, "use 1 or more rows")
	}
	if c.Batch.GradAccumSteps < 1 {
		v.fail("batch.grad_accum_steps", c.Batch.GradAccumSteps, "use 1 or more micro-batches")
	}
	if c.Eval.BatchSize < 1 {
		v.fail("eval.batch_size", c.Eval.BatchSize, "use 1 or more rows")
	}
	if c.Eval.MaxBatches < 0 {
		v.fail("eval.max_batches", c.Eval.MaxBatches, "use 0 (every row) or more")
	}
	if c.Eval.EverySteps < 0 {
		v.fail("eval.every_steps", c.Eval.EverySteps, "use 0 (only after the last step) or more")
	}
	if c.Checkpoint.EverySteps < 0 {
		v.fail("checkpoint.every_steps", c.Checkpoint.EverySteps, "use 0 (only after the last step) or more")
	}
	if c.Checkpoint.Keep != nil && *c.Checkpoint.Keep < 0 {
		v.fail("checkpoint.keep", *c.Checkpoint.Keep, "use 0 (keep all) or more")
	}
}

func (c *Config) validateOptimizer(v *validator) {
	o := c.Optimizer
	if !(o.LR > 0) || !isFinite(o.LR) {
		v.fail("optimizer.lr", o.LR, "use a finite number above 0")
	}
	ok := true
	if !(o.Beta1 >= 0 && o.Beta1 < 1) {
		v.fail("optimizer.beta1", o.Beta1, "use a number in [0, 1)")
		ok = false
	}
	if !(o.Beta2 >= 0 && o.Beta2 < 1) {
		v.fail("optimizer.beta2", o.Beta2, "use a number in [0, 1)")
		ok = false
	}
	if !(o.Eps >= 0) || !isFinite(o.Eps) {
		v.fail("optimizer.eps", o.Eps, "use a finite number, 0 or above")
		ok = false
	}
	if !(o.WeightDecay >= 0) || !isFinite(o.WeightDecay) {
		v.fail("optimizer.weight_decay", o.WeightDecay, "use a finite number, 0 or above")
		ok = false
	}
	if ok {
		// model.AdamWConfig.Validate is the optimizer's own check, so a rule added
		// there applies here too.
		if err := c.AdamW().Validate(); err != nil {
			v.failf("optimizer: %v", err)
		}
	}
	if o.MaxGradNorm != nil && (!(*o.MaxGradNorm >= 0) || !isFinite(*o.MaxGradNorm)) {
		v.fail("optimizer.max_grad_norm", *o.MaxGradNorm, "use a finite number, or 0 to turn clipping off")
	}
}

func (c *Config) validateSchedule(v *validator) {
	s := c.Schedule
	if s.Steps < 0 {
		v.fail("schedule.steps", s.Steps, "use 0 (train for schedule.epochs) or more")
	}
	if !(s.Epochs >= 0) || !isFinite(s.Epochs) {
		v.fail("schedule.epochs", s.Epochs, "use a finite number, 0 or above (0 means one epoch)")
	}
	if s.Steps > 0 && s.Epochs > 0 {
		v.failf("schedule.steps (%d) and schedule.epochs (%v) are both set: keep one of them (to replace one by a flag, pass 0 for the other, such as --schedule-epochs 0)", s.Steps, s.Epochs)
	}
	if s.WarmupSteps < 0 {
		v.fail("schedule.warmup_steps", s.WarmupSteps, "use 0 or more")
	}
	if !(s.WarmupRatio >= 0 && s.WarmupRatio < 1) {
		v.fail("schedule.warmup_ratio", s.WarmupRatio, "use a number in [0, 1)")
	}
	if s.WarmupSteps > 0 && s.WarmupRatio > 0 {
		v.failf("schedule.warmup_steps (%d) and schedule.warmup_ratio (%v) are both set: keep one of them", s.WarmupSteps, s.WarmupRatio)
	}
	if s.Steps > 0 && s.WarmupSteps > s.Steps {
		v.fail("schedule.warmup_steps", s.WarmupSteps, "use at most schedule.steps (%d)", s.Steps)
	}
	if s.MinLRRatio != nil && !(*s.MinLRRatio >= 0 && *s.MinLRRatio <= 1) {
		v.fail("schedule.min_lr_ratio", *s.MinLRRatio, "use a number in [0, 1]")
	}
}

func (c *Config) validateCluster(v *validator) {
	cl := c.Cluster
	if cl.Nodes < 1 || cl.Nodes > maxNodes {
		v.fail("cluster.nodes", cl.Nodes, "use 1 to %d", maxNodes)
	}
	if !(cl.BucketMB > 0) || !isFinite(cl.BucketMB) {
		v.fail("cluster.bucket_mb", cl.BucketMB, "use a finite number of MiB above 0")
	}
	if _, err := collective.ParseWireDType(cl.WireDType); err != nil {
		v.fail("cluster.wire_dtype", cl.WireDType, "use fp32 or bf16")
	}
	if d, err := time.ParseDuration(cl.JoinTimeout); err != nil || d <= 0 {
		v.fail("cluster.join_timeout", cl.JoinTimeout, "use a Go duration above 0, such as 90s or 5m")
	}
	if cl.MaxRestarts < 0 {
		v.fail("cluster.max_restarts", cl.MaxRestarts, "use 0 (a lost node fails the job) or a positive count")
	}
	if cl.Coordinator != "" {
		if _, _, err := net.SplitHostPort(cl.Coordinator); err != nil {
			v.fail("cluster.coordinator", cl.Coordinator, "use host:port, such as 10.0.0.1:29400 (%v)", err)
		}
	}
}
