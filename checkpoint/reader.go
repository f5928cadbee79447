package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
)

// Reader is the read side that *File and *Model share.
type Reader interface {
	Tensors() []TensorInfo
	Info(name string) (TensorInfo, error)
	Metadata() map[string]string
	Section(name string) (*io.SectionReader, error)
	ReadRaw(name string, dst []byte) error
	ReadFloat32(name string, dst []float32) error
	ReadBF16(name string, dst []uint16) error
	CheckShape(name string, shape ...int) error
}

var (
	_ Reader = (*File)(nil)
	_ Reader = (*Model)(nil)
)

// File is an open safetensors file. It reads tensor data on demand with ReadAt, so it
// keeps only the header in memory. Its methods are safe for concurrent use.
type File struct {
	path      string
	r         io.ReaderAt
	closer    io.Closer
	header    *Header
	byName    map[string]int
	dataStart int64 // file offset of the data section: 8 + header length
}

// Open opens the safetensors file at path and validates its header against the file
// size. Close the File when done.
func Open(path string) (*File, error) {
	osFile, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{Path: path, Kind: ErrNotFound, Msg: "cannot open safetensors file", Err: errors.Unwrap(err)}
		}
		return nil, &Error{Path: path, Kind: ErrIO, Msg: "cannot open safetensors file", Err: err}
	}
	st, err := osFile.Stat()
	if err != nil {
		osFile.Close()
		return nil, &Error{Path: path, Kind: ErrIO, Msg: "cannot stat safetensors file", Err: err}
	}
	if st.IsDir() {
		osFile.Close()
		return nil, newError(path, "", ErrNotFound, "use OpenModel for a model directory", "is a directory, not a safetensors file")
	}
	f, err := NewFile(osFile, st.Size(), path)
	if err != nil {
		osFile.Close()
		return nil, err
	}
	f.closer = osFile
	return f, nil
}

// NewFile reads the safetensors header from r, which has size bytes, and validates it.
// name labels error messages. It checks, as huggingface/safetensors does, that the
// header length is at most MaxHeaderSize and that the tensors cover the data section
// exactly. The caller keeps ownership of r: Close does not close it.
func NewFile(r io.ReaderAt, size int64, name string) (*File, error) {
	if size < 8 {
		return nil, newError(name, "", ErrTruncated, hintTruncated, "file is %d bytes, shorter than the 8-byte header length", size)
	}
	var prefix [8]byte
	if err := readFull(r, prefix[:], 0); err != nil {
		return nil, &Error{Path: name, Kind: ErrIO, Msg: "cannot read the header length", Err: err}
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > MaxHeaderSize {
		return nil, newError(name, "", ErrHeaderTooLarge, "check that this is a safetensors file",
			"header length is %d bytes, more than the limit of %d", n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, newError(name, "", ErrTruncated, hintTruncated,
			"header length is %d bytes, but the file has only %d bytes after the 8-byte length", n, size-8)
	}

	headerBytes := make([]byte, n)
	if err := readFull(r, headerBytes, 8); err != nil {
		return nil, &Error{Path: name, Kind: ErrIO, Msg: "cannot read the header", Err: err}
	}
	h, err := ParseHeader(headerBytes)
	if err != nil {
		return nil, withPath(err, name)
	}

	dataStart := 8 + int64(n)
	available := size - dataStart
	if h.DataSize < available {
		extra := available - h.DataSize
		if len(h.Tensors) == 0 {
			return nil, newError(name, "", ErrInvalidOffsets, hintCorrupt, "header lists no tensors, but %d data bytes follow it", extra)
		}
		last := h.Tensors[len(h.Tensors)-1]
		return nil, newError(name, last.Name, ErrInvalidOffsets, hintCorrupt,
			"%d bytes after the end of this last tensor (data_offsets end %d) belong to no tensor", extra, h.DataSize)
	}
	if h.DataSize > available {
		for _, t := range h.Tensors {
			if t.End > available {
				return nil, newError(name, t.Name, ErrTruncated, hintTruncated,
					"data_offsets [%d, %d] run past the end of the data section, which has %d bytes", t.Begin, t.End, available)
			}
		}
	}

	f := &File{path: name, r: r, header: h, byName: make(map[string]int, len(h.Tensors)), dataStart: dataStart}
	for i := range h.Tensors {
		h.Tensors[i].Path = name
		f.byName[h.Tensors[i].Name] = i
	}
	return f, nil
}

// readFull reads len(p) bytes at off. Unlike a bare ReadAt, it accepts io.EOF together
// with a full read, which the io.ReaderAt contract allows at the end of the input.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Path returns the name that the File was opened with.
func (f *File) Path() string { return f.path }

// Close closes the underlying file when Open opened it. It does nothing for a File
// from NewFile.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// Tensors returns every tensor in the order of its data in the file.
func (f *File) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(f.header.Tensors))
	for i, t := range f.header.Tensors {
		out[i] = t.clone()
	}
	return out
}

// Metadata returns a copy of the header's "__metadata__" map, or nil when it has none.
func (f *File) Metadata() map[string]string {
	return maps.Clone(f.header.Metadata)
}

// DataOffset returns the file offset at which the data section starts, 8 plus the
// header length. Tensor offsets are relative to it.
func (f *File) DataOffset() int64 { return f.dataStart }

// Info returns the description of the named tensor. The error, of kind ErrNotFound,
// suggests a near match when one exists.
func (f *File) Info(name string) (TensorInfo, error) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, notFound(f.path, name, f.header.Tensors)
	}
	return f.header.Tensors[i].clone(), nil
}

func notFound(path, name string, tensors []TensorInfo) *Error {
	hint := "list the names with Tensors"
	if close := closestName(name, tensors); close != "" {
		hint = fmt.Sprintf("a close match is %q", close)
	}
	return newError(path, name, ErrNotFound, hint, "not found among the %d tensors of the file", len(tensors))
}

// closestName returns the tensor name that shares the longest suffix with name, when
// that suffix covers more than half of name and more than its last dotted part. It catches
// prefix mix-ups such as "model.embed_tokens.weight" and "embed_tokens.weight".
func closestName(name string, tensors []TensorInfo) string {
	best, bestLen := "", 0
	for _, t := range tensors {
		n := commonSuffixLen(name, t.Name)
		if n > bestLen {
			best, bestLen = t.Name, n
		}
	}
	lastPart := len(name) - strings.LastIndexByte(name, '.') - 1
	if 2*bestLen <= len(name) || bestLen <= lastPart+1 {
		return ""
	}
	return best
}

func commonSuffixLen(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[len(a)-1-n] == b[len(b)-1-n] {
		n++
	}
	return n
}

// CheckShape returns an error of kind ErrShapeMismatch when the tensor's shape differs
// from shape, and ErrNotFound when the tensor is missing.
func (f *File) CheckShape(name string, shape ...int) error {
	info, err := f.Info(name)
	if err != nil {
		return err
	}
	return checkShape(info, shape)
}

func checkShape(info TensorInfo, shape []int) error {
	if !slices.Equal(info.Shape, shape) {
		return newError(info.Path, info.Name, ErrShapeMismatch, "the checkpoint does not match the model configuration",
			"shape is %v, expected %v", info.Shape, shape)
	}
	return nil
}

// Section returns a reader over the tensor's raw little-endian bytes.
func (f *File) Section(name string) (*io.SectionReader, error) {
	info, err := f.Info(name)
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(f.r, f.dataStart+info.Begin, info.Size()), nil
}

// ReadRaw copies the tensor's bytes, as stored, into dst. len(dst) must equal the
// tensor's Size. Elements are little-endian and in row-major order.
func (f *File) ReadRaw(name string, dst []byte) error {
	info, err := f.Info(name)
	if err != nil {
		return err
	}
	if int64(len(dst)) != info.Size() {
		return newError(f.path, name, ErrShapeMismatch, "size dst from TensorInfo.Size",
			"dst has %d bytes, but the tensor (%s, shape %v) has %d", len(dst), info.DType, info.Shape, info.Size())
	}
	return f.readAt(info, dst, 0)
}

// ReadFloat32 reads the tensor into dst, converting F16 and BF16 exactly. len(dst)
// must equal the tensor's element count. Other dtypes return ErrDTypeMismatch.
func (f *File) ReadFloat32(name string, dst []float32) error {
	info, err := f.floatInfo(name, len(dst), "ReadFloat32")
	if err != nil {
		return err
	}
	elem := info.DType.Bits() / 8
	return f.readChunks(info, func(lo, hi int, src []byte) {
		decodeFloat32(info.DType, dst[lo:hi], src)
	}, elem, len(dst))
}

// ReadBF16 reads the tensor into dst as bfloat16 bit patterns. BF16 data is copied
// as is, and F32 and F16 data is rounded to nearest even. len(dst) must equal the
// tensor's element count. Other dtypes return ErrDTypeMismatch.
func (f *File) ReadBF16(name string, dst []uint16) error {
	info, err := f.floatInfo(name, len(dst), "ReadBF16")
	if err != nil {
		return err
	}
	elem := info.DType.Bits() / 8
	return f.readChunks(info, func(lo, hi int, src []byte) {
		decodeBF16(info.DType, dst[lo:hi], src)
	}, elem, len(dst))
}

// floatInfo looks up a tensor for a converting read into a buffer of n elements.
func (f *File) floatInfo(name string, n int, method string) (TensorInfo, error) {
	info, err := f.Info(name)
	if err != nil {
		return info, err
	}
	if !info.DType.isFloat() {
		return info, newError(f.path, name, ErrDTypeMismatch, "use ReadRaw for other dtypes",
			"dtype %s cannot be converted by %s, which reads F32, F16 and BF16", info.DType, method)
	}
	if int64(n) != info.NumElements() {
		return info, newError(f.path, name, ErrShapeMismatch, "size dst from TensorInfo.NumElements",
			"dst has %d elements, but shape %v has %d", n, info.Shape, info.NumElements())
	}
	return info, nil
}

// chunkBytes is the size of the scratch buffer that converting reads and writes use.
const chunkBytes = 1 << 20

var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, chunkBytes)
	return &b
}}

// readChunks reads n elements of elem bytes each in chunks and passes the bytes of
// elements [lo, hi) to convert.
func (f *File) readChunks(info TensorInfo, convert func(lo, hi int, src []byte), elem, n int) error {
	bufp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bufp)
	perChunk := chunkBytes / elem
	for lo := 0; lo < n; lo += perChunk {
		hi := min(lo+perChunk, n)
		src := (*bufp)[:(hi-lo)*elem]
		if err := f.readAt(info, src, int64(lo)*int64(elem)); err != nil {
			return err
		}
		convert(lo, hi, src)
	}
	return nil
}

// readAt reads len(p) bytes of the tensor's data starting off bytes into it.
func (f *File) readAt(info TensorInfo, p []byte, off int64) error {
	err := readFull(f.r, p, f.dataStart+info.Begin+off)
	if err == nil {
		return nil
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return newError(f.path, info.Name, ErrTruncated, "the file was shortened after it was opened: check what else writes it",
			"file ended while reading data_offsets [%d, %d]", info.Begin, info.End)
	}
	return &Error{Path: f.path, Tensor: info.Name, Kind: ErrIO, Msg: "read failed", Err: err}
}
