package image

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNocudaBuildIsStatic builds ringtune as make build-static does and checks
// that the image accepts it: an ELF executable without a dynamic loader or
// shared libraries, and without the CUDA backend's dlopen binding.
func TestNocudaBuildIsStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ringtune binary; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("checks a linux ELF binary")
	}
	bin := filepath.Join(t.TempDir(), "ringtune")
	build := exec.Command("go", "build", "-tags", "nocuda", "-o", bin, "../../cmd/ringtune")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build -tags nocuda:\n%s", out)

	content, err := os.ReadFile(bin)
	require.NoError(t, err)
	f, err := elf.NewFile(bytes.NewReader(content))
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "the nocuda binary names a dynamic loader")
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	assert.Empty(t, libs, "shared libraries the nocuda binary needs")
	arch, err := InspectBinary(content)
	require.NoError(t, err)
	assert.Equal(t, runtime.GOARCH, arch)

	info, err := buildinfo.ReadFile(bin)
	require.NoError(t, err)
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	assert.Equal(t, "nocuda", settings["-tags"], "build tags")
	assert.Equal(t, "0", settings["CGO_ENABLED"])
	for _, dep := range info.Deps {
		assert.NotEqual(t, "github.com/ebitengine/purego", dep.Path, "the nocuda binary contains the dlopen binding of the CUDA backend")
	}

	// The binary names the build when asked for a GPU.
	var stderr bytes.Buffer
	run := exec.Command(bin, "bench", "step", "--device", "cuda:0")
	run.Stderr = &stderr
	require.Error(t, run.Run())
	assert.Contains(t, stderr.String(), "--device cuda:0: this ringtune binary was built with -tags nocuda")
}
