package main

import (
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/kernels/device"
	"github.com/ringtune/ringtune/node"
)

func nodeCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "coordinator", Usage: "`HOST:PORT` of the coordinator (default: $RINGTUNE_COORDINATOR, $MASTER_ADDR:$MASTER_PORT, cluster.coordinator); PET_MASTER_ADDR and PET_MASTER_PORT stand in for an unset MASTER_ADDR or MASTER_PORT"},
		&cli.IntFlag{Name: "rank", Value: -1, EnvVars: []string{"RANK", "PET_NODE_RANK"}, Usage: "rank to request, or -1 for any free rank; RANK wins over PET_NODE_RANK when both are set"},
		&cli.StringFlag{Name: "node-id", Usage: "name of this node, unique in the job (default: hostname-pid-RANDOM, 4 hex digits)"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0", Usage: "`HOST:PORT` of this node's collective service; use :PORT across hosts"},
		&cli.StringFlag{Name: "advertise", Usage: "`HOST:PORT` that the left neighbour dials (default: the listener's address)"},
		&cli.StringFlag{Name: "gossip-addr", Usage: "`HOST:PORT` of the membership (gossip) listener; empty turns membership off"},
		&cli.StringFlag{Name: "gossip-advertise", Usage: "`IP` address that other members reach the gossip listener at, such as the pod IP (default: a private IPv4 address of this host when --gossip-addr has no host)"},
		&cli.StringSliceFlag{Name: "gossip-join", Usage: "`HOST:PORT` of members to join the gossip cluster through, such as a headless Service's name, retried until its DNS records exist; repeat or separate with commas (default: the coordinator's gossip address)"},
		&cli.StringFlag{Name: "metrics-addr", Usage: "`HOST:PORT` serving Prometheus /metrics; empty turns it off"},
		&cli.StringFlag{Name: "health-addr", Usage: "`HOST:PORT` serving gRPC health; empty turns it off"},
		&cli.StringFlag{Name: "resume", Usage: "continue from a checkpoint `DIR`, or the newest checkpoint of an output folder"},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate `FILE` of this node; with --tls-key it encrypts the gradient traffic"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM private key `FILE` of --tls-cert"},
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM `FILE` of the CA that the other nodes' certificates chain to (mutual TLS)"},
		&cli.IntFlag{Name: "workers", Usage: "compute goroutines of the CPU backend (default: GOMAXPROCS)"},
		&cli.StringFlag{Name: "device", Value: "cpu", Usage: "compute `DEVICE`: cpu, or cuda:N for the GPU of ordinal N (cuda is cuda:0)"},
		kernelCacheFlag(),
	}
	flags = append(flags, tokenFlags()...)
	return &cli.Command{
		Name:  "node",
		Usage: "run one rank of a multi-host job: join the coordinator, train, all-reduce gradients",
		Description: `A node reads the job config, the model, the tokenizer and the data, joins the
coordinator and trains its shard of every global batch. Rank 0 writes metrics.jsonl,
checkpoints and the final model or adapter into the config's output folder.
The node exits with status 0 when the job is done, and non-zero when it fails.

Without --cluster-nodes, WORLD_SIZE (as torchrun sets it) or else PET_NNODES (as
the Kubeflow training operator sets it, N or N:N) sets cluster.nodes.`,
		Flags:        append(flags, jobFlags()...),
		Action:       runNode,
		OnUsageError: shortUsageError,
	}
}

func runNode(c *cli.Context) error {
	job, err := loadJob(c)
	if err != nil {
		return err
	}
	token, err := readToken(c)
	if err != nil {
		return err
	}
	rank := c.Int("rank")
	if rank < -1 {
		return fmt.Errorf("invalid --rank, RANK or PET_NODE_RANK %d: use a rank from 0 to cluster.nodes-1, or -1 for any free rank", rank)
	}
	coordinator, err := coordinatorAddress(c, job)
	if err != nil {
		return err
	}
	dev, err := deviceFlag(c)
	if err != nil {
		return err
	}
	// A host without the device fails before it holds a place in the ring.
	if err := device.Probe(dev); err != nil {
		return err
	}
	slog.Info("resolved job config", "job", job.JobID, "device", dev, "config", job.YAML())

	res, err := node.Run(c.Context, node.Config{
		Job:             job,
		Coordinator:     coordinator,
		Token:           token,
		NodeID:          c.String("node-id"),
		ListenAddr:      c.String("listen"),
		AdvertiseAddr:   c.String("advertise"),
		GossipAddr:      c.String("gossip-addr"),
		GossipJoin:      c.StringSlice("gossip-join"),
		GossipAdvertise: c.String("gossip-advertise"),
		MetricsAddr:     c.String("metrics-addr"),
		HealthAddr:      c.String("health-addr"),
		Rank:            rank,
		CertFile:        c.String("tls-cert"),
		KeyFile:         c.String("tls-key"),
		CAFile:          c.String("tls-ca"),
		Resume:          c.String("resume"),
		Version:         version,
		Workers:         c.Int("workers"),
		Device:          dev,
		KernelCache:     c.String("kernel-cache"),
		Logger:          slog.Default(),
	})
	if err != nil {
		return err
	}
	slog.Info("node finished", "rank", res.Rank, "steps", res.Steps, "loss", res.Loss, "output", res.Output)
	return nil
}

// kernelCacheFlag returns the --kernel-cache flag of the commands that open a
// CUDA device.
func kernelCacheFlag() cli.Flag {
	return &cli.StringFlag{Name: "kernel-cache", Usage: "`DIR` where the CUDA backend keeps the kernels that NVRTC compiled, reused by later runs (default: $RINGTUNE_CACHE/cuda-kernels, or ~/.cache/ringtune/cuda-kernels)"}
}

// deviceFlag parses --device and rejects a device that this binary cannot
// open on any host, before the command starts work.
func deviceFlag(c *cli.Context) (device.Spec, error) {
	spec, err := device.Parse(c.String("device"))
	if err != nil {
		return spec, err
	}
	return spec, device.CheckBuilt(spec)
}

// localNodeDevice returns the device of rank's process in a job of `ringtune
// train`: "cuda" without an ordinal puts rank r on GPU r, as torchrun's
// LOCAL_RANK convention does, and any other value is the same for every rank.
func localNodeDevice(spec device.Spec, rank int) device.Spec {
	if spec.Kind == device.CUDA && spec.Index < 0 {
		spec.Index = rank
	}
	return spec
}
