package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeBinary replaces ringtune in the tests. The image does not run it, and
// Build skips the ELF checks when Architecture is given.
var fakeBinary = []byte("#!/bin/sh\necho 'not really ringtune'\n")

// tarEntry is one file of a layer with its content.
type tarEntry struct {
	header  *tar.Header
	content []byte
}

// readLayerFiles returns the entries of the image's only layer by path.
func readLayerFiles(t *testing.T, img v1.Image) map[string]tarEntry {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	mt, err := layers[0].MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCILayer, mt)

	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	files := map[string]tarEntry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		content, err := io.ReadAll(tr)
		require.NoError(t, err)
		files["/"+strings.TrimSuffix(h.Name, "/")] = tarEntry{header: h, content: content}
	}
	return files
}

// buildAndReadBack builds the image of fakeBinary into a new layout and
// returns the image read back from disk with the layout's only descriptor.
func buildAndReadBack(t *testing.T) (v1.Image, v1.Descriptor) {
	t.Helper()
	img, err := Build(Options{
		Binary:       fakeBinary,
		Architecture: "amd64",
		Version:      "1.2.3",
		Revision:     "abc123",
		Source:       "https://github.com/ringtune/ringtune",
		Created:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	})
	require.NoError(t, err)

	dir := t.TempDir()
	require.NoError(t, WriteLayout(dir, img, "ringtune:1.2.3"))

	path, err := layout.FromPath(dir)
	require.NoError(t, err)
	index, err := path.ImageIndex()
	require.NoError(t, err)
	require.NoError(t, validate.Index(index), "the layout's index must validate")
	manifest, err := index.IndexManifest()
	require.NoError(t, err)
	require.Len(t, manifest.Manifests, 1)
	desc := manifest.Manifests[0]
	read, err := index.Image(desc.Digest)
	require.NoError(t, err)
	return read, desc
}

func TestLayoutImageValidates(t *testing.T) {
	img, desc := buildAndReadBack(t)
	require.NoError(t, validate.Image(img))

	assert.Equal(t, types.OCIManifestSchema1, desc.MediaType)
	assert.Equal(t, "ringtune:1.2.3", desc.Annotations[RefNameAnnotation])
	require.NotNil(t, desc.Platform)
	assert.Equal(t, "linux", desc.Platform.OS)
	assert.Equal(t, "amd64", desc.Platform.Architecture)
}

func TestImageConfig(t *testing.T) {
	img, _ := buildAndReadBack(t)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)

	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, "amd64", cfg.Architecture)
	assert.Equal(t, []string{"/usr/local/bin/ringtune"}, cfg.Config.Entrypoint)
	assert.Empty(t, cfg.Config.Cmd)
	assert.Equal(t, "65532:65532", cfg.Config.User)
	assert.NotContains(t, []string{"", "0", "root", "0:0"}, cfg.Config.User, "the image must not run as root")
	assert.Equal(t, "/home/nonroot", cfg.Config.WorkingDir)
	assert.Equal(t, "ringtune", cfg.Config.Labels["org.opencontainers.image.title"])
	assert.Equal(t, "1.2.3", cfg.Config.Labels["org.opencontainers.image.version"])
	assert.Equal(t, "abc123", cfg.Config.Labels["org.opencontainers.image.revision"])
	assert.Equal(t, "https://github.com/ringtune/ringtune", cfg.Config.Labels["org.opencontainers.image.source"])
	assert.Equal(t, "2026-01-02T03:04:05Z", cfg.Config.Labels["org.opencontainers.image.created"])
}

func TestImageFiles(t *testing.T) {
	img, _ := buildAndReadBack(t)
	files := readLayerFiles(t, img)

	bin, ok := files["/usr/local/bin/ringtune"]
	require.True(t, ok, "the layer has no /usr/local/bin/ringtune")
	assert.Equal(t, byte(tar.TypeReg), bin.header.Typeflag)
	assert.Equal(t, int64(0o755), bin.header.Mode)
	assert.Equal(t, 0, bin.header.Uid, "root owns the binary, so the running user cannot replace it")
	assert.Equal(t, fakeBinary, bin.content)

	passwd, ok := files["/etc/passwd"]
	require.True(t, ok, "the layer has no /etc/passwd")
	assert.Contains(t, strings.Split(string(passwd.content), "\n"), "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin")
	group, ok := files["/etc/group"]
	require.True(t, ok, "the layer has no /etc/group")
	assert.Contains(t, strings.Split(string(group.content), "\n"), "nonroot:x:65532:")

	home, ok := files["/home/nonroot"]
	require.True(t, ok, "the layer has no home directory")
	assert.Equal(t, byte(tar.TypeDir), home.header.Typeflag)
	assert.Equal(t, 65532, home.header.Uid)
	assert.Equal(t, 65532, home.header.Gid)
	tmp, ok := files["/tmp"]
	require.True(t, ok, "the layer has no /tmp")
	assert.Equal(t, int64(0o1777), tmp.header.Mode)

	for name, f := range files {
		assert.Equal(t, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), f.header.ModTime.UTC(), "modification time of %s", name)
	}
}

func TestBuildIsReproducible(t *testing.T) {
	digest := func() v1.Hash {
		img, err := Build(Options{Binary: fakeBinary, Architecture: "arm64", Version: "1"})
		require.NoError(t, err)
		d, err := img.Digest()
		require.NoError(t, err)
		return d
	}
	assert.Equal(t, digest(), digest())
}

func TestBuildRejectsBadBinaries(t *testing.T) {
	_, err := Build(Options{Architecture: "amd64"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "empty")

	_, err = Build(Options{Binary: fakeBinary})
	require.Error(t, err, "without Architecture, Build must check the binary")
	assert.Contains(t, err.Error(), "not an ELF executable")
}

func TestInspectBinary(t *testing.T) {
	// The test binary is an ELF executable for this machine. Whether it is
	// static depends on cgo, so only the architecture or the reason is checked.
	self, err := os.Executable()
	require.NoError(t, err)
	content, err := os.ReadFile(self)
	require.NoError(t, err)
	arch, err := InspectBinary(content)
	if err != nil {
		assert.Contains(t, err.Error(), "dynamically linked")
	} else {
		assert.Contains(t, []string{"amd64", "arm64"}, arch)
	}

	// /bin/sh is dynamically linked on the usual Linux distributions.
	if sh, err := os.ReadFile("/bin/sh"); err == nil {
		_, err := InspectBinary(sh)
		if err != nil {
			assert.Contains(t, err.Error(), "dynamically linked")
		}
	}

	_, err = InspectBinary([]byte("#!/bin/sh\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not an ELF executable")
}

func TestWriteLayoutRejectsNonEmptyFolder(t *testing.T) {
	img, err := Build(Options{Binary: fakeBinary, Architecture: "amd64"})
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/keep.txt", []byte("x"), 0o644))

	err = WriteLayout(dir, img, "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not empty")
	_, statErr := os.Stat(dir + "/index.json")
	assert.True(t, errors.Is(statErr, os.ErrNotExist), "WriteLayout must leave a non-empty folder alone")
}

// TestLayoutHasNoStrayBlobs checks that the layout holds exactly the blobs the
// image references: its manifest, its config and its layer.
func TestLayoutHasNoStrayBlobs(t *testing.T) {
	img, err := Build(Options{Binary: fakeBinary, Architecture: "amd64"})
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, WriteLayout(dir, img, ""))

	blobs, err := os.ReadDir(dir + "/blobs/sha256")
	require.NoError(t, err)
	assert.Len(t, blobs, 3)
	layoutFile, err := os.ReadFile(dir + "/oci-layout")
	require.NoError(t, err)
	assert.True(t, bytes.Contains(layoutFile, []byte(`"imageLayoutVersion"`)), string(layoutFile))
}
