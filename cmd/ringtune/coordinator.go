package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ringtune/ringtune/coordinator"
)

func coordinatorCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "listen", Usage: "`HOST:PORT` of the gRPC service that nodes join (default: cluster.coordinator, or :$MASTER_PORT, or :" + defaultCoordinatorPort + ")"},
		&cli.StringFlag{Name: "gossip-addr", Value: ":7946", Usage: "`HOST:PORT` of the membership (gossip) listener; empty turns membership off"},
		&cli.StringFlag{Name: "gossip-advertise", Usage: "`IP` address that nodes reach the gossip listener at, such as the pod IP (default: a private IPv4 address of this host when --gossip-addr has no host)"},
		&cli.StringFlag{Name: "resume", Usage: "continue from a checkpoint `DIR` (or the newest of an output folder); every node needs the same --resume"},
		&cli.StringFlag{Name: "metrics-addr", Value: ":9400", Usage: "`HOST:PORT` serving Prometheus /metrics; empty turns it off"},
	}
	flags = append(flags, tokenFlags()...)
	return &cli.Command{
		Name:  "coordinator",
		Usage: "run the coordinator of a multi-host job: rendezvous, ranks, step reports, checkpoint decisions",
		Description: `The coordinator waits for cluster.nodes nodes (started with 'ringtune node'),
assigns their ranks and ring order, follows their step reports and ends the job.
It reads the same files as the nodes, because it checks that every node runs the
same binary, config, model and data. It exits with status 0 when the job is done.`,
		Flags:        append(flags, jobFlags()...),
		Action:       runCoordinator,
		OnUsageError: shortUsageError,
	}
}

func runCoordinator(c *cli.Context) error {
	job, err := loadJob(c)
	if err != nil {
		return err
	}
	token, err := readToken(c)
	if err != nil {
		return err
	}
	slog.Info("resolved job config", "job", job.JobID, "config", job.YAML())
	_, cfg, err := planJob(c.Context, job, c.String("resume"), slog.Default())
	if err != nil {
		return err
	}

	listenAddr := c.String("listen")
	if listenAddr == "" {
		listenAddr = coordinatorListenAddr(job.Cluster.Coordinator)
	}
	lis, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listenAddr, err)
	}
	var metricsLis net.Listener
	if addr := c.String("metrics-addr"); addr != "" {
		if metricsLis, err = net.Listen("tcp", addr); err != nil {
			lis.Close()
			return fmt.Errorf("--metrics-addr %s: %w", addr, err)
		}
	}
	server, err := coordinator.NewServer(coordinator.ServerConfig{
		Job:             cfg,
		Token:           token,
		Listener:        lis,
		GossipAddr:      c.String("gossip-addr"),
		GossipAdvertise: c.String("gossip-advertise"),
		MetricsListener: metricsLis,
		Logger:          slog.Default(),
	})
	if err != nil {
		return err
	}
	slog.Info("coordinator listening", "job", job.JobID, "addr", server.Addr(), "nodes", cfg.WorldSize, "steps", cfg.TotalSteps)
	if metricsLis != nil {
		slog.Info("serving metrics", "addr", metricsLis.Addr().String())
	}
	err = server.Run(c.Context)
	if err != nil && c.Context.Err() != nil {
		return fmt.Errorf("stopped: %v", context.Cause(c.Context))
	}
	return err
}

// coordinatorListenAddr listens on all interfaces at the port of the
// configured coordinator address, MASTER_PORT or the default port.
func coordinatorListenAddr(configured string) string {
	if configured != "" {
		if _, port, err := net.SplitHostPort(configured); err == nil {
			return ":" + port
		}
	}
	if port := os.Getenv("MASTER_PORT"); port != "" {
		return ":" + port
	}
	return ":" + defaultCoordinatorPort
}
