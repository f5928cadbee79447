package checkpoint

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Tensor is one tensor to write: its name, the dtype to store, its shape and the source
// of its elements in row-major order.
type Tensor struct {
	Name  string
	DType DType
	Shape []int // empty for a scalar
	Data  Source
}

// Source supplies a tensor's elements to Write.
type Source interface {
	// WriteData writes n elements encoded as little-endian dtype to w: exactly the
	// tensor's size in bytes. Write rejects the file when the byte count differs.
	WriteData(w io.Writer, dtype DType, n int64) error
}

// sourceChecker is implemented by the package's sources, so Write can reject a wrong
// length or dtype before it creates the file.
type sourceChecker interface {
	check(dtype DType, n int64) error
}

// FromFloat32 returns a Source that encodes values as F32, or rounds them to nearest
// even for BF16 and F16.
func FromFloat32(values []float32) Source { return float32Source(values) }

// FromBF16 returns a Source of bfloat16 bit patterns. They are stored as is for BF16,
// widened exactly for F32 and rounded to nearest even for F16.
func FromBF16(values []uint16) Source { return bf16Source(values) }

// FromBytes returns a Source of bytes that already encode the tensor as its dtype,
// little-endian. It suits any dtype.
func FromBytes(data []byte) Source { return bytesSource(data) }

// FromReader returns a Source that copies the tensor's size in bytes from r, which
// must already encode the tensor as its dtype, little-endian.
func FromReader(r io.Reader) Source { return readerSource{r} }

// FromTensor returns a Source that copies the named tensor from r without holding it in
// memory. The bytes are copied as they are when the dtypes match. Between F32, F16 and
// BF16 it converts through float32, rounding to nearest even.
func FromTensor(r Reader, name string) Source { return tensorSource{r, name} }

type float32Source []float32

func (s float32Source) check(dtype DType, n int64) error {
	if !dtype.isFloat() {
		return sourceError(ErrDTypeMismatch, "use FromBytes or FromReader for other dtypes", "FromFloat32 data cannot be stored as %s, only as F32, F16 or BF16", dtype)
	}
	if int64(len(s)) != n {
		return sourceError(ErrShapeMismatch, "", "FromFloat32 has %d values, but the shape has %d elements", len(s), n)
	}
	return nil
}

func (s float32Source) WriteData(w io.Writer, dtype DType, n int64) error {
	if err := s.check(dtype, n); err != nil {
		return err
	}
	return writeChunks(w, dtype.Bits()/8, len(s), func(dst []byte, lo, hi int) {
		encodeFloat32(dtype, dst, s[lo:hi])
	})
}

type bf16Source []uint16

func (s bf16Source) check(dtype DType, n int64) error {
	if !dtype.isFloat() {
		return sourceError(ErrDTypeMismatch, "use FromBytes or FromReader for other dtypes", "FromBF16 data cannot be stored as %s, only as BF16, F32 or F16", dtype)
	}
	if int64(len(s)) != n {
		return sourceError(ErrShapeMismatch, "", "FromBF16 has %d values, but the shape has %d elements", len(s), n)
	}
	return nil
}

func (s bf16Source) WriteData(w io.Writer, dtype DType, n int64) error {
	if err := s.check(dtype, n); err != nil {
		return err
	}
	return writeChunks(w, dtype.Bits()/8, len(s), func(dst []byte, lo, hi int) {
		encodeBF16(dtype, dst, s[lo:hi])
	})
}

type bytesSource []byte

func (s bytesSource) check(dtype DType, n int64) error {
	size, _ := byteSize(dtype, n) // checkTensor has checked the size
	if int64(len(s)) != size {
		return sourceError(ErrShapeMismatch, "", "FromBytes has %d bytes, but %d elements of %s need %d", len(s), n, dtype, size)
	}
	return nil
}

func (s bytesSource) WriteData(w io.Writer, dtype DType, n int64) error {
	if err := s.check(dtype, n); err != nil {
		return err
	}
	_, err := w.Write(s)
	return err
}

type readerSource struct{ r io.Reader }

func (s readerSource) WriteData(w io.Writer, dtype DType, n int64) error {
	size, _ := byteSize(dtype, n)
	copied, err := io.CopyN(w, s.r, size)
	if err == io.EOF {
		return sourceError(ErrShapeMismatch, "", "FromReader ended after %d of the %d bytes that %d elements of %s need", copied, size, n, dtype)
	}
	return err
}

type tensorSource struct {
	r    Reader
	name string
}

func (s tensorSource) check(dtype DType, n int64) error {
	info, err := s.r.Info(s.name)
	if err != nil {
		return err
	}
	if info.NumElements() != n {
		return sourceError(ErrShapeMismatch, "", "FromTensor source %q in %s has shape %v (%d elements), but the shape has %d",
			s.name, info.Path, info.Shape, info.NumElements(), n)
	}
	if info.DType != dtype && !(info.DType.isFloat() && dtype.isFloat()) {
		return sourceError(ErrDTypeMismatch, "", "FromTensor source %q in %s is %s and cannot be converted to %s", s.name, info.Path, info.DType, dtype)
	}
	return nil
}

func (s tensorSource) WriteData(w io.Writer, dtype DType, n int64) error {
	if err := s.check(dtype, n); err != nil {
		return err
	}
	info, _ := s.r.Info(s.name)
	section, err := s.r.Section(s.name)
	if err != nil {
		return err
	}
	if info.DType == dtype {
		if _, err := io.CopyN(w, section, info.Size()); err != nil {
			return fmt.Errorf("copying tensor %q from %s: %w", s.name, info.Path, err)
		}
		return nil
	}

	// Convert chunk by chunk: read source elements, widen them to float32, encode them.
	srcElem, dstElem := int64(info.DType.Bits()/8), int64(dtype.Bits()/8)
	perChunk := min(n, chunkBytes/max(srcElem, dstElem))
	in := make([]byte, perChunk*srcElem)
	out := make([]byte, perChunk*dstElem)
	values := make([]float32, perChunk)
	for lo := int64(0); lo < n; lo += perChunk {
		k := min(perChunk, n-lo)
		if _, err := io.ReadFull(section, in[:k*srcElem]); err != nil {
			return fmt.Errorf("reading tensor %q from %s: %w", s.name, info.Path, err)
		}
		decodeFloat32(info.DType, values[:k], in[:k*srcElem])
		encodeFloat32(dtype, out[:k*dstElem], values[:k])
		if _, err := w.Write(out[:k*dstElem]); err != nil {
			return err
		}
	}
	return nil
}

// writeChunks encodes n elements of elem bytes each and writes them to w in chunks:
// encode fills dst with elements [lo, hi).
func writeChunks(w io.Writer, elem, n int, encode func(dst []byte, lo, hi int)) error {
	bufp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bufp)
	perChunk := chunkBytes / elem
	for lo := 0; lo < n; lo += perChunk {
		hi := min(lo+perChunk, n)
		dst := (*bufp)[:(hi-lo)*elem]
		encode(dst, lo, hi)
		if _, err := w.Write(dst); err != nil {
			return err
		}
	}
	return nil
}

func sourceError(kind error, hint, format string, args ...any) *Error {
	return newError("", "", kind, hint, format, args...)
}

// plannedTensor is a validated Tensor with its place in the data section.
type plannedTensor struct {
	Tensor
	size       int64
	begin, end int64
}

// Write writes tensors and metadata to a safetensors file at path. It writes to a
// temporary file in the same directory, syncs it and renames it over path, so a crash
// leaves either the old file or the complete new one, never a partial file. The data
// streams through a 1 MiB buffer, so memory use does not grow with the file.
//
// The layout matches huggingface/safetensors' serialize_to_file. Tensors are sorted by
// descending dtype alignment, the reverse order of the DType constants, and then by
// name. The JSON header is padded with spaces to a multiple of 8 bytes. Together these
// start every tensor of a whole-byte dtype at a multiple of its element size. Metadata
// keys are written in sorted order, and nil or empty metadata writes no "__metadata__"
// entry.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	planned, header, err := planFile(path, tensors, metadata)
	if err != nil {
		return err
	}
	return writeAtomic(path, func(w io.Writer) error {
		var prefix [8]byte
		binary.LittleEndian.PutUint64(prefix[:], uint64(len(header)))
		if _, err := w.Write(prefix[:]); err != nil {
			return &Error{Path: path, Kind: ErrIO, Msg: "write failed", Err: err}
		}
		if _, err := w.Write(header); err != nil {
			return &Error{Path: path, Kind: ErrIO, Msg: "write failed", Err: err}
		}
		for _, t := range planned {
			if err := writeTensorData(w, path, t); err != nil {
				return err
			}
		}
		return nil
	})
}

// writeTensorData streams one tensor from its Source and checks the byte count.
func writeTensorData(w io.Writer, path string, t plannedTensor) error {
	n, _ := numElements(t.Shape)
	counter := &exactWriter{w: w, remaining: t.size}
	err := t.Data.WriteData(counter, t.DType, n)
	if err == nil && counter.remaining != 0 {
		err = sourceError(ErrShapeMismatch, "", "source wrote %d bytes, but shape %v of %s needs %d", t.size-counter.remaining, t.Shape, t.DType, t.size)
	}
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return withTensorContext(err, path, t.Name)
	}
	return &Error{Path: path, Tensor: t.Name, Kind: ErrIO, Msg: "writing the tensor data failed", Err: err}
}

// withTensorContext fills in the output path and tensor name of an *Error from a
// Source. An error about another file, such as FromTensor's source file, is wrapped so
// that the message names both files.
func withTensorContext(err error, path, tensor string) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	if e.Path != "" {
		return &Error{Path: path, Tensor: tensor, Kind: e.Kind, Msg: "cannot read the source tensor", Err: err}
	}
	copied := *e
	copied.Path, copied.Tensor = path, tensor
	return &copied
}

// exactWriter passes at most remaining bytes on to w.
type exactWriter struct {
	w         io.Writer
	remaining int64
}

func (e *exactWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > e.remaining {
		return 0, sourceError(ErrShapeMismatch, "", "source wrote more bytes than the shape and dtype need")
	}
	n, err := e.w.Write(p)
	e.remaining -= int64(n)
	return n, err
}

// planFile validates tensors and metadata, orders the tensors as safetensors does and
// returns them with the padded JSON header.
func planFile(path string, tensors []Tensor, metadata map[string]string) ([]plannedTensor, []byte, error) {
	if err := checkMetadata(path, metadata); err != nil {
		return nil, nil, err
	}
	planned := make([]plannedTensor, 0, len(tensors))
	seen := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		size, err := checkTensor(path, t)
		if err != nil {
			return nil, nil, err
		}
		if seen[t.Name] {
			return nil, nil, newError(path, t.Name, ErrInvalidTensor, "", "duplicate tensor name")
		}
		seen[t.Name] = true
		planned = append(planned, plannedTensor{Tensor: t, size: size})
	}

	sort.SliceStable(planned, func(i, j int) bool {
		ri, rj := dtypeRank[planned[i].DType], dtypeRank[planned[j].DType]
		if ri != rj {
			return ri > rj
		}
		return planned[i].Name < planned[j].Name
	})
	var offset int64
	for i := range planned {
		planned[i].begin = offset
		offset += planned[i].size
		planned[i].end = offset
	}

	header := encodeHeader(planned, metadata)
	if len(header) > MaxHeaderSize {
		return nil, nil, newError(path, "", ErrHeaderTooLarge, "write fewer tensors or less metadata per file",
			"header would be %d bytes, more than the limit of %d", len(header), MaxHeaderSize)
	}
	return planned, header, nil
}

func checkMetadata(path string, metadata map[string]string) error {
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return newError(path, "", ErrInvalidTensor, "", "metadata entry %q is not valid UTF-8", k)
		}
	}
	return nil
}

// checkTensor validates one Tensor and returns its data size in bytes.
func checkTensor(path string, t Tensor) (int64, error) {
	switch {
	case t.Name == "":
		return 0, newError(path, "", ErrInvalidTensor, "", "tensor name is empty")
	case t.Name == metadataKey:
		return 0, newError(path, t.Name, ErrInvalidTensor, "pass metadata in the metadata argument", "name is reserved for the metadata map")
	case !utf8.ValidString(t.Name):
		return 0, newError(path, t.Name, ErrInvalidTensor, "", "name is not valid UTF-8")
	case !t.DType.Valid():
		return 0, newError(path, t.Name, ErrUnknownDType, "", "dtype %q is not one of the safetensors dtypes %s", t.DType, knownDTypes())
	case t.Data == nil:
		return 0, newError(path, t.Name, ErrInvalidTensor, "set Data, for example with FromFloat32", "tensor has no Data source")
	}
	n, ok := numElements(t.Shape)
	if !ok {
		return 0, newError(path, t.Name, ErrShapeMismatch, "", "shape %v has a negative dimension or more elements than fit in int64", t.Shape)
	}
	size, err := byteSize(t.DType, n)
	if err != nil {
		return 0, newError(path, t.Name, ErrShapeMismatch, "", "the %d elements of shape %v of %s %s", n, t.Shape, t.DType, err)
	}
	if c, ok := t.Data.(sourceChecker); ok {
		if err := c.check(t.DType, n); err != nil {
			return 0, withTensorContext(err, path, t.Name)
		}
	}
	return size, nil
}

// encodeHeader returns the JSON header in serde_json's compact form, as
// huggingface/safetensors writes it, padded with spaces to a multiple of 8 bytes.
func encodeHeader(tensors []plannedTensor, metadata map[string]string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		writeJSONString(&b, metadataKey)
		b.WriteString(":{")
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}
	for _, t := range tensors {
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeJSONString(&b, string(t.DType))
		b.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(d))
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, t.begin, t.end)
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes()
}

// writeJSONString writes s as a JSON string the way serde_json does: it escapes '"',
// '\\' and control characters only, and leaves other characters, '<', '>', '&',
// U+2028 and U+2029 included, as UTF-8.
func writeJSONString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// writeAtomic writes a file through a temporary sibling: write fills it through a
// buffer, and the file is synced, renamed over path and its directory synced. On any
// error the temporary file is removed and path is left as it was.
func writeAtomic(path string, write func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "cannot create a temporary file next to it", Err: err}
	}
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				tmp.Close()
			}
			os.Remove(tmp.Name())
		}
	}()

	bw := bufio.NewWriterSize(tmp, chunkBytes)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "write failed", Err: err}
	}
	// CreateTemp creates files with mode 0600. Give the result the mode that tools such
	// as Python's open() give new files under the usual umask 022.
	if err := tmp.Chmod(0o644); err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "chmod failed", Err: err}
	}
	if err := tmp.Sync(); err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "fsync failed", Err: err}
	}
	closed = true
	if err := tmp.Close(); err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "close failed", Err: err}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "cannot rename the temporary file into place", Err: err}
	}
	return syncDir(dir, path)
}

// syncDir makes a rename in dir durable.
func syncDir(dir, path string) error {
	d, err := os.Open(dir)
	if err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "cannot open the directory to sync the rename", Err: err}
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return &Error{Path: path, Kind: ErrIO, Msg: "directory fsync failed", Err: err}
	}
	return nil
}
