package train

import (
	"fmt"

	"github.com/ringtune/ringtune/model"
)

// DefaultBucketBytes is the default gradient bucket size, PyTorch DDP's
// bucket_cap_mb default of 25 MiB.
const DefaultBucketBytes = 25 << 20

// Bucket is a contiguous range of FlatGrads that is all-reduced as one
// operation once every gradient in it is final.
type Bucket struct {
	// First and Last are the lowest and highest Trainable indices in the bucket.
	// Backward finishes Last first and First last.
	First, Last int
	// Start and End delimit the bucket's elements in FlatGrads, [Start, End).
	Start, End int
}

// Bytes returns the size of the bucket's float32 gradients.
func (b Bucket) Bytes() int { return 4 * (b.End - b.Start) }

// PlanBuckets cuts trainable gradients of the given sizes, in elements and in
// Trainable order, into buckets laid out back to back from element 0 of
// FlatGrads. Buckets are cut in reverse Trainable order, the order in which
// backward finishes the gradients. A bucket holds at most bucketBytes of float32
// gradients unless a single tensor is larger, in which case that tensor is a
// bucket of its own. Buckets are returned in the order they become ready.
// It needs shapes only, so tools can plan the buckets of a model without building it.
func PlanBuckets(sizes []int, bucketBytes int) ([]Bucket, error) {
	if bucketBytes <= 0 {
		return nil, fmt.Errorf("invalid bucket size %d bytes: must be positive", bucketBytes)
	}
	ends := make([]int, len(sizes)) // ends[i] is where tensor i's gradient ends in FlatGrads
	total := 0
	for i, size := range sizes {
		if size < 0 {
			return nil, fmt.Errorf("trainable tensor %d has a negative size %d", i, size)
		}
		total += size
		ends[i] = total
	}

	var buckets []Bucket
	open := false
	var current Bucket
	for i := len(sizes) - 1; i >= 0; i-- {
		start, end := ends[i]-sizes[i], ends[i]
		if open && 4*(current.End-start) > bucketBytes {
			buckets = append(buckets, current)
			open = false
		}
		if !open {
			current = Bucket{First: i, Last: i, Start: start, End: end}
			open = true
			continue
		}
		current.First = i
		current.Start = start
	}
	if open {
		buckets = append(buckets, current)
	}
	return buckets, nil
}

// partitionBuckets checks that the gradients of params lie back to back in
// Trainable order, starting at flatOffset, and cuts them with PlanBuckets.
func partitionBuckets(params []model.Param, flatOffset, bucketBytes int) ([]Bucket, error) {
	sizes := make([]int, len(params))
	next := flatOffset
	for i, p := range params {
		if p.Grad.IsAbsent() {
			return nil, fmt.Errorf("trainable tensor %s has no gradient", p.Name)
		}
		if p.Grad.Offset() != next {
			return nil, fmt.Errorf("gradient of %s starts at element %d of FlatGrads, but the previous tensor's gradient ends at %d: buckets need the gradients back to back in Trainable order",
				p.Name, p.Grad.Offset()-flatOffset, next-flatOffset)
		}
		sizes[i] = p.Grad.Len()
		next += sizes[i]
	}
	return PlanBuckets(sizes, bucketBytes)
}
