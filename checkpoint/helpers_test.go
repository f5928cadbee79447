package checkpoint_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
)

// buildFile returns a safetensors file image: the header length, header and data.
func buildFile(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

// writeTempFile writes content to name in a new temporary directory and returns its path.
func writeTempFile(t *testing.T, name string, content []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, content, 0o644))
	return path
}

// requireError checks that err is a *checkpoint.Error of kind and that its message
// contains every one of parts.
func requireError(t *testing.T, err error, kind error, parts ...string) {
	t.Helper()
	require.Error(t, err)
	var e *checkpoint.Error
	require.True(t, errors.As(err, &e), "error %q is not a *checkpoint.Error", err)
	assert.ErrorIs(t, err, kind)
	for _, part := range parts {
		assert.Contains(t, err.Error(), part)
	}
}

// readAllFloat32 reads every float tensor of r into a map.
func readAllFloat32(t *testing.T, r checkpoint.Reader) map[string][]float32 {
	t.Helper()
	out := make(map[string][]float32)
	for _, info := range r.Tensors() {
		values := make([]float32, info.NumElements())
		require.NoError(t, r.ReadFloat32(info.Name, values), info.Name)
		out[info.Name] = values
	}
	return out
}

func names(infos []checkpoint.TensorInfo) []string {
	out := make([]string, len(infos))
	for i, info := range infos {
		out[i] = info.Name
	}
	return out
}
