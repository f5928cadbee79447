package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringtune/ringtune/coordinator"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/tokenizer"
)

// Inputs is the part of a job that a node reads before it joins: the
// tokenizer, the tokenized dataset, the model shape and the fingerprint that
// the coordinator compares.
type Inputs struct {
	Job         *jobconfig.Config
	Tokenizer   *tokenizer.Tokenizer
	Dataset     *data.Dataset
	ModelConfig model.Config
	Fingerprint coordinator.Fingerprint
}

// LoadInputs reads and checks everything the job config names. version is the
// binary version that goes into the fingerprint.
func LoadInputs(ctx context.Context, job *jobconfig.Config, version string, logger *slog.Logger) (*Inputs, error) {
	if logger == nil {
		logger = slog.Default()
	}
	modelCfg, err := job.ModelConfig()
	if err != nil {
		return nil, err
	}
	if job.Model.Tokenizer == "" {
		return nil, errors.New("model.tokenizer is not set: name a folder with tokenizer.json (it defaults to model.base only when that is a model directory)")
	}
	tok, err := tokenizer.Load(job.Model.Tokenizer)
	if err != nil {
		return nil, fmt.Errorf("model.tokenizer: %w", err)
	}
	if tok.VocabSize() > modelCfg.VocabSize {
		return nil, fmt.Errorf("the tokenizer in %s has %d tokens but the model's vocab_size is %d: use the tokenizer the model was trained with",
			job.Model.Tokenizer, tok.VocabSize(), modelCfg.VocabSize)
	}

	if job.Data.SeqLen > modelCfg.MaxPositionEmbeddings {
		return nil, fmt.Errorf("data.seq_len %d exceeds the model's max_position_embeddings %d: lower data.seq_len", job.Data.SeqLen, modelCfg.MaxPositionEmbeddings)
	}
	opts, err := job.DataOptions()
	if err != nil {
		return nil, err
	}
	opts.Logger = logger
	dataset, err := data.Load(ctx, job.Data.Train, tok, opts)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("data.train: %w", err)
		}
		return nil, err
	}
	if dataset.Train.Len() == 0 {
		return nil, fmt.Errorf("data.train %s produced no training rows", job.Data.Train)
	}

	fp, err := fingerprint(job, modelCfg, version)
	if err != nil {
		return nil, err
	}
	return &Inputs{Job: job, Tokenizer: tok, Dataset: dataset, ModelConfig: modelCfg, Fingerprint: fp}, nil
}

// fingerprint hashes the inputs that must be identical on every rank. File
// contents are hashed rather than paths, because hosts may mount the same files
// at different paths.
func fingerprint(job *jobconfig.Config, modelCfg model.Config, version string) (coordinator.Fingerprint, error) {
	fp := coordinator.Fingerprint{BinaryVersion: version, ConfigHash: job.Hash()}
	if fp.BinaryVersion == "" {
		fp.BinaryVersion = "unknown"
	}

	modelHash := sha256.New()
	if job.Model.Init == "random" {
		shape, err := json.Marshal(modelCfg)
		if err != nil {
			return fp, err
		}
		fmt.Fprintf(modelHash, "random init, seed %d\n%s", job.Seed, shape)
	} else if err := hashModelDir(modelHash, job.Model.Base); err != nil {
		return fp, err
	}
	fp.ModelHash = hex.EncodeToString(modelHash.Sum(nil))

	dataHash := sha256.New()
	files := []string{job.Data.Train}
	if job.Data.Eval != "" {
		files = append(files, job.Data.Eval)
	}
	files = append(files, tokenizerFiles(job.Model.Tokenizer)...)
	for _, path := range files {
		if err := hashFile(dataHash, path); err != nil {
			return fp, err
		}
	}
	fp.DatasetHash = hex.EncodeToString(dataHash.Sum(nil))
	return fp, nil
}

// hashModelDir hashes config.json and every safetensors file of a model
// directory, in name order.
func hashModelDir(h hash.Hash, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("model.base: %w", err)
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		if name == model.ConfigFile || strings.HasSuffix(name, ".safetensors") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		if err := hashFile(h, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// tokenizerFiles returns the files of a tokenizer folder that change how text
// becomes tokens.
func tokenizerFiles(path string) []string {
	if info, err := os.Stat(path); err == nil && !info.IsDir() {
		return []string{path}
	}
	var files []string
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		p := filepath.Join(path, name)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	return files
}

func hashFile(h hash.Hash, path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s not found: every node needs the job's files at the paths its config names", path)
		}
		return err
	}
	defer f.Close()
	fmt.Fprintf(h, "%s\n", filepath.Base(path))
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}
