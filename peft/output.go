package peft

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/ringtune/ringtune/checkpoint"
)

// checkOutputPath rejects an output directory that is the base or adapter directory.
func checkOutputPath(baseDir, adapterDir, outDir string) error {
	out, err := filepath.Abs(outDir)
	if err != nil {
		return err
	}
	outInfo, outErr := os.Stat(out)
	for _, in := range []struct{ role, dir string }{{"base model", baseDir}, {"adapter", adapterDir}} {
		abs, err := filepath.Abs(in.dir)
		if err != nil {
			return err
		}
		same := abs == out
		if info, err := os.Stat(abs); err == nil && outErr == nil {
			same = same || os.SameFile(info, outInfo)
		}
		if same {
			return fmt.Errorf("output directory %s is the %s directory: write the merged model to a new directory", outDir, in.role)
		}
	}
	return nil
}

// checkOutputDir reports whether outDir exists with entries in it, which Overwrite
// must allow, and rejects an outDir that is a file.
func checkOutputDir(outDir string, overwrite bool) (existing bool, err error) {
	entries, err := os.ReadDir(outDir)
	switch {
	case err == nil && len(entries) > 0:
		if !overwrite {
			return false, fmt.Errorf("%s: %w (%s): choose a new or empty directory", outDir, ErrOutputExists, countNoun(len(entries), "entry", "entries"))
		}
		return true, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		if info, statErr := os.Stat(outDir); statErr == nil && !info.IsDir() {
			return false, fmt.Errorf("output path %s is a file, not a directory", outDir)
		}
		return false, err
	}
	return false, nil
}

// publishOutput renames the finished stage directory to outDir, which is missing or
// empty.
func publishOutput(stage, outDir string) error {
	if err := os.Chmod(stage, 0o755); err != nil { // MkdirTemp creates it with mode 0700
		return err
	}
	if err := os.Remove(outDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot replace the empty output directory: %w", err)
	}
	if err := os.Rename(stage, outDir); err != nil {
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(outDir)))
}

// shardFilePattern matches the shard names that checkpoint.WriteModel and transformers
// write.
var shardFilePattern = regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)

// moveIntoOutput moves the files of the finished stage directory into the non-empty
// outDir, one rename each: the shards, then the index or model.safetensors, then the
// copied base files. It then removes the weight files of outDir that the merge did not
// write, as checkpoint.WriteModel does, and the empty stage directory. It checks before
// the first rename that no file would replace a directory.
func moveIntoOutput(stage, outDir string) error {
	entries, err := os.ReadDir(stage)
	if err != nil {
		return err
	}
	for _, e := range entries {
		target := filepath.Join(outDir, e.Name())
		if info, err := os.Lstat(target); err == nil && info.IsDir() {
			return fmt.Errorf("%s is a directory, but the merge writes a file of that name: move it away and merge again", target)
		}
	}
	order := func(name string) int {
		switch {
		case shardFilePattern.MatchString(name):
			return 0
		case name == checkpoint.IndexFileName || name == checkpoint.SingleFileName:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(entries, func(x, y os.DirEntry) int { return order(x.Name()) - order(y.Name()) })

	written := map[string]bool{}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(stage, e.Name()), filepath.Join(outDir, e.Name())); err != nil {
			return err
		}
		written[e.Name()] = true
	}
	if err := removeStaleWeights(outDir, written); err != nil {
		return err
	}
	if err := syncDir(outDir); err != nil {
		return err
	}
	return os.Remove(stage)
}

// removeStaleWeights deletes model.safetensors, the index and model-*-of-*.safetensors
// files of dir that are not in keep, so the weights that remain are the merge's.
func removeStaleWeights(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		stale := name == checkpoint.SingleFileName || name == checkpoint.IndexFileName || shardFilePattern.MatchString(name)
		if !stale || keep[name] || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("cannot remove the stale weight file: %w", err)
		}
	}
	return nil
}
