package tokenizer

import (
	"container/heap"
	"sync"
)

// byteToRune is GPT-2's byte-level alphabet: printable Latin-1 bytes map to themselves and
// the rest to U+0100 onwards, so every byte has a visible character in the vocabulary.
var byteToRune = func() (table [256]rune) {
	n := 0
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			table[b] = rune(b)
			continue
		}
		table[b] = rune(256 + n)
		n++
	}
	return table
}()

// merge is one BPE merge rule: the pair's rank (lower merges first) and the merged token.
type merge struct {
	rank int32
	id   int32
}

func pairKey(left, right int32) uint64 {
	return uint64(uint32(left))<<32 | uint64(uint32(right))
}

// bpeModel holds the vocabulary of a byte-level BPE model and a cache of encoded words.
type bpeModel struct {
	byteIDs [256]int32 // token of each single byte; -1 when the vocabulary lacks it
	merges  map[uint64]merge

	cacheMu sync.RWMutex
	cache   map[string][]int32
}

// maxCacheEntries bounds the word cache; once it is full, new words are encoded each time.
const maxCacheEntries = 1 << 16

// maxCachedWordBytes keeps long runs (base64, minified code) out of the cache.
const maxCachedWordBytes = 64

// encodeWord appends the tokens of one pre-tokenized piece to dst.
func (m *bpeModel) encodeWord(dst []int32, word string) []int32 {
	cacheable := len(word) <= maxCachedWordBytes
	if cacheable {
		m.cacheMu.RLock()
		ids, ok := m.cache[word]
		m.cacheMu.RUnlock()
		if ok {
			return append(dst, ids...)
		}
	}

	start := len(dst)
	if len(word) <= 32 {
		dst = m.mergeSmall(dst, word)
	} else {
		dst = m.mergeLarge(dst, word)
	}

	if cacheable {
		ids := append([]int32(nil), dst[start:]...)
		m.cacheMu.Lock()
		if len(m.cache) < maxCacheEntries {
			m.cache[word] = ids
		}
		m.cacheMu.Unlock()
	}
	return dst
}

// mergeSmall applies the merges to a short word by rescanning for the lowest-ranked pair,
// which is faster than a heap for the few symbols of a typical word.
func (m *bpeModel) mergeSmall(dst []int32, word string) []int32 {
	var buf [32]int32
	syms := buf[:0]
	for i := 0; i < len(word); i++ {
		if id := m.byteIDs[word[i]]; id >= 0 {
			syms = append(syms, id)
		}
	}

	for len(syms) > 1 {
		best, bestAt := merge{rank: -1}, -1
		for i := 0; i+1 < len(syms); i++ {
			if mg, ok := m.merges[pairKey(syms[i], syms[i+1])]; ok && (bestAt < 0 || mg.rank < best.rank) {
				best, bestAt = mg, i
			}
		}
		if bestAt < 0 {
			break
		}
		syms[bestAt] = best.id
		syms = append(syms[:bestAt+1], syms[bestAt+2:]...)
	}
	return append(dst, syms...)
}

// symbol is a node of the doubly linked list that mergeLarge rewrites in place.
type symbol struct {
	id         int32
	prev, next int32 // indexes into the symbol slice; -1 at the ends
	dead       bool
}

// candidate is a pair that may merge: the left symbol's index, the rank and the pair's ids
// at the time it was queued, so stale entries can be recognised.
type candidate struct {
	at          int32
	rank        int32
	left, right int32
	merged      int32
}

type candidateHeap []candidate

func (h candidateHeap) Len() int { return len(h) }
func (h candidateHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].at < h[j].at
}
func (h candidateHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *candidateHeap) Push(x any)   { *h = append(*h, x.(candidate)) }
func (h *candidateHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// mergeLarge applies the merges with a priority queue, O(n log n) in the word length, so
// that a megabyte without spaces cannot stall the encoder. Ties go to the leftmost pair.
func (m *bpeModel) mergeLarge(dst []int32, word string) []int32 {
	syms := make([]symbol, 0, len(word))
	for i := 0; i < len(word); i++ {
		if id := m.byteIDs[word[i]]; id >= 0 {
			n := int32(len(syms))
			syms = append(syms, symbol{id: id, prev: n - 1, next: n + 1})
		}
	}
	if len(syms) == 0 {
		return dst
	}
	syms[len(syms)-1].next = -1

	h := make(candidateHeap, 0, len(syms))
	push := func(at int32) {
		next := syms[at].next
		if next < 0 {
			return
		}
		left, right := syms[at].id, syms[next].id
		if mg, ok := m.merges[pairKey(left, right)]; ok {
			heap.Push(&h, candidate{at: at, rank: mg.rank, left: left, right: right, merged: mg.id})
		}
	}
	for i := range syms {
		push(int32(i))
	}

	for h.Len() > 0 {
		c := heap.Pop(&h).(candidate)
		left := &syms[c.at]
		if left.dead || left.id != c.left || left.next < 0 {
			continue
		}
		right := &syms[left.next]
		if right.id != c.right {
			continue
		}

		left.id = c.merged
		right.dead = true
		left.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = c.at
		}
		if left.prev >= 0 {
			push(left.prev)
		}
		push(c.at)
	}

	for i := int32(0); i >= 0; i = syms[i].next {
		dst = append(dst, syms[i].id)
	}
	return dst
}

// clearCache empties the word cache; benchmarks use it to time encoding from scratch.
func (m *bpeModel) clearCache() {
	m.cacheMu.Lock()
	m.cache = make(map[string][]int32)
	m.cacheMu.Unlock()
}
