package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ringtune/ringtune/metrics"
	"github.com/ringtune/ringtune/train"
)

// sideServers are a node's Prometheus /metrics endpoint and gRPC health service.
// Each is optional; the methods of a nil or partly started sideServers do nothing
// for the missing parts.
type sideServers struct {
	metrics  *metrics.NodeMetrics
	registry *prometheus.Registry
	http     *http.Server
	grpc     *grpc.Server
	health   *health.Server
	log      *slog.Logger
}

func startSideServers(metricsAddr, healthAddr string, log *slog.Logger) (*sideServers, error) {
	s := &sideServers{log: log}
	if metricsAddr != "" {
		lis, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return nil, fmt.Errorf("metrics listener on %s: %w", metricsAddr, err)
		}
		s.registry = metrics.NewRegistry()
		s.http = metrics.Serve(lis, s.registry)
		log.Info("serving metrics", "addr", lis.Addr().String())
	}
	if healthAddr != "" {
		lis, err := net.Listen("tcp", healthAddr)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("health listener on %s: %w", healthAddr, err)
		}
		s.grpc = grpc.NewServer()
		s.health = health.NewServer()
		healthpb.RegisterHealthServer(s.grpc, s.health)
		go func() { _ = s.grpc.Serve(lis) }()
		log.Info("serving gRPC health", "addr", lis.Addr().String())
	}
	return s, nil
}

// registerRank registers the node's metrics, which carry its rank as a
// label, once the coordinator has assigned it. A node keeps its rank when the
// ring re-forms, so later calls change nothing.
func (s *sideServers) registerRank(rank int) {
	if s == nil || s.registry == nil || s.metrics != nil {
		return
	}
	s.metrics = metrics.NewNodeMetrics(s.registry, rank)
}

func (s *sideServers) observeStep(step int, stats train.Stats, line MetricsLine) {
	if s == nil || s.metrics == nil {
		return
	}
	s.metrics.ObserveStep(step, stats.Loss, stats.GradNorm, stats.LR, int64(stats.TargetTokens), stats.BytesSent, stats.BytesRecv,
		stats.Compute, stats.AllReduce, stats.ExposedAllReduce, line.PeakMemoryBytes, stats.Skipped)
}

func (s *sideServers) observeEval(loss float64) {
	if s == nil || s.metrics == nil {
		return
	}
	s.metrics.ObserveEval(loss)
}

// setServing marks the node healthy or not in the gRPC health service.
func (s *sideServers) setServing(serving bool) {
	if s == nil || s.health == nil {
		return
	}
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		status = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", status)
}

func (s *sideServers) close() {
	if s.grpc != nil {
		s.grpc.Stop()
	}
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.http.Shutdown(ctx)
	}
}
