package checkpoint_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
)

// specialFloat32s covers signed zeros, subnormals, rounding ties, the float16 and
// bfloat16 limits, infinities and NaNs.
var specialFloat32s = []float32{
	0, float32(math.Copysign(0, -1)), 1, -1, 0.1, 1.0 / 3, math.Pi,
	65504, 65520, 0x1p-14, 0x1p-24, 0x1p-25, 1e-40, 1e-45, 1 + 0x1p-8, 1 + 0x3p-8,
	math.MaxFloat32, -math.MaxFloat32,
	float32(math.Inf(1)), float32(math.Inf(-1)),
	math.Float32frombits(0x7fc00000), math.Float32frombits(0xffc00001),
}

func randomFloat32s(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64() * 4)
	}
	return out
}

func bitsOf(values []float32) []uint32 {
	out := make([]uint32, len(values))
	for i, v := range values {
		out[i] = math.Float32bits(v)
	}
	return out
}

func TestWriteReadF32RoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	weights := append(randomFloat32s(3*1000, 1), specialFloat32s...)
	shape := []int{len(weights)}
	bias := []float32{0.5, -0.25}
	metadata := map[string]string{"format": "pt", "note": `quotes " and \ and <tags>`}
	tensors := []checkpoint.Tensor{
		{Name: "w", DType: checkpoint.F32, Shape: shape, Data: checkpoint.FromFloat32(weights)},
		{Name: "b", DType: checkpoint.F32, Shape: []int{2}, Data: checkpoint.FromFloat32(bias)},
		{Name: "s", DType: checkpoint.F32, Data: checkpoint.FromFloat32([]float32{7})},
	}
	require.NoError(t, checkpoint.Write(path, tensors, metadata))

	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, metadata, f.Metadata())
	assert.Equal(t, []string{"b", "s", "w"}, names(f.Tensors()), "same dtype: name order")

	got := readAllFloat32(t, f)
	assert.Equal(t, bitsOf(weights), bitsOf(got["w"]))
	assert.Equal(t, bitsOf(bias), bitsOf(got["b"]))
	assert.Equal(t, []float32{7}, got["s"])

	info, err := f.Info("s")
	require.NoError(t, err)
	assert.Equal(t, []int{}, info.Shape, "a scalar has an empty shape")
	assert.Equal(t, int64(1), info.NumElements())
	assert.Equal(t, path, info.Path)
	assert.Equal(t, int64(0), f.DataOffset()%8, "header padded to 8 bytes")
}

func TestWriteHalfPrecisionRounding(t *testing.T) {
	values := append(randomFloat32s(5000, 2), specialFloat32s...)
	path := filepath.Join(t.TempDir(), "half.safetensors")
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "bf16", DType: checkpoint.BF16, Shape: []int{len(values)}, Data: checkpoint.FromFloat32(values)},
		{Name: "f16", DType: checkpoint.F16, Shape: []int{len(values)}, Data: checkpoint.FromFloat32(values)},
	}, nil))

	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()
	assert.Nil(t, f.Metadata())

	rawBF16 := make([]byte, 2*len(values))
	require.NoError(t, f.ReadRaw("bf16", rawBF16))
	rawF16 := make([]byte, 2*len(values))
	require.NoError(t, f.ReadRaw("f16", rawF16))
	asBF16 := make([]uint16, len(values))
	require.NoError(t, f.ReadBF16("bf16", asBF16))
	asF32 := make([]float32, len(values))
	require.NoError(t, f.ReadFloat32("f16", asF32))

	for i, v := range values {
		wantBF16 := checkpoint.Float32ToBF16(v)
		wantF16 := checkpoint.Float32ToF16(v)
		require.Equal(t, wantBF16, binary.LittleEndian.Uint16(rawBF16[2*i:]), "bf16 of %g", v)
		require.Equal(t, wantF16, binary.LittleEndian.Uint16(rawF16[2*i:]), "f16 of %g", v)
		require.Equal(t, wantBF16, asBF16[i], "ReadBF16 of %g", v)
		require.Equal(t, math.Float32bits(checkpoint.F16ToFloat32(wantF16)), math.Float32bits(asF32[i]), "ReadFloat32 of f16 %g", v)
	}
}

func TestReadBF16RoundsF32AndF16(t *testing.T) {
	values := append(randomFloat32s(300, 3), specialFloat32s...)
	halves := make([]uint16, len(values))
	for i, v := range values {
		halves[i] = checkpoint.Float32ToF16(v)
	}
	halfBytes := make([]byte, 2*len(halves))
	for i, h := range halves {
		binary.LittleEndian.PutUint16(halfBytes[2*i:], h)
	}
	path := filepath.Join(t.TempDir(), "mixed.safetensors")
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "f32", DType: checkpoint.F32, Shape: []int{len(values)}, Data: checkpoint.FromFloat32(values)},
		{Name: "f16", DType: checkpoint.F16, Shape: []int{len(values)}, Data: checkpoint.FromBytes(halfBytes)},
	}, nil))
	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()

	fromF32 := make([]uint16, len(values))
	require.NoError(t, f.ReadBF16("f32", fromF32))
	fromF16 := make([]uint16, len(values))
	require.NoError(t, f.ReadBF16("f16", fromF16))
	for i, v := range values {
		assert.Equal(t, checkpoint.Float32ToBF16(v), fromF32[i], "f32 %g", v)
		assert.Equal(t, checkpoint.Float32ToBF16(checkpoint.F16ToFloat32(halves[i])), fromF16[i], "f16 %#04x", halves[i])
	}
}

// The expected bytes come from test_serialization_forced_alignement and test_empty in
// huggingface/safetensors (safetensors/src/tensor.rs, commit 24b0b28).
func TestWriteMatchesSafetensorsBytes(t *testing.T) {
	dir := t.TempDir()

	path := filepath.Join(dir, "attn.safetensors")
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{{
		Name: "attn0", DType: checkpoint.F32, Shape: []int{1, 1, 2, 3},
		Data: checkpoint.FromFloat32([]float32{0, 1, 2, 3, 4, 5}),
	}}, nil))
	want := []byte{
		72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116,
		121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
		91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
		115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32,
		32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
		160, 64,
	}
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	empty := filepath.Join(dir, "empty.safetensors")
	require.NoError(t, checkpoint.Write(empty, nil, nil))
	got, err = os.ReadFile(empty)
	require.NoError(t, err)
	assert.Equal(t, []byte{8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32}, got)

	withMeta := filepath.Join(dir, "meta.safetensors")
	require.NoError(t, checkpoint.Write(withMeta, nil, map[string]string{"framework": "pt"}))
	got, err = os.ReadFile(withMeta)
	require.NoError(t, err)
	assert.Equal(t, buildFile(`{"__metadata__":{"framework":"pt"}}     `, nil), got)
}

func TestWriteOrdersByDTypeThenName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "order.safetensors")
	tensor := func(name string, d checkpoint.DType, n int) checkpoint.Tensor {
		return checkpoint.Tensor{Name: name, DType: d, Shape: []int{n}, Data: checkpoint.FromBytes(make([]byte, n*d.Bits()/8))}
	}
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		tensor("z.u8", checkpoint.U8, 3),
		tensor("b.f32", checkpoint.F32, 1),
		tensor("m.f16", checkpoint.F16, 1),
		tensor("a.bf16", checkpoint.BF16, 1),
		tensor("c.i64", checkpoint.I64, 1),
		tensor("a.f32", checkpoint.F32, 2),
		tensor("f.f4", checkpoint.F4, 2),
		tensor("d.f64", checkpoint.F64, 1),
	}, nil))
	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, []string{"c.i64", "d.f64", "a.f32", "b.f32", "a.bf16", "m.f16", "z.u8", "f.f4"}, names(f.Tensors()))
}

func TestWriteSourcesStreamAndConvert(t *testing.T) {
	dir := t.TempDir()
	values := randomFloat32s(700_000, 4) // more than one 1 MiB chunk in every dtype
	bf16 := make([]uint16, len(values))
	for i, v := range values {
		bf16[i] = checkpoint.Float32ToBF16(v)
	}
	ids := make([]byte, 8*3)
	for i, v := range []int64{-1, 0, 1 << 40} {
		binary.LittleEndian.PutUint64(ids[8*i:], uint64(v))
	}
	src := filepath.Join(dir, "src.safetensors")
	require.NoError(t, checkpoint.Write(src, []checkpoint.Tensor{
		{Name: "w", DType: checkpoint.F32, Shape: []int{700, 1000}, Data: checkpoint.FromFloat32(values)},
		{Name: "wb", DType: checkpoint.BF16, Shape: []int{700, 1000}, Data: checkpoint.FromBF16(bf16)},
		{Name: "ids", DType: checkpoint.I64, Shape: []int{3}, Data: checkpoint.FromReader(bytes.NewReader(ids))},
	}, nil))
	in, err := checkpoint.Open(src)
	require.NoError(t, err)
	defer in.Close()

	dst := filepath.Join(dir, "dst.safetensors")
	require.NoError(t, checkpoint.Write(dst, []checkpoint.Tensor{
		{Name: "w.copy", DType: checkpoint.F32, Shape: []int{700, 1000}, Data: checkpoint.FromTensor(in, "w")},
		{Name: "w.bf16", DType: checkpoint.BF16, Shape: []int{700_000}, Data: checkpoint.FromTensor(in, "w")},
		{Name: "w.f16", DType: checkpoint.F16, Shape: []int{700_000}, Data: checkpoint.FromTensor(in, "wb")},
		{Name: "wb.f32", DType: checkpoint.F32, Shape: []int{700_000}, Data: checkpoint.FromBF16(bf16)},
		{Name: "ids", DType: checkpoint.I64, Shape: []int{3}, Data: checkpoint.FromTensor(in, "ids")},
	}, nil))
	out, err := checkpoint.Open(dst)
	require.NoError(t, err)
	defer out.Close()

	got := make([]float32, len(values))
	require.NoError(t, out.ReadFloat32("w.copy", got))
	assert.Equal(t, bitsOf(values), bitsOf(got))

	gotBF16 := make([]uint16, len(values))
	require.NoError(t, out.ReadBF16("w.bf16", gotBF16))
	assert.Equal(t, bf16, gotBF16)

	require.NoError(t, out.ReadFloat32("wb.f32", got))
	for i := range values {
		require.Equal(t, math.Float32bits(checkpoint.BF16ToFloat32(bf16[i])), math.Float32bits(got[i]))
	}

	require.NoError(t, out.ReadFloat32("w.f16", got))
	for i := range values {
		want := checkpoint.F16ToFloat32(checkpoint.Float32ToF16(checkpoint.BF16ToFloat32(bf16[i])))
		require.Equal(t, math.Float32bits(want), math.Float32bits(got[i]))
	}

	gotIDs := make([]byte, len(ids))
	require.NoError(t, out.ReadRaw("ids", gotIDs))
	assert.Equal(t, ids, gotIDs)
}

type failingReader struct{ after int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.after <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), r.after)
	r.after -= n
	return n, nil
}

func TestWriteFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "w", DType: checkpoint.F32, Shape: []int{2}, Data: checkpoint.FromFloat32([]float32{1, 2})},
	}, nil))
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	err = checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "a", DType: checkpoint.F32, Shape: []int{4}, Data: checkpoint.FromFloat32([]float32{1, 2, 3, 4})},
		{Name: "big", DType: checkpoint.U8, Shape: []int{3 << 20}, Data: checkpoint.FromReader(&failingReader{after: 2 << 20})},
	}, nil)
	requireError(t, err, checkpoint.ErrIO, path, `tensor "big"`, "disk on fire")

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "the old file is untouched")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left behind")
}

type overlongSource struct{}

func (overlongSource) WriteData(w io.Writer, dtype checkpoint.DType, n int64) error {
	_, err := w.Write(make([]byte, 4*n+1))
	return err
}

type shortSource struct{}

func (shortSource) WriteData(w io.Writer, dtype checkpoint.DType, n int64) error {
	_, err := w.Write(make([]byte, 4*n-1))
	return err
}

func TestWriteRejectsInvalidTensors(t *testing.T) {
	f32 := func(name string, shape []int, values []float32) checkpoint.Tensor {
		return checkpoint.Tensor{Name: name, DType: checkpoint.F32, Shape: shape, Data: checkpoint.FromFloat32(values)}
	}
	cases := []struct {
		name    string
		tensors []checkpoint.Tensor
		kind    error
		parts   []string
	}{
		{"empty name", []checkpoint.Tensor{f32("", []int{1}, []float32{1})}, checkpoint.ErrInvalidTensor, []string{"name is empty"}},
		{"reserved name", []checkpoint.Tensor{f32("__metadata__", []int{1}, []float32{1})}, checkpoint.ErrInvalidTensor, []string{`"__metadata__"`, "reserved"}},
		{"duplicate", []checkpoint.Tensor{f32("w", []int{1}, []float32{1}), f32("w", []int{1}, []float32{2})}, checkpoint.ErrInvalidTensor, []string{`"w"`, "duplicate"}},
		{"unknown dtype", []checkpoint.Tensor{{Name: "w", DType: "F12", Shape: []int{1}, Data: checkpoint.FromBytes([]byte{0})}}, checkpoint.ErrUnknownDType, []string{`"w"`, `"F12"`}},
		{"negative dim", []checkpoint.Tensor{f32("w", []int{2, -1}, nil)}, checkpoint.ErrShapeMismatch, []string{`"w"`, "negative"}},
		{"no data", []checkpoint.Tensor{{Name: "w", DType: checkpoint.F32, Shape: []int{1}}}, checkpoint.ErrInvalidTensor, []string{`"w"`, "no Data"}},
		{"too few values", []checkpoint.Tensor{f32("w", []int{2, 2}, []float32{1, 2, 3})}, checkpoint.ErrShapeMismatch, []string{`"w"`, "has 3 values", "4 elements"}},
		{"float data as I64", []checkpoint.Tensor{{Name: "w", DType: checkpoint.I64, Shape: []int{1}, Data: checkpoint.FromFloat32([]float32{1})}}, checkpoint.ErrDTypeMismatch, []string{`"w"`, "I64"}},
		{"bytes too short", []checkpoint.Tensor{{Name: "w", DType: checkpoint.I32, Shape: []int{2}, Data: checkpoint.FromBytes([]byte{1, 2, 3})}}, checkpoint.ErrShapeMismatch, []string{`"w"`, "has 3 bytes", "need 8"}},
		{"odd F4 count", []checkpoint.Tensor{{Name: "w", DType: checkpoint.F4, Shape: []int{3}, Data: checkpoint.FromBytes([]byte{0, 0})}}, checkpoint.ErrShapeMismatch, []string{`"w"`, "whole number of bytes"}},
		{"reader too short", []checkpoint.Tensor{{Name: "w", DType: checkpoint.U8, Shape: []int{4}, Data: checkpoint.FromReader(strings.NewReader("abc"))}}, checkpoint.ErrShapeMismatch, []string{`"w"`, "after 3 of the 4 bytes"}},
		{"source writes too much", []checkpoint.Tensor{{Name: "w", DType: checkpoint.F32, Shape: []int{2}, Data: overlongSource{}}}, checkpoint.ErrShapeMismatch, []string{`"w"`, "more bytes"}},
		{"source writes too little", []checkpoint.Tensor{{Name: "w", DType: checkpoint.F32, Shape: []int{2}, Data: shortSource{}}}, checkpoint.ErrShapeMismatch, []string{`"w"`, "wrote 7 bytes", "needs 8"}},
		{"missing source tensor", []checkpoint.Tensor{{Name: "w", DType: checkpoint.F32, Shape: []int{1}, Data: checkpoint.FromTensor(emptyFile(t), "nope")}}, checkpoint.ErrNotFound, []string{`"nope"`, "empty.safetensors"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "bad.safetensors")
			err := checkpoint.Write(path, c.tensors, nil)
			requireError(t, err, c.kind, append([]string{path}, c.parts...)...)
			_, statErr := os.Stat(path)
			assert.ErrorIs(t, statErr, fs.ErrNotExist, "no file is created")
			entries, _ := os.ReadDir(dir)
			assert.Empty(t, entries, "no temporary file is left behind")
		})
	}
}

func emptyFile(t *testing.T) *checkpoint.File {
	path := filepath.Join(t.TempDir(), "empty.safetensors")
	require.NoError(t, checkpoint.Write(path, nil, nil))
	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func TestReadErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "model.embed_tokens.weight", DType: checkpoint.BF16, Shape: []int{4, 2}, Data: checkpoint.FromFloat32(make([]float32, 8))},
		{Name: "ids", DType: checkpoint.I64, Shape: []int{2}, Data: checkpoint.FromBytes(make([]byte, 16))},
	}, nil))
	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()

	err = f.ReadFloat32("embed_tokens.weight", make([]float32, 8))
	requireError(t, err, checkpoint.ErrNotFound, path, `tensor "embed_tokens.weight"`, "not found among the 2 tensors", `close match is "model.embed_tokens.weight"`)

	err = f.ReadFloat32("lm_head.weight", make([]float32, 8))
	requireError(t, err, checkpoint.ErrNotFound, path, `"lm_head.weight"`, "list the names with Tensors")

	err = f.ReadFloat32("model.embed_tokens.weight", make([]float32, 7))
	requireError(t, err, checkpoint.ErrShapeMismatch, path, `"model.embed_tokens.weight"`, "dst has 7 elements", "[4 2] has 8")

	err = f.ReadBF16("model.embed_tokens.weight", make([]uint16, 9))
	requireError(t, err, checkpoint.ErrShapeMismatch, "dst has 9 elements")

	err = f.ReadFloat32("ids", make([]float32, 2))
	requireError(t, err, checkpoint.ErrDTypeMismatch, path, `"ids"`, "I64", "ReadRaw")

	err = f.ReadRaw("ids", make([]byte, 15))
	requireError(t, err, checkpoint.ErrShapeMismatch, `"ids"`, "dst has 15 bytes", "has 16")

	err = f.CheckShape("model.embed_tokens.weight", 2, 4)
	requireError(t, err, checkpoint.ErrShapeMismatch, path, `"model.embed_tokens.weight"`, "shape is [4 2], expected [2 4]")
	assert.NoError(t, f.CheckShape("model.embed_tokens.weight", 4, 2))
	requireError(t, f.CheckShape("nope", 1), checkpoint.ErrNotFound, `"nope"`)

	_, err = f.Section("nope")
	requireError(t, err, checkpoint.ErrNotFound, `"nope"`)
}

func TestReadAfterFileShrinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "w", DType: checkpoint.F32, Shape: []int{1024}, Data: checkpoint.FromFloat32(make([]float32, 1024))},
	}, nil))
	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()

	require.NoError(t, os.Truncate(path, 100))
	err = f.ReadFloat32("w", make([]float32, 1024))
	requireError(t, err, checkpoint.ErrTruncated, path, `tensor "w"`, "file ended while reading")
}

func TestConcurrentReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	values := randomFloat32s(50_000, 5)
	var tensors []checkpoint.Tensor
	for _, name := range []string{"a", "b", "c", "d"} {
		tensors = append(tensors, checkpoint.Tensor{Name: name, DType: checkpoint.BF16, Shape: []int{len(values)}, Data: checkpoint.FromFloat32(values)})
	}
	require.NoError(t, checkpoint.Write(path, tensors, nil))
	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()

	var wg sync.WaitGroup
	results := make([][]float32, 8)
	for i := range results {
		wg.Go(func() {
			results[i] = make([]float32, len(values))
			assert.NoError(t, f.ReadFloat32(tensors[i%4].Name, results[i]))
		})
	}
	wg.Wait()
	for i := 1; i < len(results); i++ {
		assert.Equal(t, bitsOf(results[0]), bitsOf(results[i]))
	}
}

func TestOpenAcceptsValidLayouts(t *testing.T) {
	i32x4 := make([]byte, 16)
	cases := []struct {
		name   string
		header string
		data   []byte
		want   []string
	}{
		{"empty header", `{}`, nil, nil},
		{"trailing whitespace", "{}\r \t\n", nil, nil},
		{"leading whitespace", "\t\n{} \r", nil, nil},
		{"scalar", `{"s":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}`, make([]byte, 4), []string{"s"}},
		{"zero-size tensor", `{"z":{"dtype":"I32","shape":[2,0],"data_offsets":[0,0]},"x":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}`, i32x4, []string{"z", "x"}},
		{"header order differs from data order", `{"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, i32x4, []string{"a", "b"}},
		{"unknown fields ignored", `{"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16],"extra":[1]}}`, i32x4, []string{"a"}},
		{"null metadata", `{"__metadata__":null,"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}`, i32x4, []string{"a"}},
		{"sub-byte dtype", `{"f":{"dtype":"F4","shape":[2,4],"data_offsets":[0,4]}}`, make([]byte, 4), []string{"f"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeTempFile(t, "ok.safetensors", buildFile(c.header, c.data))
			f, err := checkpoint.Open(path)
			require.NoError(t, err)
			defer f.Close()
			assert.Equal(t, c.want, namesOrNil(f.Tensors()))
		})
	}
}

func namesOrNil(infos []checkpoint.TensorInfo) []string {
	if len(infos) == 0 {
		return nil
	}
	return names(infos)
}

// Each case corrupts a file in one way. The error must name the file, the tensor when
// one is at fault, and the cause.
func TestOpenRejectsBadFiles(t *testing.T) {
	i32x4 := make([]byte, 16)
	valid := `{"t":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}`
	lengthOnly := func(n uint64, rest string) []byte {
		b := binary.LittleEndian.AppendUint64(nil, n)
		return append(b, rest...)
	}
	cases := []struct {
		name    string
		content []byte
		kind    error
		parts   []string
	}{
		{"empty file", nil, checkpoint.ErrTruncated, []string{"file is 0 bytes", "8-byte header length"}},
		{"short file", []byte{1, 2, 3}, checkpoint.ErrTruncated, []string{"file is 3 bytes"}},
		{"header beyond file", lengthOnly(60, `{"a":1}`), checkpoint.ErrTruncated, []string{"header length is 60 bytes", "only 7 bytes"}},
		{"header over limit", lengthOnly(100_000_001, "{}"), checkpoint.ErrHeaderTooLarge, []string{"100000001", "limit of 100000000", "check that this is a safetensors file"}},
		{"header length u64 max", lengthOnly(math.MaxUint64, "{}"), checkpoint.ErrHeaderTooLarge, []string{"18446744073709551615"}},
		{"non-UTF-8 header", buildFile("{\"a\xff\":1}", nil), checkpoint.ErrInvalidHeader, []string{"not valid UTF-8", "offset 3"}},
		{"invalid JSON", buildFile(`{"t":{"dtype":"I32"`, nil), checkpoint.ErrInvalidHeader, []string{"not valid JSON"}},
		{"not an object", buildFile(`[1,2]`, nil), checkpoint.ErrInvalidHeader, []string{"not a JSON object"}},
		{"empty header", buildFile(``, nil), checkpoint.ErrInvalidHeader, []string{"not valid JSON"}},
		{"trailing garbage", buildFile(`{}x`, nil), checkpoint.ErrInvalidHeader, []string{"data after its JSON object"}},
		{"second object", buildFile(`{}{}`, nil), checkpoint.ErrInvalidHeader, []string{"data after its JSON object"}},
		{"duplicate name", buildFile(`{"t":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}`, i32x4), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, "duplicate"}},
		{"unknown dtype", buildFile(`{"t":{"dtype":"F8","shape":[2,2],"data_offsets":[0,16]}}`, i32x4), checkpoint.ErrUnknownDType, []string{`tensor "t"`, `dtype "F8"`, "BF16"}},
		{"dtype not a string", buildFile(`{"t":{"dtype":32,"shape":[2,2],"data_offsets":[0,16]}}`, i32x4), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, "dtype must be a string"}},
		{"entry not an object", buildFile(`{"t":[1]}`, nil), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, "must be an object"}},
		{"missing shape", buildFile(`{"t":{"dtype":"I32","data_offsets":[0,16]}}`, i32x4), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, `no "shape" field`}},
		{"negative dimension", buildFile(`{"t":{"dtype":"I32","shape":[-2,2],"data_offsets":[0,16]}}`, i32x4), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, "element 0 is -2"}},
		{"fractional dimension", buildFile(`{"t":{"dtype":"I32","shape":[2.0,2],"data_offsets":[0,16]}}`, i32x4), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, "element 0 is 2.0"}},
		{"quoted dimension", buildFile(`{"t":{"dtype":"I32","shape":["2",2],"data_offsets":[0,16]}}`, i32x4), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, `element 0 is "2"`}},
		{"three offsets", buildFile(`{"t":{"dtype":"I32","shape":[2,2],"data_offsets":[0,8,16]}}`, i32x4), checkpoint.ErrInvalidHeader, []string{`tensor "t"`, "found 3 elements"}},
		{"end before begin", buildFile(`{"t":{"dtype":"I32","shape":[0],"data_offsets":[16,0]}}`, i32x4), checkpoint.ErrInvalidOffsets, []string{`tensor "t"`, "[16, 0] end before they begin"}},
		{"size mismatch", buildFile(`{"t":{"dtype":"I32","shape":[2,2],"data_offsets":[0,4]}}`, i32x4[:4]), checkpoint.ErrShapeMismatch, []string{`tensor "t"`, "span 4 bytes", "[2 2] of I32 needs 16"}},
		{"element count overflow", buildFile(`{"t":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}`, i32x4), checkpoint.ErrShapeMismatch, []string{`tensor "t"`, "more elements than fit"}},
		{"byte size overflow", buildFile(`{"t":{"dtype":"I32","shape":[4611686018427387904],"data_offsets":[0,16]}}`, i32x4), checkpoint.ErrShapeMismatch, []string{`tensor "t"`, "need more than 2^63-1 bytes"}},
		{"10^18 elements", buildFile(`{"t":{"dtype":"F32","shape":[1000000000,1000000000],"data_offsets":[0,4000000000000000000]}}`, i32x4), checkpoint.ErrTruncated, []string{`tensor "t"`, "run past the end", "has 16 bytes"}},
		{"overlap", buildFile(`{"a":{"dtype":"I32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}`, i32x4), checkpoint.ErrInvalidOffsets, []string{`tensor "b"`, `overlap tensor "a"`}},
		{"gap", buildFile(`{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}`, i32x4), checkpoint.ErrInvalidOffsets, []string{`tensor "b"`, `gap of 4 bytes after tensor "a"`}},
		{"first tensor after 0", buildFile(`{"a":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}`, i32x4), checkpoint.ErrInvalidOffsets, []string{`tensor "a"`, "first 8 bytes"}},
		{"bytes after data", buildFile(valid, append(i32x4, "polyglot"...)), checkpoint.ErrInvalidOffsets, []string{`tensor "t"`, "8 bytes after the end"}},
		{"bytes without tensors", buildFile(`{}`, []byte{1}), checkpoint.ErrInvalidOffsets, []string{"no tensors", "1 data bytes"}},
		{"truncated data", buildFile(valid, i32x4[:10]), checkpoint.ErrTruncated, []string{`tensor "t"`, "[0, 16] run past the end", "has 10 bytes", "cut short"}},
		{"metadata not strings", buildFile(`{"__metadata__":{"n":1}}`, nil), checkpoint.ErrInvalidHeader, []string{"__metadata__ must map strings to strings"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeTempFile(t, "bad.safetensors", c.content)
			f, err := checkpoint.Open(path)
			if f != nil {
				f.Close()
			}
			requireError(t, err, c.kind, append([]string{path}, c.parts...)...)
		})
	}
}

func TestOpenMissingPaths(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.safetensors")
	_, err := checkpoint.Open(missing)
	requireError(t, err, checkpoint.ErrNotFound, missing, "no such file")
	assert.ErrorIs(t, err, fs.ErrNotExist)

	_, err = checkpoint.Open(dir)
	requireError(t, err, checkpoint.ErrNotFound, dir, "is a directory", "OpenModel")
}

func TestParseHeaderReportsLayout(t *testing.T) {
	h, err := checkpoint.ParseHeader([]byte(`{"__metadata__":{"k":"v"},"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"k": "v"}, h.Metadata)
	assert.Equal(t, int64(14), h.DataSize)
	require.Len(t, h.Tensors, 2)
	assert.Equal(t, checkpoint.TensorInfo{Name: "a", DType: checkpoint.F64, Shape: []int{1}, Begin: 0, End: 8}, h.Tensors[0])
	assert.Equal(t, checkpoint.TensorInfo{Name: "b", DType: checkpoint.BF16, Shape: []int{3}, Begin: 8, End: 14}, h.Tensors[1])

	_, err = checkpoint.ParseHeader([]byte(`{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,8]}}`))
	requireError(t, err, checkpoint.ErrShapeMismatch, `tensor "a"`, "span 8 bytes")
}

func TestNewFileFromMemory(t *testing.T) {
	content := buildFile(`{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, []byte{0, 0, 128, 63, 0, 0, 0, 192})
	f, err := checkpoint.NewFile(bytes.NewReader(content), int64(len(content)), "memory")
	require.NoError(t, err)
	got := make([]float32, 2)
	require.NoError(t, f.ReadFloat32("t", got))
	assert.Equal(t, []float32{1, -2}, got)
	assert.NoError(t, f.Close())
}

// Converting a file in place reads the old file while the new one is written, which
// works because Write renames a temporary file over the path only at the end.
func TestWriteOverSourceFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	values := randomFloat32s(10_000, 7)
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "w", DType: checkpoint.F32, Shape: []int{100, 100}, Data: checkpoint.FromFloat32(values)},
	}, nil))
	in, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer in.Close()

	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "w", DType: checkpoint.BF16, Shape: []int{100, 100}, Data: checkpoint.FromTensor(in, "w")},
	}, nil))
	out, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer out.Close()
	got := make([]uint16, len(values))
	require.NoError(t, out.ReadBF16("w", got))
	for i, v := range values {
		require.Equal(t, checkpoint.Float32ToBF16(v), got[i])
	}
}
