package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize is the largest JSON header, in bytes, that the reader accepts and the
// writer produces. huggingface/safetensors uses the same limit (MAX_HEADER_SIZE in
// safetensors/src/tensor.rs).
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key of the free-form string metadata.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int // row-major dimensions, empty for a scalar
	// Begin and End are the header's data_offsets: the tensor's byte range relative to
	// the start of the data section, End exclusive.
	Begin, End int64
	Path       string // file that contains the tensor, empty for ParseHeader
}

// NumElements returns the product of Shape, which is 1 for a scalar.
func (t TensorInfo) NumElements() int64 {
	n, _ := numElements(t.Shape)
	return n
}

// Size returns the tensor's data size in bytes.
func (t TensorInfo) Size() int64 {
	return t.End - t.Begin
}

func (t TensorInfo) clone() TensorInfo {
	t.Shape = slices.Clone(t.Shape)
	if t.Shape == nil {
		t.Shape = []int{}
	}
	return t
}

// Header is the parsed JSON header of a safetensors file.
type Header struct {
	// Tensors in the order of their data in the file, as safetensors' offset_keys
	// returns them.
	Tensors []TensorInfo
	// Metadata is the "__metadata__" map, or nil when the header has none.
	Metadata map[string]string
	// DataSize is the number of bytes that the tensors cover: the End of the last one.
	DataSize int64
}

// ParseHeader parses and validates the JSON header of a safetensors file: the bytes
// that follow the 8-byte length prefix. It applies the checks of huggingface/safetensors
// (safetensors/src/tensor.rs): valid UTF-8 and JSON, leading and trailing whitespace
// allowed, known dtypes, shapes whose size in bytes equals the data_offsets range, and
// ranges that run contiguously from 0 without overlap. It also rejects duplicate
// tensor names. Whether the file has DataSize bytes after the header is for the
// caller to check, as NewFile does.
func ParseHeader(header []byte) (*Header, error) {
	if len(header) > MaxHeaderSize {
		return nil, newError("", "", ErrHeaderTooLarge, "", "header is %d bytes, more than the limit of %d", len(header), MaxHeaderSize)
	}
	if !utf8.Valid(header) {
		return nil, newError("", "", ErrInvalidHeader, hintCorrupt, "header is not valid UTF-8 (first invalid byte at header offset %d)", invalidUTF8Offset(header))
	}

	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}

	h := &Header{}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalidJSON(err)
		}
		name, _ := tok.(string) // object keys are always strings
		if seen[name] {
			return nil, newError("", name, ErrInvalidHeader, hintCorrupt, "duplicate entry in the header")
		}
		seen[name] = true

		if name == metadataKey {
			if h.Metadata, err = decodeMetadata(dec); err != nil {
				return nil, err
			}
			continue
		}
		info, err := decodeTensorInfo(dec, name)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, info)
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, newError("", "", ErrInvalidHeader, hintCorrupt, "header has data after its JSON object (only spaces may pad it)")
	}

	// Like safetensors, order tensors by data_offsets whatever their order in the JSON.
	slices.SortStableFunc(h.Tensors, func(a, b TensorInfo) int {
		if a.Begin != b.Begin {
			return cmpInt64(a.Begin, b.Begin)
		}
		return cmpInt64(a.End, b.End)
	})
	end, err := checkContiguous(h.Tensors)
	if err != nil {
		return nil, err
	}
	h.DataSize = end
	return h, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkContiguous checks that tensors, sorted by offsets, tile [0, end) without gaps or
// overlaps, and returns end.
func checkContiguous(tensors []TensorInfo) (end int64, err error) {
	prev := ""
	for _, t := range tensors {
		switch {
		case t.Begin < end:
			return 0, newError("", t.Name, ErrInvalidOffsets, hintCorrupt,
				"data_offsets [%d, %d] overlap tensor %q, which ends at %d", t.Begin, t.End, prev, end)
		case t.Begin > end && prev == "":
			return 0, newError("", t.Name, ErrInvalidOffsets, hintCorrupt,
				"data_offsets [%d, %d] leave the first %d bytes of the data section to no tensor", t.Begin, t.End, t.Begin)
		case t.Begin > end:
			return 0, newError("", t.Name, ErrInvalidOffsets, hintCorrupt,
				"data_offsets [%d, %d] leave a gap of %d bytes after tensor %q, which ends at %d", t.Begin, t.End, t.Begin-end, prev, end)
		}
		end = t.End
		prev = t.Name
	}
	return end, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return invalidJSON(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return newError("", "", ErrInvalidHeader, hintCorrupt, "header is not a JSON object (found %v where %q was expected)", tok, string(want))
	}
	return nil
}

func invalidJSON(err error) *Error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	e := newError("", "", ErrInvalidHeader, hintCorrupt, "header is not valid JSON")
	e.Err = err
	return e
}

func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

func decodeMetadata(dec *json.Decoder) (map[string]string, error) {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, invalidJSON(err)
	}
	if string(raw) == "null" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, newError("", "", ErrInvalidHeader, hintCorrupt, "%s must map strings to strings, found %s", metadataKey, truncateForMessage(raw))
	}
	return m, nil
}

// decodeTensorInfo decodes and checks one tensor entry. Unknown fields are ignored, as
// safetensors' serde decoder ignores them.
func decodeTensorInfo(dec *json.Decoder, name string) (TensorInfo, error) {
	info := TensorInfo{Name: name}
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return info, invalidJSON(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return info, newError("", name, ErrInvalidHeader, hintCorrupt,
			`entry must be an object with "dtype", "shape" and "data_offsets", found %s`, truncateForMessage(raw))
	}
	for _, key := range []string{"dtype", "shape", "data_offsets"} {
		if _, ok := fields[key]; !ok {
			return info, newError("", name, ErrInvalidHeader, hintCorrupt, "entry has no %q field", key)
		}
	}

	var dtype string
	dtypeRaw := fields["dtype"]
	if !bytes.HasPrefix(dtypeRaw, []byte(`"`)) || json.Unmarshal(dtypeRaw, &dtype) != nil {
		return info, newError("", name, ErrInvalidHeader, hintCorrupt, "dtype must be a string, found %s", truncateForMessage(dtypeRaw))
	}
	info.DType = DType(dtype)
	if !info.DType.Valid() {
		return info, newError("", name, ErrUnknownDType, "the file was written by a newer or non-standard tool",
			"dtype %q is not one of the safetensors dtypes %s", dtype, knownDTypes())
	}

	shape, err := decodeUints(fields["shape"], -1)
	if err != nil {
		return info, newError("", name, ErrInvalidHeader, hintCorrupt, "shape must be an array of non-negative integers: %s", err)
	}
	info.Shape = make([]int, len(shape))
	for i, d := range shape {
		if d > math.MaxInt {
			return info, newError("", name, ErrShapeMismatch, "", "dimension %d of shape is %d, which exceeds the maximum int on this platform", i, d)
		}
		info.Shape[i] = int(d)
	}

	offsets, err := decodeUints(fields["data_offsets"], 2)
	if err != nil {
		return info, newError("", name, ErrInvalidHeader, hintCorrupt, "data_offsets must be two non-negative integers [begin, end]: %s", err)
	}
	info.Begin, info.End = offsets[0], offsets[1]
	if info.End < info.Begin {
		return info, newError("", name, ErrInvalidOffsets, hintCorrupt, "data_offsets [%d, %d] end before they begin", info.Begin, info.End)
	}

	n, ok := numElements(info.Shape)
	if !ok {
		return info, newError("", name, ErrShapeMismatch, hintCorrupt, "shape %v has more elements than fit in a signed 64-bit count", info.Shape)
	}
	size, err := byteSize(info.DType, n)
	if err != nil {
		return info, newError("", name, ErrShapeMismatch, hintCorrupt, "the %d elements of shape %v of %s %s", n, info.Shape, info.DType, err)
	}
	if size != info.End-info.Begin {
		return info, newError("", name, ErrShapeMismatch, hintCorrupt,
			"data_offsets [%d, %d] span %d bytes, but shape %v of %s needs %d", info.Begin, info.End, info.End-info.Begin, info.Shape, info.DType, size)
	}
	return info, nil
}

// decodeUints decodes a JSON array of integers in [0, 2^63). want is the required
// length, or -1 for any length. Fractions, exponents, signs and quoted numbers are
// rejected, as serde rejects them for Rust's usize.
func decodeUints(raw json.RawMessage, want int) ([]int64, error) {
	var elems []json.RawMessage
	if !bytes.HasPrefix(raw, []byte("[")) || json.Unmarshal(raw, &elems) != nil {
		return nil, fmt.Errorf("found %s", truncateForMessage(raw))
	}
	if want >= 0 && len(elems) != want {
		return nil, fmt.Errorf("found %d elements in %s", len(elems), truncateForMessage(raw))
	}
	out := make([]int64, len(elems))
	for i, e := range elems {
		text := strings.TrimSpace(string(e))
		v, err := strconv.ParseUint(text, 10, 63)
		if err != nil {
			return nil, fmt.Errorf("element %d is %s", i, truncateForMessage([]byte(text)))
		}
		out[i] = int64(v)
	}
	return out, nil
}

// truncateForMessage shortens a JSON fragment to at most 80 bytes for an error message.
func truncateForMessage(b []byte) string {
	const limit = 80
	if len(b) <= limit {
		return string(b)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return string(b[:cut]) + "..."
}
