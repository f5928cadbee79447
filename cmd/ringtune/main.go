// Command ringtune trains Qwen3-family models with data-parallel workers that average
// gradients by ring all-reduce over gRPC, and measures what that costs.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-signals
		cancel(fmt.Errorf("interrupted by signal %v", sig))
		signal.Stop(signals) // a second signal kills the process as usual
	}()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "ringtune:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "ringtune",
		Usage:   "data-parallel fine-tuning of Qwen3 models with a ring all-reduce over gRPC",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "minimum log level: debug, info, warn or error", EnvVars: []string{"RINGTUNE_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format on stderr: text or json", EnvVars: []string{"RINGTUNE_LOG_FORMAT"}},
		},
		Before: func(c *cli.Context) error {
			return setupLogging(c.String("log-level"), c.String("log-format"))
		},
		Commands: []*cli.Command{
			trainCommand(),
			compareCommand(),
			coordinatorCommand(),
			nodeCommand(),
			benchCommand(),
			tokenizeCommand(),
			mergeCommand(),
			inspectCommand(),
			generateCommand(),
			evalCommand(),
			prepareDemoCommand(),
		},
	}
}

func setupLogging(level, format string) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return fmt.Errorf("invalid --log-format %q: use text or json", format)
	}
	slog.SetDefault(slog.New(h))
	return nil
}
