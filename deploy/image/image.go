// Package image assembles the ringtune container image without a container
// daemon: one layer on an empty base that holds a static ringtune binary and
// the passwd and group entries of a non-root user, written as an OCI image
// layout that crane or skopeo can push to a registry.
package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// BinaryPath is where the image holds the ringtune binary; it is the entrypoint.
	BinaryPath = "/usr/local/bin/ringtune"
	// UserID and GroupID are those of the non-root user the image runs as. 65532
	// is the "nonroot" user of the distroless images, so the Kubernetes manifests
	// fit both this image and the one of deploy/Dockerfile.
	UserID  = 65532
	GroupID = 65532
	// UserName is the name of UserID in /etc/passwd and of GroupID in /etc/group.
	UserName = "nonroot"
	// HomeDir is the user's home directory and the image's working directory.
	HomeDir = "/home/nonroot"
	// RefNameAnnotation is the OCI annotation that names an image in a layout's
	// index.json; skopeo and crane select an image of a layout by it.
	RefNameAnnotation = "org.opencontainers.image.ref.name"
)

// Options describe the image to build.
type Options struct {
	// Binary is the content of a statically linked linux ringtune binary,
	// which only a build with -tags nocuda is (see InspectBinary).
	Binary []byte
	// Architecture is the image's GOARCH (amd64, arm64). Empty takes it from
	// the binary's ELF header.
	Architecture string
	// Version, Revision and Source fill the org.opencontainers.image.* labels
	// version, revision and source; empty values are left out.
	Version  string
	Revision string
	Source   string
	// Created is the image's creation time and the modification time of its
	// files. The zero value means the Unix epoch, so that the same inputs give
	// the same image digest.
	Created time.Time
}

// Build assembles the image: an empty OCI base with one layer that holds
// opts.Binary at BinaryPath (mode 0755, owned by root) and /etc/passwd,
// /etc/group and HomeDir for the non-root user, configured to run the binary
// as UserID:GroupID.
func Build(opts Options) (v1.Image, error) {
	if len(opts.Binary) == 0 {
		return nil, errors.New("build image: the ringtune binary is empty")
	}
	arch := opts.Architecture
	if arch == "" {
		var err error
		if arch, err = InspectBinary(opts.Binary); err != nil {
			return nil, err
		}
	}
	created := opts.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()

	layerTar, err := rootFS(opts.Binary, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("build image layer: %w", err)
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "ringtune deploy/image: COPY ringtune " + BinaryPath,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append the image layer: %w", err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read the image config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = arch
	cfg.Created = v1.Time{Time: created}
	cfg.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", UserID, GroupID),
		Entrypoint: []string{BinaryPath},
		WorkingDir: HomeDir,
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + HomeDir},
		Labels:     labels(opts, created),
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set the image config: %w", err)
	}
	return img, nil
}

// labels returns the OCI annotation keys of the image config's labels.
func labels(opts Options, created time.Time) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "ringtune",
		"org.opencontainers.image.description": "Distributed data-parallel fine-tuning of Qwen3 models (CPU-only static build)",
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	if opts.Version != "" {
		l["org.opencontainers.image.version"] = opts.Version
	}
	if opts.Revision != "" {
		l["org.opencontainers.image.revision"] = opts.Revision
	}
	if opts.Source != "" {
		l["org.opencontainers.image.source"] = opts.Source
	}
	return l
}

// rootFS returns the uncompressed tar of the image's only layer.
func rootFS(binary []byte, mtime time.Time) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:%s:/sbin/nologin\n",
		UserName, UserID, GroupID, UserName, HomeDir)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", UserName, GroupID)

	entries := []struct {
		header  tar.Header
		content []byte
	}{
		{header: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{header: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, content: []byte(passwd)},
		{header: tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644}, content: []byte(group)},
		{header: tar.Header{Name: "home/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{header: tar.Header{Name: "home/nonroot/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: UserID, Gid: GroupID}},
		// The sticky, world-writable /tmp of a usual root file system. With a
		// read-only root file system, Kubernetes mounts an emptyDir over it.
		{header: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}},
		{header: tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{header: tar.Header{Name: "usr/local/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{header: tar.Header{Name: "usr/local/bin/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{header: tar.Header{Name: BinaryPath[1:], Typeflag: tar.TypeReg, Mode: 0o755}, content: binary},
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.header
		h.Size = int64(len(e.content))
		h.ModTime = mtime
		h.Format = tar.FormatPAX
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeDir {
			h.Uname, h.Gname = "root", "root"
			if h.Uid == UserID {
				h.Uname, h.Gname = UserName, UserName
			}
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("write %s into the image layer: %w", h.Name, err)
		}
		if _, err := tw.Write(e.content); err != nil {
			return nil, fmt.Errorf("write %s into the image layer: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close the image layer: %w", err)
	}
	return buf.Bytes(), nil
}

// InspectBinary checks that content is a statically linked linux ELF
// executable, because the image has no C library or dynamic loader, and
// returns its GOARCH. A ringtune binary is static only when built with
// CGO_ENABLED=0 and -tags nocuda: the CUDA backend loads its libraries with
// dlopen, which links libc dynamically even without cgo.
func InspectBinary(content []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(content))
	if err != nil {
		return "", fmt.Errorf("the binary is not an ELF executable (%v): build it for linux with 'CGO_ENABLED=0 GOOS=linux go build -tags nocuda -o bin/ringtune-static ./cmd/ringtune'", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("the binary is an ELF file of type %s, not an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("the binary is dynamically linked, and the image has no C library: build the static CPU-only binary with CGO_ENABLED=0 and -tags nocuda (make build-static), or use the cuda target of deploy/Dockerfile for the CUDA build")
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	default:
		return "", fmt.Errorf("the binary is built for machine %s: build it with GOARCH=amd64 or GOARCH=arm64", f.Machine)
	}
}

// WriteLayout writes img as the only image of a new OCI image layout in dir,
// named refName in index.json when refName is not empty. dir must not exist or
// be empty, so that no image of an earlier build stays in the layout.
func WriteLayout(dir string, img v1.Image, refName string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read the output folder: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("the output folder %s is not empty: remove it or choose another one", dir)
	}
	path, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("create the OCI layout in %s: %w", dir, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read the image config: %w", err)
	}
	opts := []layout.Option{layout.WithPlatform(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture})}
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{RefNameAnnotation: refName}))
	}
	if err := path.AppendImage(img, opts...); err != nil {
		return fmt.Errorf("write the image into %s: %w", dir, err)
	}
	return nil
}
