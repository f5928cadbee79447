package kernels

import "fmt"

// SegmentStarts fills dst, (B, T) with B = len(starts), with the segmentStarts
// argument of the attention ops: for each token, the offset in its row of the
// first token of the example it belongs to.
//
// starts[b] lists the start offsets of the examples packed into row b, in
// increasing order from 0, as data.Row.Starts does. An empty list means one
// example. lengths[b] is the number of real tokens of row b. The padding
// [lengths[b], T) becomes a segment of its own, so no real token's keys are
// read by padding queries. lengths may be nil when the rows have no padding.
//
// A per-token offset has a fixed size whatever the number of examples, and a
// kernel reads the first visible key of a query with one load.
func SegmentStarts(dst []int32, starts [][]int32, lengths []int, seqLen int) error {
	if len(dst) != len(starts)*seqLen {
		return fmt.Errorf("kernels: SegmentStarts: dst has %d elements, want %d rows × %d tokens = %d",
			len(dst), len(starts), seqLen, len(starts)*seqLen)
	}
	if lengths != nil && len(lengths) != len(starts) {
		return fmt.Errorf("kernels: SegmentStarts: %d lengths for %d rows. Pass one length per row, or nil", len(lengths), len(starts))
	}
	for b, rowStarts := range starts {
		length := seqLen
		if lengths != nil {
			length = lengths[b]
			if length < 0 || length > seqLen {
				return fmt.Errorf("kernels: SegmentStarts: row %d has length %d, want 0 to %d", b, length, seqLen)
			}
		}
		row := dst[b*seqLen : (b+1)*seqLen]
		if err := fillSegments(row[:length], rowStarts); err != nil {
			return fmt.Errorf("kernels: SegmentStarts: row %d: %w", b, err)
		}
		for t := length; t < seqLen; t++ {
			row[t] = int32(length)
		}
	}
	return nil
}

// fillSegments sets row[t] to the start of the example that contains t.
func fillSegments(row []int32, starts []int32) error {
	if len(starts) == 0 {
		clear(row)
		return nil
	}
	if starts[0] != 0 {
		return fmt.Errorf("the first example starts at %d, want 0", starts[0])
	}
	for k, start := range starts {
		end := len(row)
		if k+1 < len(starts) {
			end = int(starts[k+1])
			if end <= int(start) {
				return fmt.Errorf("example starts %v are not increasing", starts)
			}
		}
		if end > len(row) || (k > 0 && int(start) >= len(row)) {
			return fmt.Errorf("example starts %v go past the %d real tokens of the row", starts, len(row))
		}
		for t := int(start); t < end; t++ {
			row[t] = start
		}
	}
	return nil
}
