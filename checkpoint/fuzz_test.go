package checkpoint_test

import (
	"bytes"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/ringtune/ringtune/checkpoint"
)

var headerSeeds = []string{
	`{}`,
	"\t{} \n",
	`{"__metadata__":{"format":"pt"},"t":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}`,
	`{"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},"a":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}`,
	`{"z":{"dtype":"F32","shape":[0,7],"data_offsets":[0,0]},"f":{"dtype":"F4","shape":[3,2],"data_offsets":[0,3]}}`,
	`{"t":{"dtype":"F32","shape":[1000000000,1000000000],"data_offsets":[0,4000000000000000000]}}`,
	`{"t":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}`,
	`{"a":{"dtype":"I32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}`,
	`{"t":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}`,
	`{"t":{"dtype":"F8_E4M3","shape":[1e3],"data_offsets":[0,1000]}}`,
}

// FuzzParseHeader checks that ParseHeader never panics, returns only *checkpoint.Error
// failures, and that every header it accepts has contiguous, size-consistent tensors.
func FuzzParseHeader(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, header []byte) {
		h, err := checkpoint.ParseHeader(header)
		if err != nil {
			var e *checkpoint.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %q is not a *checkpoint.Error", err)
			}
			return
		}
		var end int64
		seen := make(map[string]bool)
		for _, info := range h.Tensors {
			if seen[info.Name] {
				t.Fatalf("duplicate tensor %q accepted", info.Name)
			}
			seen[info.Name] = true
			if info.Begin != end || info.End < info.Begin {
				t.Fatalf("tensor %q at [%d, %d] does not follow the previous end %d", info.Name, info.Begin, info.End, end)
			}
			bits := big.NewInt(int64(info.DType.Bits()))
			for _, d := range info.Shape {
				bits.Mul(bits, big.NewInt(int64(d)))
			}
			if want := new(big.Int).Mul(big.NewInt(info.Size()), big.NewInt(8)); bits.Cmp(want) != 0 {
				t.Fatalf("tensor %q: shape %v of %s needs %v bits, but its range has %v", info.Name, info.Shape, info.DType, bits, want)
			}
			end = info.End
		}
		if h.DataSize != end {
			t.Fatalf("DataSize %d, but the last tensor ends at %d", h.DataSize, end)
		}
	})
}

func fileSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, s := range headerSeeds {
		seeds = append(seeds, buildFile(s, make([]byte, 16)))
	}
	fixture, err := os.ReadFile(filepath.Join("testdata", "torch_fixture.safetensors"))
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, fixture)

	path := filepath.Join(f.TempDir(), "seed.safetensors")
	err = checkpoint.Write(path, []checkpoint.Tensor{
		{Name: "w", DType: checkpoint.BF16, Shape: []int{2, 3}, Data: checkpoint.FromFloat32([]float32{1, 2, 3, 4, 5, 6})},
		{Name: "n", DType: checkpoint.F16, Shape: []int{2}, Data: checkpoint.FromFloat32([]float32{-1, 0.5})},
		{Name: "x", DType: checkpoint.F32, Data: checkpoint.FromFloat32([]float32{7})},
	}, map[string]string{"format": "pt"})
	if err != nil {
		f.Fatal(err)
	}
	written, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return append(seeds, written)
}

// FuzzOpenFile opens mutated files from memory and reads every tensor. Because the
// header was checked against the file size, no read may fail and no buffer sized from
// the header may exceed the input.
func FuzzOpenFile(f *testing.F) {
	for _, seed := range fileSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := checkpoint.NewFile(bytes.NewReader(data), int64(len(data)), "fuzz.safetensors")
		if err != nil {
			var e *checkpoint.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %q is not a *checkpoint.Error", err)
			}
			return
		}
		for _, info := range file.Tensors() {
			if info.Size() > int64(len(data)) {
				t.Fatalf("tensor %q claims %d bytes of a %d-byte file", info.Name, info.Size(), len(data))
			}
			if err := file.ReadRaw(info.Name, make([]byte, info.Size())); err != nil {
				t.Fatalf("ReadRaw(%q): %v", info.Name, err)
			}
			switch info.DType {
			case checkpoint.F32, checkpoint.F16, checkpoint.BF16:
				if err := file.ReadFloat32(info.Name, make([]float32, info.NumElements())); err != nil {
					t.Fatalf("ReadFloat32(%q): %v", info.Name, err)
				}
				if err := file.ReadBF16(info.Name, make([]uint16, info.NumElements())); err != nil {
					t.Fatalf("ReadBF16(%q): %v", info.Name, err)
				}
			default:
				if err := file.ReadFloat32(info.Name, nil); !errors.Is(err, checkpoint.ErrDTypeMismatch) {
					t.Fatalf("ReadFloat32(%q) of %s returned %v", info.Name, info.DType, err)
				}
			}
		}
	})
}
