package kernels

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Buffer is a flat array of elements owned by a Backend: device memory on a GPU
// backend, a Go slice on the CPU backend. Only the backend that allocated a
// buffer can read or write it.
type Buffer interface {
	// Len returns the number of elements.
	Len() int
	// DType returns the element type.
	DType() DType
}

// MaxRank is the largest number of dimensions a Tensor can have.
const MaxRank = 4

// Tensor is a row-major, contiguous view of 1 to MaxRank dimensions into a
// Buffer, starting at an element offset. Views share the buffer, so writing
// through one view changes every overlapping view. The zero Tensor is the
// absent tensor, which optional op arguments (such as the gradient of a frozen
// weight) accept.
type Tensor struct {
	buf    Buffer
	offset int
	dims   [MaxRank]int
	rank   int
}

// NewTensor returns the view of shape starting at element offset of buf. It
// fails when the shape has no dimension, more than MaxRank or a negative one,
// or when the view does not fit in the buffer.
func NewTensor(buf Buffer, offset int, shape ...int) (Tensor, error) {
	if buf == nil {
		return Tensor{}, fmt.Errorf("kernels: cannot make a tensor of shape %s: the buffer is nil", formatShape(shape))
	}
	if err := checkShape(shape); err != nil {
		return Tensor{}, err
	}
	n := product(shape)
	if offset < 0 || offset > buf.Len() || n > buf.Len()-offset {
		return Tensor{}, fmt.Errorf("kernels: a tensor of shape %s (%d elements) at offset %d does not fit in a %s buffer of %d elements",
			formatShape(shape), n, offset, buf.DType(), buf.Len())
	}
	t := Tensor{buf: buf, offset: offset, rank: len(shape)}
	copy(t.dims[:], shape)
	return t, nil
}

// AllocTensor allocates a buffer of exactly the tensor's size on b and returns
// the tensor that covers it.
func AllocTensor(b Backend, dtype DType, shape ...int) (Tensor, error) {
	if err := checkShape(shape); err != nil {
		return Tensor{}, err
	}
	buf, err := b.Alloc(dtype, product(shape))
	if err != nil {
		return Tensor{}, err
	}
	return NewTensor(buf, 0, shape...)
}

func checkShape(shape []int) error {
	if len(shape) == 0 || len(shape) > MaxRank {
		return fmt.Errorf("kernels: invalid shape %s: a tensor has 1 to %d dimensions", formatShape(shape), MaxRank)
	}
	n := 1
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("kernels: invalid shape %s: dimensions must not be negative", formatShape(shape))
		}
		if d > 0 && n > math.MaxInt/d {
			return fmt.Errorf("kernels: invalid shape %s: the element count overflows int", formatShape(shape))
		}
		n *= d
	}
	return nil
}

// Buffer returns the buffer that t views, or nil for the absent tensor.
func (t Tensor) Buffer() Buffer { return t.buf }

// Offset returns the element offset of t's first element in its buffer.
func (t Tensor) Offset() int { return t.offset }

// IsAbsent reports whether t is the zero Tensor.
func (t Tensor) IsAbsent() bool { return t.buf == nil }

// DType returns the element type of t's buffer, or 0 for the absent tensor.
func (t Tensor) DType() DType {
	if t.buf == nil {
		return 0
	}
	return t.buf.DType()
}

// Rank returns the number of dimensions.
func (t Tensor) Rank() int { return t.rank }

// Dim returns dimension i. A negative i counts from the end, so Dim(-1) is the
// last dimension. Dim panics when i is out of range.
func (t Tensor) Dim(i int) int {
	if i < 0 {
		i += t.rank
	}
	if i < 0 || i >= t.rank {
		panic(fmt.Sprintf("kernels: dimension index out of range for a tensor of shape %s", t.ShapeString()))
	}
	return t.dims[i]
}

// Shape returns a copy of the dimensions.
func (t Tensor) Shape() []int { return append([]int(nil), t.dims[:t.rank]...) }

// Len returns the number of elements, the product of the dimensions.
func (t Tensor) Len() int {
	if t.rank == 0 {
		return 0
	}
	return product(t.dims[:t.rank])
}

// Matrix returns t viewed as a matrix: rows is the product of all dimensions
// but the last, and cols is the last dimension. A tensor (B, T, C) is the
// matrix (B·T, C).
func (t Tensor) Matrix() (rows, cols int) {
	if t.rank == 0 {
		return 0, 0
	}
	cols = t.dims[t.rank-1]
	return product(t.dims[:t.rank-1]), cols
}

// Rows returns the rows [start, end) of t along its first dimension, sharing
// t's buffer. Rows(2, 5) of a (B, T, C) tensor is the (3, T, C) tensor of
// batch rows 2 to 4.
func (t Tensor) Rows(start, end int) (Tensor, error) {
	if t.rank == 0 {
		return Tensor{}, fmt.Errorf("kernels: cannot take rows [%d, %d) of the absent tensor", start, end)
	}
	if start < 0 || end < start || end > t.dims[0] {
		return Tensor{}, fmt.Errorf("kernels: rows [%d, %d) are out of range for a tensor of shape %s, whose first dimension is %d",
			start, end, t.ShapeString(), t.dims[0])
	}
	rowLen := product(t.dims[1:t.rank])
	v := t
	v.offset = t.offset + start*rowLen
	v.dims[0] = end - start
	return v, nil
}

// Reshape returns t with a new shape of the same number of elements, sharing
// t's buffer. One dimension may be -1, which takes the size that makes the
// element counts match: a (B, T, NH·HS) tensor reshaped to (B, T, NH, -1) is
// (B, T, NH, HS).
func (t Tensor) Reshape(shape ...int) (Tensor, error) {
	if t.rank == 0 {
		return Tensor{}, fmt.Errorf("kernels: cannot reshape the absent tensor to %s", formatShape(shape))
	}
	resolved, err := resolveShape(shape, t.Len())
	if err != nil {
		return Tensor{}, fmt.Errorf("kernels: cannot reshape a tensor of shape %s (%d elements) to %s: %w",
			t.ShapeString(), t.Len(), formatShape(shape), err)
	}
	v := t
	v.rank = len(resolved)
	v.dims = [MaxRank]int{}
	copy(v.dims[:], resolved)
	return v, nil
}

// resolveShape replaces a single -1 in shape by the size that gives n elements
// and checks that the product is n.
func resolveShape(shape []int, n int) ([]int, error) {
	if len(shape) == 0 || len(shape) > MaxRank {
		return nil, fmt.Errorf("a tensor has 1 to %d dimensions", MaxRank)
	}
	resolved := make([]int, len(shape))
	copy(resolved, shape)
	inferred := -1
	known := 1
	for i, d := range shape {
		switch {
		case d == -1 && inferred >= 0:
			return nil, fmt.Errorf("only one dimension can be -1")
		case d == -1:
			inferred = i
		case d < 0:
			return nil, fmt.Errorf("dimensions must not be negative, except one -1")
		default:
			known *= d
		}
	}
	if inferred >= 0 {
		if known == 0 || n%known != 0 {
			return nil, fmt.Errorf("the other dimensions do not divide the element count")
		}
		resolved[inferred] = n / known
		known = n
	}
	if known != n {
		return nil, fmt.Errorf("the element counts differ")
	}
	return resolved, nil
}

// ShapeString returns the shape in the form "(2, 16, 1024)".
func (t Tensor) ShapeString() string { return formatShape(t.dims[:t.rank]) }

// String returns the dtype and shape, such as "F32 (2, 16, 1024)", or "absent".
func (t Tensor) String() string {
	if t.buf == nil {
		return "absent"
	}
	return t.DType().String() + " " + t.ShapeString()
}

func formatShape(shape []int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.Itoa(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func product(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
