package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize parses a byte count such as 4096, 4KiB, 64MiB, 1GiB, 4K or 16M (binary
// units in every case).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			mult = u.mult
			t = t[:len(t)-len(u.suffix)]
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: use a byte count such as 4096, or binary units such as 4KiB, 4K or 64MiB", s)
	}
	if n > (1<<40)/mult {
		return 0, fmt.Errorf("size %q is larger than 1 TiB", s)
	}
	return n * mult, nil
}

// parseSizeList parses a comma-separated list of sizes, each a multiple of 4 bytes.
func parseSizeList(s string) ([]int64, error) {
	var out []int64
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		n, err := parseSize(part)
		if err != nil {
			return nil, err
		}
		if n%4 != 0 {
			return nil, fmt.Errorf("size %q is not a multiple of 4 bytes (one float32)", part)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty size list %q", s)
	}
	return out, nil
}

// parseIntList parses a comma-separated list of positive integers.
func parseIntList(s, flag string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("invalid --%s entry %q: use positive integers such as 2,3,4", flag, part)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty --%s list", flag)
	}
	return out, nil
}

// formatSize prints a byte count in the largest binary unit that divides it.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
