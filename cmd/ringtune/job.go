package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/coordinator"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/node"
)

// tokenEnv is the environment variable that carries the job token.
const tokenEnv = "RINGTUNE_JOB_TOKEN"

// defaultCoordinatorPort is the coordinator's gRPC port when neither a flag, the
// config nor MASTER_PORT names one.
const defaultCoordinatorPort = "29400"

// jobFlags are the flags that select and override the job config, shared by
// train, coordinator and node.
func jobFlags() []cli.Flag {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Required: true, Usage: "job config `FILE` (YAML); every flag below overrides it"},
	}
	return append(flags, jobconfig.Flags()...)
}

// tokenFlags select the job token.
func tokenFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "token-file", Usage: "`FILE` holding the job token, the shared secret of the coordinator and all nodes (default: $" + tokenEnv + ")"},
	}
}

// loadJob reads the config named by --config and applies the flags and, when
// --cluster-nodes is not given, the world size from the environment (see
// worldSizeFromEnv).
func loadJob(c *cli.Context) (*jobconfig.Config, error) {
	job, err := jobconfig.LoadWithFlags(c, c.String("config"))
	if err != nil {
		return nil, err
	}
	if c.IsSet("cluster-nodes") {
		return job, nil
	}
	n, ok, err := worldSizeFromEnv()
	if err != nil {
		return nil, err
	}
	if ok {
		job.Cluster.Nodes = n
		if err := job.Validate(); err != nil {
			return nil, err
		}
	}
	return job, nil
}

// worldSizeFromEnv returns the world size from WORLD_SIZE, as torchrun sets it,
// or else from PET_NNODES, as the Kubeflow training operator sets it for a
// PyTorchJob. ok is false when neither is set. PET_NNODES may be an elastic
// range MIN:MAX, which is accepted only when MIN equals MAX, because a ringtune
// job has a fixed number of nodes.
func worldSizeFromEnv() (n int, ok bool, err error) {
	if ws := os.Getenv("WORLD_SIZE"); ws != "" {
		n, err := strconv.Atoi(ws)
		if err != nil || n < 1 {
			return 0, false, fmt.Errorf("invalid WORLD_SIZE %q: must be a positive integer", ws)
		}
		return n, true, nil
	}
	nnodes := os.Getenv("PET_NNODES")
	if nnodes == "" {
		return 0, false, nil
	}
	text := nnodes
	if lo, hi, isRange := strings.Cut(nnodes, ":"); isRange {
		if lo != hi {
			return 0, false, fmt.Errorf("invalid PET_NNODES %q: ringtune needs a fixed number of nodes, so use N or N:N", nnodes)
		}
		text = lo
	}
	n, err = strconv.Atoi(text)
	if err != nil || n < 1 {
		return 0, false, fmt.Errorf("invalid PET_NNODES %q: must be a positive integer", nnodes)
	}
	return n, true, nil
}

// shortUsageError reports a flag error in one line instead of the command's
// whole help, which for the job commands lists every config key.
func shortUsageError(c *cli.Context, err error, _ bool) error {
	return fmt.Errorf("%w: run 'ringtune %s --help' for the flags", err, c.Command.Name)
}

// readToken returns the job token from --token-file or the environment.
func readToken(c *cli.Context) (string, error) {
	if path := c.String("token-file"); path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		token := strings.TrimSpace(string(raw))
		if token == "" {
			return "", fmt.Errorf("--token-file %s is empty: write the job token into it", path)
		}
		return token, nil
	}
	if token := os.Getenv(tokenEnv); token != "" {
		return token, nil
	}
	return "", fmt.Errorf("the job token is missing: set $%s or --token-file to the same secret on the coordinator and every node", tokenEnv)
}

// coordinatorAddress returns the coordinator's host:port from, in order, the
// flag, $RINGTUNE_COORDINATOR, the master address and port (MASTER_ADDR and
// MASTER_PORT as torchrun sets them, each falling back to PET_MASTER_ADDR and
// PET_MASTER_PORT as the Kubeflow training operator sets them), and the config.
func coordinatorAddress(c *cli.Context, job *jobconfig.Config) (string, error) {
	if addr := c.String("coordinator"); addr != "" {
		return addr, nil
	}
	if addr := os.Getenv("RINGTUNE_COORDINATOR"); addr != "" {
		return addr, nil
	}
	if host, _ := firstEnv("MASTER_ADDR", "PET_MASTER_ADDR"); host != "" {
		port, name := firstEnv("MASTER_PORT", "PET_MASTER_PORT")
		if port == "" {
			port = defaultCoordinatorPort
		} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return "", fmt.Errorf("invalid %s %q: must be a TCP port from 1 to 65535", name, port)
		}
		return net.JoinHostPort(host, port), nil
	}
	if job.Cluster.Coordinator != "" {
		return job.Cluster.Coordinator, nil
	}
	return net.JoinHostPort("127.0.0.1", defaultCoordinatorPort), nil
}

// firstEnv returns the value and name of the first of names that is set to a
// non-empty value, or two empty strings.
func firstEnv(names ...string) (value, name string) {
	for _, name := range names {
		if value := os.Getenv(name); value != "" {
			return value, name
		}
	}
	return "", ""
}

// planJob reads the job's inputs and returns them with the coordinator config
// of the job. resume, when set, names the checkpoint the job continues from.
func planJob(ctx context.Context, job *jobconfig.Config, resume string, logger *slog.Logger) (*node.Inputs, coordinator.Config, error) {
	inputs, err := node.LoadInputs(ctx, job, version, logger)
	if err != nil {
		return nil, coordinator.Config{}, err
	}
	sampler, err := data.NewSampler(inputs.Dataset.Train.Len(), data.ShardPlan{
		Seed: job.Seed, WorldSize: job.Cluster.Nodes, BatchSize: job.Batch.MicroBatchSize, Shuffle: job.Shuffle(),
	})
	if err != nil {
		return nil, coordinator.Config{}, err
	}
	total := job.TotalSteps(sampler.BatchesPerEpoch())
	interval := job.Checkpoint.EverySteps
	if interval == 0 {
		interval = total // checkpoint after the last step only
	}
	startStep := 0
	if resume == "" {
		if err := node.CheckFreshOutput(job.Output); err != nil {
			return nil, coordinator.Config{}, err
		}
	} else {
		dir, err := node.ResolveCheckpoint(resume)
		if err != nil {
			return nil, coordinator.Config{}, err
		}
		st, err := node.ReadTrainerState(dir)
		if err != nil {
			return nil, coordinator.Config{}, err
		}
		if st.WorldSize != 0 && st.WorldSize != job.Cluster.Nodes {
			return nil, coordinator.Config{}, fmt.Errorf("resume: the checkpoint %s was written by %d nodes, and the job has %d: resume with --nodes %d, because the data order depends on the world size",
				dir, st.WorldSize, job.Cluster.Nodes, st.WorldSize)
		}
		if st.Mode != "" && st.Mode != job.Mode {
			return nil, coordinator.Config{}, fmt.Errorf("resume: the checkpoint %s is of a %s run, and the job's mode is %s", dir, st.Mode, job.Mode)
		}
		if err := node.CheckResumeOutput(job.Output, st.Step); err != nil {
			return nil, coordinator.Config{}, err
		}
		if st.ConfigHash != "" && st.ConfigHash != job.Hash() {
			slog.Warn("the job config differs from the one the checkpoint was written under; resuming with the new one", "checkpoint", dir)
		}
		slog.Info("resuming from a checkpoint", "checkpoint", dir, "after_step", st.Step, "epoch", st.Sampler.Epoch)
		if st.Step > total {
			return nil, coordinator.Config{}, fmt.Errorf("resume: the checkpoint %s is at step %d, and the job has %d steps: raise schedule.steps to train further", dir, st.Step, total)
		}
		if st.Step == total {
			slog.Warn("the checkpoint is of the last step, so the job only writes the final model; raise schedule.steps to train further", "checkpoint", dir)
		}
		startStep = st.Step
	}
	cfg := coordinator.Config{
		JobID:              job.JobID,
		WorldSize:          job.Cluster.Nodes,
		JoinTimeout:        job.JoinTimeoutDuration(),
		CheckpointInterval: interval,
		TotalSteps:         total,
		StartStep:          startStep,
		MaxRestarts:        job.Cluster.MaxRestarts,
		Seed:               job.Seed,
		Fingerprint:        inputs.Fingerprint,
	}
	return inputs, cfg, cfg.Validate()
}
