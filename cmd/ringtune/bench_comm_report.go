package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/internal/chart"
	"github.com/ringtune/ringtune/model"
)

// commRow is one configuration on one world size and dtype. The JSON keys are a
// stable interface: mode names the LoRA rank and targets too, such as
// lora-r8-attention, so that the keys stay the same for every mode.
type commRow struct {
	Mode          string  `json:"mode"`
	Nodes         int     `json:"nodes"`
	DType         string  `json:"dtype"`
	GradientBytes int64   `json:"gradient_bytes"`               // fp32 bytes of the trainable gradients
	BytesSent     float64 `json:"bytes_sent_per_node_per_step"` // mean over ranks and steps
	AllReduceS    float64 `json:"allreduce_s_per_step"`         // median of the slowest rank's step time
	BusBWGBps     float64 `json:"busbw_GBps"`

	isFull      bool
	buckets     int
	theoryBytes float64 // theoryBytesSent of the buckets
	algBWGBps   float64
}

func makeCommRow(cfg commConfig, n int, dtype collective.WireDType, m commMeasure, smallBytes int) commRow {
	row := commRow{
		Mode: cfg.label, Nodes: n, DType: dtype.String(), GradientBytes: 4 * cfg.elems,
		BytesSent: m.bytesSent, AllReduceS: m.stepS,
		isFull: cfg.mode == model.ModeFull, buckets: len(cfg.buckets),
		theoryBytes: theoryBytesSent(cfg.bucketSizes(), n, dtype, smallBytes),
	}
	if m.stepS > 0 {
		row.algBWGBps = float64(row.GradientBytes) / m.stepS / 1e9
		row.BusBWGBps = row.algBWGBps * 2 * float64(n-1) / float64(n)
	}
	return row
}

func printCommJSON(w io.Writer, rows []commRow) error {
	if rows == nil {
		rows = []commRow{}
	}
	return json.NewEncoder(w).Encode(map[string]any{"rows": rows})
}

// plural returns n and noun, with an s for any n but 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func printCommTable(w io.Writer, s commSettings, linkNote string, rows []commRow) {
	fmt.Fprintf(w, "# ringtune bench comm: %s, buckets of at most %s fp32, %s; %s after %s\n",
		s.modelName, formatSize(int64(s.bucketBytes)), linkNote, plural(s.steps, "timed step"), plural(s.warmup, "warm-up step"))
	fmt.Fprintf(w, "# sent: payload bytes per rank per step, mean over ranks (measured); theory: 2(N-1)/N * S per bucket,\n"+
		"#   or (N-1) * S for buckets of at most %s fp32, which take the small all-reduce; S in wire bytes\n", formatSize(int64(s.smallBytes)))
	fmt.Fprintf(w, "# time: median over steps of the slowest rank's all-reduce time per step; algbw = gradient bytes (fp32) / time;\n"+
		"#   busbw = algbw * 2(N-1)/N; MB = 1e6 B, GB/s = 1e9 B/s\n")
	fmt.Fprintf(w, "%-24s %5s %5s %7s %12s %12s %12s %11s %11s %11s\n",
		"mode", "nodes", "dtype", "buckets", "grad(MB)", "sent(MB)", "theory(MB)", "time(s)", "algbw(GB/s)", "busbw(GB/s)")
	for _, r := range rows {
		fmt.Fprintf(w, "%-24s %5d %5s %7d %12.4f %12.4f %12.4f %11.5f %11.4f %11.4f\n",
			r.Mode, r.Nodes, r.DType, r.buckets, float64(r.GradientBytes)/1e6, r.BytesSent/1e6, r.theoryBytes/1e6,
			r.AllReduceS, r.algBWGBps, r.BusBWGBps)
	}
}

// printCommRatios prints full : LoRA for every LoRA row that has a full row of the
// same world size and dtype.
func printCommRatios(w io.Writer, rows []commRow) {
	for _, full := range rows {
		if !full.isFull {
			continue
		}
		for _, r := range rows {
			if r.isFull || r.Nodes != full.Nodes || r.DType != full.DType || r.BytesSent == 0 || r.AllReduceS == 0 {
				continue
			}
			fmt.Fprintf(w, "ratio full : %s (N=%d, %s): bytes sent %.1f : 1, all-reduce time %.1f : 1\n",
				r.Mode, r.Nodes, r.DType, full.BytesSent/r.BytesSent, full.AllReduceS/r.AllReduceS)
		}
	}
}

// projectedComm returns the all-reduce seconds per step on a link of gbps and
// the efficiency it assumes. On a shaped link the efficiency is the measured
// per-rank send rate over the link rate, after taking off the 2(N-1) hops of
// emulated latency. On loopback the ranks are assumed to send at the link rate
// up to the rate measured here, which the CPUs bound.
func projectedComm(r commRow, network *netnsNetwork, latencyS, gbps float64) float64 {
	n := float64(r.Nodes)
	hops := 2 * (n - 1)
	linkBytesPerS := gbps * 1e9 / 8
	if r.AllReduceS <= 0 || r.BytesSent <= 0 {
		return hops * latencyS
	}
	if network == nil {
		measured := r.BytesSent / r.AllReduceS
		return r.BytesSent/min(linkBytesPerS, measured) + hops*latencyS
	}
	transfer := r.AllReduceS
	if network.latencyEmulated && transfer > hops*network.link.latency.Seconds() {
		transfer -= hops * network.link.latency.Seconds()
	}
	efficiency := r.BytesSent / transfer / (network.link.gbps * 1e9 / 8)
	return r.BytesSent/(linkBytesPerS*efficiency) + hops*latencyS
}

func printCommProjection(w io.Writer, s commSettings, network *netnsNetwork, rows []commRow) {
	latencyS := s.link.latency.Seconds()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "# projection: step time = compute + all-reduce time on the link; scaling efficiency = compute / step time")
	fmt.Fprintln(w, "# assumptions: no overlap of the all-reduce with backward (an upper bound on the step time);")
	if network != nil {
		fmt.Fprintf(w, "#   the bandwidth efficiency measured on the shaped %v Gbit/s link (sent bytes per second per rank / link rate) holds on faster links;\n", network.link.gbps)
	} else {
		fmt.Fprintln(w, "#   measured on loopback: each rank sends at the link rate, but no faster than the rate measured here, which this machine's CPUs bound;")
	}
	fmt.Fprintf(w, "#   all buckets run at once, so a step pays the 2(N-1) sequential hops of one ring once, at %v per hop (--link-latency)\n", s.link.latency)
	if s.computeS == 0 {
		fmt.Fprintln(w, "#   no --compute-s given: compute counts as 0 s and the scaling efficiency is left out")
	}
	header := fmt.Sprintf("%-24s %5s %5s", "mode", "nodes", "dtype")
	for _, g := range s.projectGbps {
		header += fmt.Sprintf(" %14s", fmt.Sprintf("%vGb/s step(s)", g))
		if s.computeS > 0 {
			header += fmt.Sprintf(" %8s", "scaling")
		}
	}
	fmt.Fprintln(w, header)
	for _, r := range rows {
		line := fmt.Sprintf("%-24s %5d %5s", r.Mode, r.Nodes, r.DType)
		for _, g := range s.projectGbps {
			step := s.computeS + projectedComm(r, network, latencyS, g)
			line += fmt.Sprintf(" %14.4f", step)
			if s.computeS > 0 {
				line += fmt.Sprintf(" %7.1f%%", 100*s.computeS/step)
			}
		}
		fmt.Fprintln(w, line)
	}
}

// writeCommChart draws the all-reduce time per step: one cluster per mode, one
// bar per world size and dtype.
func writeCommChart(path, modelName, linkLabel string, rows []commRow) error {
	var modes, groupNames []string
	values := map[string]map[string]float64{}
	for _, r := range rows {
		group := fmt.Sprintf("N=%d %s", r.Nodes, r.DType)
		if values[group] == nil {
			values[group] = map[string]float64{}
			groupNames = append(groupNames, group)
		}
		values[group][r.Mode] = r.AllReduceS
		if !slices.Contains(modes, r.Mode) {
			modes = append(modes, r.Mode)
		}
	}
	groups := make([]chart.BarGroup, len(groupNames))
	for i, name := range groupNames {
		groups[i] = chart.BarGroup{Name: name, Values: make([]float64, len(modes))}
		for j, mode := range modes {
			groups[i].Values[j] = values[name][mode]
		}
	}
	title := fmt.Sprintf("gradient all-reduce per step, %s, %s", modelName, linkLabel)
	return chart.Bars(path, title, "all-reduce time per step (s)", modes, groups)
}
