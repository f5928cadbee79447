package cuda

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// compileArchs are the architectures the kernels must compile for: A100
// (sm_80) and H100/H200 (sm_90).
var compileArchs = []string{"sm_80", "sm_90"}

// TestKernelsCompile compiles every embedded kernel source with NVRTC for
// every architecture in compileArchs and checks that each kernel the backend
// resolves is in the image. It needs NVRTC, not a GPU: it skips without
// NVRTC, and fails instead when RINGTUNE_REQUIRE_NVRTC=1.
func TestKernelsCompile(t *testing.T) {
	nvrtc, err := loadNVRTC()
	if err != nil {
		if os.Getenv("RINGTUNE_REQUIRE_NVRTC") == "1" {
			t.Fatalf("RINGTUNE_REQUIRE_NVRTC=1 but NVRTC did not load: %v (run scripts/install-nvrtc.sh and set RINGTUNE_NVRTC_PATH)", err)
		}
		t.Skipf("NVRTC is not available, so the kernels are not compiled: %v (set RINGTUNE_NVRTC_PATH=$(scripts/install-nvrtc.sh))", err)
	}
	major, minor, err := nvrtc.Version()
	require.NoError(t, err)
	t.Logf("NVRTC %d.%d from %s", major, minor, nvrtc.Path)

	sources, err := kernelSources()
	require.NoError(t, err)
	require.NotEmpty(t, sources)
	var fn functions
	for _, src := range sources {
		for _, arch := range compileArchs {
			t.Run(src.Name+"/"+arch, func(t *testing.T) {
				image, log, err := nvrtc.Compile(src.Source, src.Name, arch, compileOptions)
				require.NoError(t, err, "NVRTC log:\n%s", log)
				if log = strings.TrimSpace(log); log != "" {
					t.Logf("NVRTC warnings:\n%s", log)
				}
				for _, k := range fn.table() {
					if k.file == src.Name {
						assert.True(t, bytes.Contains(image, []byte(k.name)), "kernel %s is missing from the image of %s", k.name, src.Name)
					}
				}
			})
		}
	}
}

// TestKernelTableFilesExist checks that every kernel of the table names an
// embedded source.
func TestKernelTableFilesExist(t *testing.T) {
	sources, err := kernelSources()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, src := range sources {
		names[src.Name] = true
		assert.True(t, strings.HasPrefix(src.Source, "// Definitions shared"), "%s starts with the common header", src.Name)
	}
	var fn functions
	for _, k := range fn.table() {
		assert.True(t, names[k.file], "kernel %s names %s, which is not embedded", k.name, k.file)
		assert.Contains(t, sourceOf(sources, k.file), `extern "C"`, k.file)
	}
}

func sourceOf(sources []kernelSource, name string) string {
	for _, src := range sources {
		if src.Name == name {
			return src.Source
		}
	}
	return ""
}
