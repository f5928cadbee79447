package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/internal/atomicfile"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

// Files of a checkpoint folder, next to the model (full mode: config.json and
// model.safetensors) or the adapter (LoRA mode: adapter_config.json and
// adapter_model.safetensors).
const (
	optimizerFile    = "optimizer.safetensors"
	trainerStateFile = "trainer_state.json"
	checkpointsDir   = "checkpoints"
	checkpointPrefix = "step-"
	// trainerStateFormat changes when trainer_state.json changes incompatibly.
	trainerStateFormat = 1
)

// TrainerState is the part of a checkpoint that is not a tensor: the position of the run,
// so that a resumed run continues with the same data order, dropout
// masks and learning rate.
type TrainerState struct {
	Format int `json:"format"`
	// Step is the last completed optimizer step.
	Step int `json:"step"`
	// Sampler is the data position after Step, the same on every rank.
	Sampler data.SamplerState `json:"sampler"`
	// DropoutStep is the model's LoRA dropout step after Step.
	DropoutStep uint64 `json:"dropout_step"`
	// ConsecutiveSkips counts the non-finite steps in a row up to Step.
	ConsecutiveSkips int `json:"consecutive_skips"`
	// OptimizerStep is the AdamW step count after Step, which differs from Step
	// after skipped updates. Checkpoints carry it in the optimizer state too.
	OptimizerStep int `json:"optimizer_step,omitempty"`
	// Loss is the mean loss of Step over the global batch, absent when it was
	// not finite.
	Loss       *float64 `json:"loss,omitempty"`
	Mode       string   `json:"mode"`
	WorldSize  int      `json:"world_size"`
	ConfigHash string   `json:"config_hash"`
	JobID      string   `json:"job_id"`
}

// CheckpointPath returns the folder of the checkpoint after step in a run's
// output folder.
func CheckpointPath(output string, step int) string {
	return filepath.Join(output, checkpointsDir, checkpointName(step))
}

// checkpointName returns the folder name of the checkpoint after step. The
// zero padding keeps name order equal to step order.
func checkpointName(step int) string { return fmt.Sprintf("%s%08d", checkpointPrefix, step) }

// saveCheckpoint writes the model's trainable state, the optimizer state and st
// into checkpoints/step-NNNNNNNN under output. It writes into a temporary folder
// and renames it, so a crash leaves either the whole checkpoint or none. It then
// deletes all but the keep newest checkpoints (keep 0 keeps all). It returns the
// checkpoint's path once the checkpoint is in place, with an error when only
// the deletion failed, and an empty path when the checkpoint failed.
func saveCheckpoint(output string, m *model.Model, opt *model.AdamW, st TrainerState, baseModel string, keep int) (string, error) {
	parent := filepath.Join(output, checkpointsDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("creating the checkpoint folder: %w", err)
	}
	final := filepath.Join(parent, checkpointName(st.Step))
	tmp, err := makeTempDir(parent, "."+checkpointName(st.Step)+".tmp-")
	if err != nil {
		return "", fmt.Errorf("creating a temporary checkpoint folder: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after the rename

	if err := saveTrainable(tmp, m, baseModel); err != nil {
		return "", err
	}
	if err := opt.SaveState(filepath.Join(tmp, optimizerFile)); err != nil {
		return "", fmt.Errorf("saving the optimizer state: %w", err)
	}
	st.Format = trainerStateFormat
	if err := writeJSONFile(filepath.Join(tmp, trainerStateFile), st); err != nil {
		return "", err
	}

	// A checkpoint of the same step from an earlier, interrupted run is replaced.
	if err := replaceDir(tmp, final); err != nil {
		return "", fmt.Errorf("renaming the checkpoint into place: %w", err)
	}
	return final, pruneCheckpoints(parent, keep)
}

// saveTrainable writes what training changes: the whole model in full mode, the
// adapter in LoRA mode.
func saveTrainable(dir string, m *model.Model, baseModel string) error {
	if m.Options().Mode == model.ModeLoRA {
		if err := peft.SaveAdapter(m, dir, baseModel); err != nil {
			return fmt.Errorf("saving the adapter: %w", err)
		}
		return nil
	}
	if err := m.SaveBase(dir); err != nil {
		return fmt.Errorf("saving the model: %w", err)
	}
	return nil
}

// pruneCheckpoints removes all but the keep newest step-* folders of parent.
func pruneCheckpoints(parent string, keep int) error {
	if keep <= 0 {
		return nil
	}
	steps, err := listCheckpoints(parent)
	if err != nil {
		return err
	}
	for len(steps) > keep {
		if err := os.RemoveAll(filepath.Join(parent, checkpointName(steps[0]))); err != nil {
			return fmt.Errorf("removing an old checkpoint: %w", err)
		}
		steps = steps[1:]
	}
	return nil
}

// listCheckpoints returns the steps of the complete checkpoints in parent, in
// ascending order. Temporary folders of unfinished checkpoints start with a dot
// and are skipped.
func listCheckpoints(parent string) ([]int, error) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var steps []int
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), checkpointPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		if step, err := strconv.Atoi(name); err == nil && step > 0 {
			steps = append(steps, step)
		}
	}
	slices.Sort(steps)
	return steps, nil
}

// ResolveCheckpoint returns the checkpoint folder that path names: a checkpoint
// folder itself, or a run's output folder or its checkpoints folder, for which
// it picks the newest checkpoint.
func ResolveCheckpoint(path string) (string, error) {
	if _, err := os.Stat(filepath.Join(path, trainerStateFile)); err == nil {
		return path, nil
	}
	for _, parent := range []string{path, filepath.Join(path, checkpointsDir)} {
		steps, err := listCheckpoints(parent)
		if err != nil {
			return "", fmt.Errorf("resume: %w", err)
		}
		if len(steps) > 0 {
			return filepath.Join(parent, checkpointName(steps[len(steps)-1])), nil
		}
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("resume: %s not found: pass a run's output folder or one of its checkpoints/step-N folders", path)
	} else if err != nil {
		return "", fmt.Errorf("resume: %w", err)
	}
	return "", fmt.Errorf("resume: %s contains no checkpoint: pass a checkpoint folder (with %s) or a run's output folder", path, trainerStateFile)
}

// CheckpointSteps returns the steps of the complete checkpoints of a run's
// output folder, in ascending order.
func CheckpointSteps(output string) ([]int, error) {
	return listCheckpoints(filepath.Join(output, checkpointsDir))
}

// CheckFreshOutput fails when output holds checkpoints, which a new run would
// mix with its own: pruning would delete the new ones and --resume would pick
// the old run's.
func CheckFreshOutput(output string) error {
	steps, err := listCheckpoints(filepath.Join(output, checkpointsDir))
	if err != nil {
		return err
	}
	if len(steps) > 0 {
		return fmt.Errorf("output %s already contains checkpoints of an earlier run (the newest after step %d): continue that run with --resume %s, or set another output",
			output, steps[len(steps)-1], output)
	}
	return nil
}

// CheckResumeOutput fails when output holds checkpoints after startStep, the
// step a resumed run continues from: the run would mix its new checkpoints with
// those, and pruning by step would keep the stale ones.
func CheckResumeOutput(output string, startStep int) error {
	steps, err := listCheckpoints(filepath.Join(output, checkpointsDir))
	if err != nil {
		return err
	}
	if len(steps) > 0 && steps[len(steps)-1] > startStep {
		return fmt.Errorf("output %s contains checkpoints after step %d (the newest after step %d): resume from the newest with --resume %s, or set another output",
			output, startStep, steps[len(steps)-1], output)
	}
	return nil
}

// ReadTrainerState reads and checks trainer_state.json of a checkpoint folder.
func ReadTrainerState(dir string) (TrainerState, error) {
	var st TrainerState
	path := filepath.Join(dir, trainerStateFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return st, fmt.Errorf("resume: %w", err)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("resume: %s is not valid JSON: %w", path, err)
	}
	switch {
	case st.Format != trainerStateFormat:
		return st, fmt.Errorf("resume: %s has format %d, this binary reads format %d", path, st.Format, trainerStateFormat)
	case st.Step < 1:
		return st, fmt.Errorf("resume: %s: invalid step %d", path, st.Step)
	case st.ConsecutiveSkips < 0:
		return st, fmt.Errorf("resume: %s: invalid consecutive_skips %d", path, st.ConsecutiveSkips)
	}
	return st, nil
}

// loadCheckpoint restores the trainable values and the optimizer state of a
// checkpoint into m and opt. In LoRA mode the base weights must already be loaded.
func loadCheckpoint(dir string, m *model.Model, opt *model.AdamW) error {
	if m.Options().Mode == model.ModeLoRA {
		adapter, err := peft.Load(dir, m.Config())
		if err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		if err := peft.Apply(m, adapter); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	} else if err := m.LoadBase(dir); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := opt.LoadState(filepath.Join(dir, optimizerFile)); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// makeTempDir creates a temporary folder that other users can read, as
// os.MkdirTemp's 0700 would keep nodes under other accounts from resuming.
func makeTempDir(parent, pattern string) (string, error) {
	dir, err := os.MkdirTemp(parent, pattern)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// replaceDir renames the folder tmp to final. An existing final is first
// renamed aside and removed only after tmp took its place, so a crash leaves
// the old or the new folder under a name that ringtune finds.
func replaceDir(tmp, final string) error {
	old := ""
	if _, err := os.Stat(final); err == nil {
		old = fmt.Sprintf("%s.old-%d", filepath.Join(filepath.Dir(final), "."+filepath.Base(final)), os.Getpid())
		if err := os.Rename(final, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if old != "" {
			_ = os.Rename(old, final)
		}
		return err
	}
	syncDir(filepath.Dir(final))
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

// removeStaleTemps removes the temporary folders and files that a killed run
// left in dir: names that start with a dot and contain ".tmp-" or ".old-", or
// end in ".tmp" as atomicfile names them.
func removeStaleTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") && (strings.Contains(name, ".tmp-") || strings.Contains(name, ".old-") || strings.HasSuffix(name, ".tmp")) {
			_ = os.RemoveAll(filepath.Join(dir, name))
		}
	}
}

// writeJSONFile writes v as indented JSON to a temporary file and renames it to path.
func writeJSONFile(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(raw, '\n'))
}

// writeFileAtomic writes content to path through a temporary file.
func writeFileAtomic(path string, content []byte) error {
	if err := atomicfile.WriteFile(path, content); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// syncDir flushes a folder's entries, so that a rename survives a power loss.
// Errors are ignored: some file systems do not support it.
func syncDir(dir string) { _ = atomicfile.SyncDir(dir) }
