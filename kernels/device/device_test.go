package device

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cpu"
)

func TestParseValidValues(t *testing.T) {
	cases := []struct {
		value string
		want  Spec
	}{
		{"cpu", Spec{Kind: CPU}},
		{"cuda", Spec{Kind: CUDA, Index: -1}},
		{"cuda:0", Spec{Kind: CUDA, Index: 0}},
		{"cuda:7", Spec{Kind: CUDA, Index: 7}},
	}
	for _, tc := range cases {
		got, err := Parse(tc.value)
		require.NoError(t, err, tc.value)
		assert.Equal(t, tc.want, got, tc.value)
		assert.Equal(t, tc.value, got.String(), "String of Parse(%q)", tc.value)
	}
}

func TestParseInvalidValues(t *testing.T) {
	cases := []struct {
		value string
		want  string
	}{
		{"", `invalid --device "": use cpu, cuda or cuda:N`},
		{"gpu", `invalid --device "gpu": use cpu, cuda or cuda:N`},
		{"CUDA:0", `invalid --device "CUDA:0": use cpu, cuda or cuda:N`},
		{"cuda0", `invalid --device "cuda0": use cpu, cuda or cuda:N`},
		{"cuda:", `invalid --device "cuda:": the GPU ordinal after "cuda:" must be an integer`},
		{"cuda:-1", `invalid --device "cuda:-1": the GPU ordinal`},
		{"cuda:x", `invalid --device "cuda:x": the GPU ordinal`},
		{"cuda:99999999999", `invalid --device "cuda:99999999999": the GPU ordinal`},
	}
	for _, tc := range cases {
		_, err := Parse(tc.value)
		require.Error(t, err, tc.value)
		assert.Contains(t, err.Error(), tc.want, tc.value)
	}
}

func TestSpecOrdinal(t *testing.T) {
	assert.Equal(t, 0, Spec{Kind: CUDA, Index: -1}.Ordinal(), "cuda without an ordinal")
	assert.Equal(t, 2, Spec{Kind: CUDA, Index: 2}.Ordinal())
	assert.Equal(t, "cpu", Spec{}.String(), "the zero Spec")
}

// cudaLibraries are the file names of the libraries that only the CUDA
// backend loads.
var cudaLibraries = []string{"libcuda.so", "libnvrtc.so", "libcublas.so"}

func TestOpenCPULoadsNoCUDALibrary(t *testing.T) {
	backend, err := Open(Spec{Kind: CPU}, Options{Workers: 1})
	require.NoError(t, err)
	defer backend.Close()
	_, ok := backend.(*cpu.Backend)
	assert.True(t, ok, "Open(cpu) returned a %T", backend)

	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("cannot read the process's mappings: %v", err)
	}
	for _, lib := range cudaLibraries {
		assert.NotContains(t, string(maps), lib, "the process mapped %s after Open(cpu)", lib)
	}
}

func TestOpenCPURejectsBadOptions(t *testing.T) {
	_, err := Open(Spec{Kind: CPU}, Options{Workers: -1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid Workers -1")
}

func TestOpenCUDAErrorNamesFlag(t *testing.T) {
	spec := Spec{Kind: CUDA, Index: 3}
	backend, err := Open(spec, Options{CacheDir: t.TempDir()})
	if err == nil {
		backend.Close()
		t.Skip("this host has CUDA device 3, so Open cannot fail here")
	}
	assert.True(t, strings.HasPrefix(err.Error(), "--device cuda:3: "), "error %q should start with the flag value", err)
	if !CUDABuilt {
		assert.ErrorIs(t, err, errNoCUDA)
		assert.Contains(t, err.Error(), "built with -tags nocuda")
		assert.Contains(t, err.Error(), "--device cpu")
	}
}

func TestCheckBuilt(t *testing.T) {
	assert.NoError(t, CheckBuilt(Spec{Kind: CPU}))
	err := CheckBuilt(Spec{Kind: CUDA, Index: 1})
	if CUDABuilt {
		assert.NoError(t, err, "a binary with the CUDA backend can try any CUDA device")
		return
	}
	require.Error(t, err)
	assert.ErrorIs(t, err, errNoCUDA)
	assert.True(t, strings.HasPrefix(err.Error(), "--device cuda:1: "), "error %q should start with the flag value", err)
}

func TestOpenRejectsUnknownKind(t *testing.T) {
	_, err := Open(Spec{Kind: Kind(9)}, Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid device kind 9")
}
