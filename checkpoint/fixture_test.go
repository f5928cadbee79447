package checkpoint_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
)

// torchFixture is testdata/torch_fixture.json, written by testdata/make_fixture.py.
type torchFixture struct {
	Tensors map[string]struct {
		DType       checkpoint.DType `json:"dtype"`
		Shape       []int            `json:"shape"`
		RawHex      string           `json:"raw_hex"`
		Float32Bits []uint32         `json:"float32_bits"`
	} `json:"tensors"`
	Rounding struct {
		F32Bits  []uint32 `json:"f32_bits"`
		BF16Bits []uint16 `json:"bf16_bits"`
		F16Bits  []uint16 `json:"f16_bits"`
	} `json:"rounding"`
	Metadata     map[string]string `json:"metadata"`
	TorchVersion string            `json:"torch_version"`
}

func loadTorchFixture(t *testing.T) torchFixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "torch_fixture.json"))
	require.NoError(t, err)
	var fx torchFixture
	require.NoError(t, json.Unmarshal(data, &fx))
	require.NotEmpty(t, fx.Tensors)
	return fx
}

// The fixture file was written by hand from PyTorch tensors, so this checks the reader
// against the values of those tensors, NaN payloads included.
func TestTorchFixtureValues(t *testing.T) {
	fx := loadTorchFixture(t)
	f, err := checkpoint.Open(filepath.Join("testdata", "torch_fixture.safetensors"))
	require.NoError(t, err)
	defer f.Close()

	assert.Equal(t, fx.Metadata, f.Metadata())
	assert.Equal(t, []string{
		"empty.f32", "ids.i64", "mask.u8", "model.weights.bf16", "model.weights.f16", "model.weights.f32", "scalar.f64",
	}, names(f.Tensors()), "data order")

	for name, want := range fx.Tensors {
		info, err := f.Info(name)
		require.NoError(t, err)
		assert.Equal(t, want.DType, info.DType, name)
		assert.Equal(t, want.Shape, info.Shape, name)

		raw := make([]byte, info.Size())
		require.NoError(t, f.ReadRaw(name, raw))
		assert.Equal(t, want.RawHex, hex.EncodeToString(raw), name)

		if want.Float32Bits == nil {
			err := f.ReadFloat32(name, make([]float32, info.NumElements()))
			requireError(t, err, checkpoint.ErrDTypeMismatch, name)
			continue
		}
		got := make([]float32, info.NumElements())
		require.NoError(t, f.ReadFloat32(name, got))
		assert.Equal(t, want.Float32Bits, bitsOf(got), "%s: float32 bits differ from PyTorch %s", name, fx.TorchVersion)
	}

	bf16 := make([]uint16, 64)
	require.NoError(t, f.ReadBF16("model.weights.bf16", bf16))
	raw, err := hex.DecodeString(fx.Tensors["model.weights.bf16"].RawHex)
	require.NoError(t, err)
	for i := range bf16 {
		assert.Equal(t, uint16(raw[2*i])|uint16(raw[2*i+1])<<8, bf16[i])
	}
}

func isNaN16(h uint16, expBits uint16) bool {
	return h&expBits == expBits && h&^(expBits|0x8000) != 0
}

// PyTorch's float32 to bfloat16 and float16 conversions round to nearest even like
// ours. NaN bit patterns differ (PyTorch 1.13 on x86 turned both fixture NaNs into
// bfloat16 0xFFFF), so NaNs only have to stay NaN.
func TestConversionsMatchTorch(t *testing.T) {
	fx := loadTorchFixture(t)
	r := fx.Rounding
	require.Len(t, r.BF16Bits, len(r.F32Bits))
	require.Len(t, r.F16Bits, len(r.F32Bits))
	for i, bits := range r.F32Bits {
		v := math.Float32frombits(bits)
		gotBF16, gotF16 := checkpoint.Float32ToBF16(v), checkpoint.Float32ToF16(v)
		if v != v {
			assert.True(t, isNaN16(gotBF16, 0x7f80), "bf16 of NaN %#08x is %#04x", bits, gotBF16)
			assert.True(t, isNaN16(gotF16, 0x7c00), "f16 of NaN %#08x is %#04x", bits, gotF16)
			continue
		}
		assert.Equal(t, r.BF16Bits[i], gotBF16, "bf16 of %g (%#08x)", v, bits)
		assert.Equal(t, r.F16Bits[i], gotF16, "f16 of %g (%#08x)", v, bits)
	}
}

// PyTorch reads what the Go writer wrote. The test needs Debian's python3-torch and
// skips without it.
func TestTorchReadsWrittenFile(t *testing.T) {
	python := "/usr/bin/python3"
	if testing.Short() {
		t.Skip("starts Python with PyTorch")
	}
	if err := exec.Command(python, "-c", "import torch").Run(); err != nil {
		t.Skipf("%s with torch is not available: %v", python, err)
	}

	fx := loadTorchFixture(t)
	values := make([]float32, len(fx.Rounding.F32Bits))
	for i, bits := range fx.Rounding.F32Bits {
		values[i] = math.Float32frombits(bits)
	}
	values = append(values, randomFloat32s(1000, 6)...)
	path := filepath.Join(t.TempDir(), "go.safetensors")
	require.NoError(t, checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "w.f32", DType: checkpoint.F32, Shape: []int{len(values)}, Data: checkpoint.FromFloat32(values)},
		{Name: "w.bf16", DType: checkpoint.BF16, Shape: []int{2, len(values) / 2}, Data: checkpoint.FromFloat32(values)},
		{Name: "w.f16", DType: checkpoint.F16, Shape: []int{len(values) / 4, 4}, Data: checkpoint.FromFloat32(values)},
		{Name: "empty", DType: checkpoint.BF16, Shape: []int{0, 5}, Data: checkpoint.FromFloat32(nil)},
	}, map[string]string{"format": "pt"}))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, filepath.Join("testdata", "read_with_torch.py"), path).Output()
	require.NoError(t, err)
	var seen map[string]struct {
		DType       checkpoint.DType `json:"dtype"`
		Shape       []int            `json:"shape"`
		Float32Bits []uint32         `json:"float32_bits"`
	}
	require.NoError(t, json.Unmarshal(out, &seen))

	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.Len(t, seen, 4)
	for _, info := range f.Tensors() {
		got := make([]float32, info.NumElements())
		require.NoError(t, f.ReadFloat32(info.Name, got))
		assert.Equal(t, info.Shape, seen[info.Name].Shape, info.Name)
		assert.Equal(t, info.DType, seen[info.Name].DType, info.Name)
		assert.Equal(t, bitsOf(got), nonNil(seen[info.Name].Float32Bits), "%s: PyTorch reads other values", info.Name)
	}
}

func nonNil(bits []uint32) []uint32 {
	if bits == nil {
		return []uint32{}
	}
	return bits
}
