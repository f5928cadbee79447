package coordinator

import (
	"errors"
	"fmt"
	"time"
)

// Fingerprint identifies what a node runs. Every node of a job must present the same
// fingerprint as the job, because replicas that differ in binary, configuration, model
// or data would average gradients of different computations without any error.
type Fingerprint struct {
	// BinaryVersion is the version string of the ringtune binary.
	BinaryVersion string
	// ConfigHash is a hash of the resolved training configuration (after defaults and
	// flags are applied).
	ConfigHash string
	// ModelHash is a hash of the base model weights.
	ModelHash string
	// DatasetHash is a hash of the dataset file.
	DatasetHash string
}

// fingerprintField is one compared field of a Fingerprint, named as it appears in a
// rejection reason.
type fingerprintField struct {
	name      string
	node, job string
	// hint is the advice on how to fix a mismatch.
	hint string
}

func (f Fingerprint) fields(job Fingerprint) []fingerprintField {
	return []fingerprintField{
		{"binary version", f.BinaryVersion, job.BinaryVersion, "run the same ringtune build everywhere"},
		{"resolved-config hash", f.ConfigHash, job.ConfigHash,
			"start every process with the same config file and the same config flags (cluster.* and WORLD_SIZE included), and compare the resolved job config that each one logs"},
		{"model hash", f.ModelHash, job.ModelHash, "give every process the same model files"},
		{"dataset hash", f.DatasetHash, job.DatasetHash, "give every process the same data and tokenizer files"},
	}
}

// maxJobIDBytes matches the job id limit of the collective package's ring frames.
const maxJobIDBytes = 128

// Config describes one training job. All fields are required unless marked optional,
// and Validate checks them.
type Config struct {
	// JobID names the job. A node that joins with another job id is rejected.
	// At most 128 bytes.
	JobID string
	// WorldSize is the number of nodes N the job waits for before training starts,
	// at least 1. Ranks are 0 to N-1.
	WorldSize int
	// JoinTimeout bounds rendezvous: the join deadline is the start time passed to New
	// plus JoinTimeout, and a Tick at or after it fails the job unless all WorldSize
	// nodes have joined. Must be positive. A longer timeout tolerates slow image pulls
	// and model downloads; a shorter one reports a missing node sooner.
	JoinTimeout time.Duration
	// CheckpointInterval is the number of steps between checkpoints. Optional: 0
	// disables checkpoints. When positive, a checkpoint is requested after every step
	// that is a multiple of it and after the last step.
	CheckpointInterval int
	// TotalSteps is the number of optimizer steps in the job, at least 1. Steps are
	// numbered 1 to TotalSteps.
	TotalSteps int
	// StartStep is the last step completed before this run, for a job resumed
	// from a checkpoint; the first report is for StartStep+1. Optional: 0 starts
	// a new job. At most TotalSteps: a job resumed after its last step ends
	// once every node joined, so that rank 0 writes the final model.
	StartStep int
	// Seed seeds the per-epoch permutation of the data shard plan. Optional: 0 is a
	// valid seed.
	Seed uint64
	// MaxRestarts is how many times the ring may re-form after a lost rank. Optional:
	// 0 fails the job at the first lost rank, as before recovery existed.
	MaxRestarts int
	// FinishTimeout bounds the finishing phase, with MaxRestarts positive: the
	// job fails unless rank 0 wrote the result and left within FinishTimeout of
	// the phase's first Tick. Optional: 0 means DefaultFinishTimeout.
	FinishTimeout time.Duration
	// Fingerprint is the job's expected fingerprint. Every field must be non-empty,
	// and each joining node must match it exactly.
	Fingerprint Fingerprint
}

// DefaultFinishTimeout is the default of Config.FinishTimeout. The bound is
// for a rank 0 that hangs, so it leaves room to write a large model to slow
// network storage.
const DefaultFinishTimeout = 30 * time.Minute

// Validate returns an error that names the first invalid field, or nil.
func (c Config) Validate() error {
	switch {
	case c.JobID == "":
		return errors.New("coordinator config: JobID is missing")
	case len(c.JobID) > maxJobIDBytes:
		return fmt.Errorf("coordinator config: JobID is %d bytes, at most %d allowed", len(c.JobID), maxJobIDBytes)
	case c.WorldSize < 1:
		return fmt.Errorf("coordinator config: WorldSize is %d, must be at least 1", c.WorldSize)
	case c.JoinTimeout <= 0:
		return fmt.Errorf("coordinator config: JoinTimeout is %v, must be positive", c.JoinTimeout)
	case c.CheckpointInterval < 0:
		return fmt.Errorf("coordinator config: CheckpointInterval is %d, must be 0 (off) or positive", c.CheckpointInterval)
	case c.TotalSteps < 1:
		return fmt.Errorf("coordinator config: TotalSteps is %d, must be at least 1", c.TotalSteps)
	case c.MaxRestarts < 0:
		return fmt.Errorf("coordinator config: MaxRestarts is %d, must be 0 (no recovery) or positive", c.MaxRestarts)
	case c.FinishTimeout < 0:
		return fmt.Errorf("coordinator config: FinishTimeout is %v, must be 0 (the default) or positive", c.FinishTimeout)
	case c.StartStep < 0 || c.StartStep > c.TotalSteps:
		return fmt.Errorf("coordinator config: StartStep is %d, must be in [0, TotalSteps %d]", c.StartStep, c.TotalSteps)
	}

	for _, field := range c.Fingerprint.fields(c.Fingerprint) {
		if field.job == "" {
			return fmt.Errorf("coordinator config: Fingerprint %s is missing", field.name)
		}
	}
	return nil
}
