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

// partitionBuckets cuts the trainable gradients into buckets in reverse
// Trainable order, the order in which backward finishes them. A bucket holds at
// most bucketBytes unless a single tensor is larger, in which case that tensor
// is a bucket of its own. Buckets are returned in the order they become ready.
func partitionBuckets(params []model.Param, flatOffset, bucketBytes int) ([]Bucket, error) {
	var buckets []Bucket
	open := false
	var current Bucket
	for i := len(params) - 1; i >= 0; i-- {
		grad := params[i].Grad
		if grad.IsAbsent() {
			return nil, fmt.Errorf("trainable tensor %s has no gradient", params[i].Name)
		}
		start := grad.Offset() - flatOffset
		end := start + grad.Len()
		if open && end != current.Start {
			return nil, fmt.Errorf("gradient of %s ends at element %d of FlatGrads, but the next tensor's gradient starts at %d: buckets need the gradients back to back in Trainable order",
				params[i].Name, end, current.Start)
		}
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
