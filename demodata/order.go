package demodata

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
)

// Streams separate the keys of the two orderings, so that the poems selected first do not
// also have their titles moved to eval first.
const (
	selectionStream uint64 = 1
	splitStream     uint64 = 2
	splitMixGamma   uint64 = 0x9E3779B97F4A7C15
)

// mix64 is the output function of SplitMix64 (Steele, Lea and Flood, OOPSLA 2014), a
// bijection on uint64 whose output bits each depend on every input bit.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// hashKey returns a seeded pseudorandom key for s that is the same on every platform
// and Go release.
func hashKey(seed, stream uint64, s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return mix64(h.Sum64() ^ mix64(seed+stream*splitMixGamma))
}

// selectionKey hashes the source, title, author and lines, which identify a poem
// without depending on its file or position.
func selectionKey(seed uint64, p *poem) uint64 {
	parts := []string{fmt.Sprint(int(p.source)), p.title, p.author, strings.Join(p.lines, "\n")}
	return hashKey(seed, selectionStream, strings.Join(parts, "\x00"))
}

// comparePoems orders poems by key. Equal keys, which need a 64-bit hash collision,
// fall back to the content, so the order never depends on the input order.
func comparePoems(a, b *poem) int {
	return cmp.Or(
		cmp.Compare(a.key, b.key),
		cmp.Compare(a.source, b.source),
		strings.Compare(a.title, b.title),
		strings.Compare(a.author, b.author),
		slices.Compare(a.lines, b.lines),
	)
}

// selectPoems sets the key of each poem, sorts them by it and returns the first limit.
func selectPoems(poems []*poem, limit int, seed uint64) []*poem {
	for _, p := range poems {
		p.key = selectionKey(seed, p)
	}
	slices.SortFunc(poems, comparePoems)
	if len(poems) > limit {
		poems = poems[:limit]
	}
	return poems
}

// splitTitles returns the set of eval titles: the first ceil(fraction·n) of the n distinct
// titles of poems in the order of their split keys. The 1e-9 tolerance keeps 0.1·30 at 3,
// as data.SplitEval does. It fails unless both sides get at least one title.
func splitTitles(poems []*poem, fraction float64, seed uint64, sourceName string) (map[string]bool, error) {
	var titles []string
	seen := make(map[string]bool)
	for _, p := range poems {
		if !seen[p.title] {
			seen[p.title] = true
			titles = append(titles, p.title)
		}
	}

	n := len(titles)
	if n == 0 {
		return nil, fmt.Errorf("no %s passed the filters; raise MaxChars or check the corpus folder", sourceName)
	}
	evalCount := int(math.Ceil(fraction*float64(n) - 1e-9))
	if evalCount < 1 || evalCount >= n {
		return nil, fmt.Errorf("eval fraction %v of %d distinct %s titles leaves train or eval without a title; "+
			"adjust EvalFraction or select more poems", fraction, n, sourceName)
	}

	keys := make(map[string]uint64, n)
	for _, title := range titles {
		keys[title] = hashKey(seed, splitStream, title)
	}
	slices.SortFunc(titles, func(a, b string) int {
		return cmp.Or(cmp.Compare(keys[a], keys[b]), strings.Compare(a, b))
	})

	eval := make(map[string]bool, evalCount)
	for _, title := range titles[:evalCount] {
		eval[title] = true
	}
	return eval, nil
}
