package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// linkShape is the emulated link of every rank: a rate and a one-way latency.
type linkShape struct {
	gbps    float64
	latency time.Duration
}

// netnsSubnet is the private /24 of the rank namespaces. The addresses live only
// inside namespaces this process creates, and newNetnsNetwork refuses to run if
// the root namespace already uses the /16 around it.
const (
	netnsSubnet     = "10.213.77."
	netnsSubnetWide = "10.213."
)

// netnsNetwork is one namespace per rank, each with a veth pair to a bridge in a
// namespace of its own, so nothing is added to the root namespace. Every name
// starts with prefix, which holds this process's id.
type netnsNetwork struct {
	prefix string
	names  []string // rank namespaces, in rank order
	addrs  []string // rank addresses, in rank order
	bridge string   // the bridge's namespace
	link   linkShape
	// latencyEmulated is false where the kernel lacks netem and the links are
	// shaped by tbf, which adds no latency.
	latencyEmulated bool
	created         []string // namespaces to delete, in creation order
}

// netnsUnavailable returns why network namespaces cannot be used, or "".
func netnsUnavailable() string {
	if os.Geteuid() != 0 {
		return "this process is not root"
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%s is not installed (%v)", tool, err)
		}
	}
	return ""
}

// runIP runs one ip or tc command and returns its error with its output.
func runIP(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s failed: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetnsNetwork creates n rank namespaces behind links of the given shape. On
// an error it returns the part it created, which the caller must Close.
func newNetnsNetwork(n int, link linkShape) (*netnsNetwork, error) {
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip -4 -o addr show failed: %w: %s", err, out)
	}
	routes, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip -4 route show failed: %w: %s", err, routes)
	}
	if strings.Contains(string(out)+string(routes), " "+netnsSubnetWide) {
		return nil, fmt.Errorf("the root network namespace already uses addresses or routes in %s0.0/16, which bench comm gives its namespaces: free them or run without --link-gbps", netnsSubnetWide)
	}

	prefix := fmt.Sprintf("rtc-%d-", os.Getpid())
	nw := &netnsNetwork{prefix: prefix, bridge: prefix + "br", link: link, latencyEmulated: true}
	if err := nw.addNamespace(nw.bridge); err != nil {
		return nw, err
	}
	if err := runAll([][]string{
		{"ip", "-n", nw.bridge, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", nw.bridge, "link", "set", "br0", "up"},
	}); err != nil {
		return nw, err
	}
	for r := 0; r < n; r++ {
		name := fmt.Sprintf("%s%d", prefix, r)
		if err := nw.addNamespace(name); err != nil {
			return nw, err
		}
		addr := fmt.Sprintf("%s%d", netnsSubnet, r+1)
		port := fmt.Sprintf("v%d", r)
		if err := runAll([][]string{
			{"ip", "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", port, "netns", nw.bridge},
			{"ip", "-n", name, "addr", "add", addr + "/24", "dev", "eth0"},
			{"ip", "-n", name, "link", "set", "lo", "up"},
			{"ip", "-n", name, "link", "set", "eth0", "up"},
			{"ip", "-n", nw.bridge, "link", "set", port, "master", "br0"},
			{"ip", "-n", nw.bridge, "link", "set", port, "up"},
		}); err != nil {
			return nw, err
		}
		// Shape both directions: the rank's egress (with the latency) and the
		// bridge port's egress towards the rank.
		if err := nw.shape(name, "eth0", link.latency); err != nil {
			return nw, err
		}
		if err := nw.shape(nw.bridge, port, 0); err != nil {
			return nw, err
		}
		nw.names = append(nw.names, name)
		nw.addrs = append(nw.addrs, addr)
	}
	return nw, nil
}

func (nw *netnsNetwork) addNamespace(name string) error {
	if err := runIP("ip", "netns", "add", name); err != nil {
		return err
	}
	nw.created = append(nw.created, name)
	return nil
}

func runAll(commands [][]string) error {
	for _, c := range commands {
		if err := runIP(c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// shape limits the egress of dev in namespace ns to the link rate, with netem
// where the kernel has it (adding delay), and with tbf otherwise. A link rate of
// 0 leaves the link unshaped.
func (nw *netnsNetwork) shape(ns, dev string, delay time.Duration) error {
	if nw.link.gbps <= 0 {
		return nil
	}
	rate := fmt.Sprintf("%dkbit", int64(nw.link.gbps*1e6))
	if nw.latencyEmulated {
		args := []string{"-n", ns, "qdisc", "add", "dev", dev, "root", "netem"}
		if delay > 0 {
			args = append(args, "delay", fmt.Sprintf("%dus", delay.Microseconds()))
		}
		args = append(args, "rate", rate, "limit", "100000")
		err := runIP("tc", args...)
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "qdisc kind is unknown") {
			return err
		}
		nw.latencyEmulated = false
	}
	// The bucket holds 1 ms at the link rate, and at least 128 KiB so that a
	// 64 KiB GSO packet of the veth passes whole.
	burst := max(int64(nw.link.gbps*1e9/8/1000), 128<<10)
	return runIP("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
		"burst", fmt.Sprint(burst), "latency", "20ms")
}

// describe returns the link for the report, such as "shaped links of 1 Gbit/s,
// 1ms one-way latency (netem)".
func (nw *netnsNetwork) describe() string {
	if nw.latencyEmulated {
		return fmt.Sprintf("shaped links of %v Gbit/s per direction, %v one-way latency (netem)", nw.link.gbps, nw.link.latency)
	}
	return fmt.Sprintf("shaped links of %v Gbit/s per direction (tbf; no latency added, the kernel lacks netem)", nw.link.gbps)
}

// NOTE: a launcher killed with SIGKILL cannot run Close, and its namespaces
// (rtc-<pid>-*) stay until 'ip netns del' removes them.

// Close deletes every namespace the network created, which also removes its
// veth pairs, bridge and qdiscs. Processes must have left the namespaces first.
func (nw *netnsNetwork) Close() error {
	var errs []error
	for i := len(nw.created) - 1; i >= 0; i-- {
		if err := runIP("ip", "netns", "del", nw.created[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		slog.Debug("deleted network namespace", "name", nw.created[i])
	}
	nw.created = nil
	return errors.Join(errs...)
}
