// Command build-image writes the static CPU-only ringtune container image as
// an OCI image layout, without a container daemon. The image has no C library,
// so it takes the static binary of -tags nocuda, which rejects --device cuda:
//
//	CGO_ENABLED=0 GOOS=linux go build -trimpath -tags nocuda -o bin/ringtune-static ./cmd/ringtune
//	go run ./deploy/cmd/build-image --binary bin/ringtune-static --out out/image --version v0.1.0
//
// Push the layout with `crane push out/image REGISTRY/ringtune:TAG` or
// `skopeo copy oci:out/image:ringtune:v0.1.0 docker://REGISTRY/ringtune:TAG`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ringtune/ringtune/deploy/image"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "build-image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("build-image", flag.ContinueOnError)
	binary := fs.String("binary", "bin/ringtune-static", "static linux ringtune `FILE` (built with -tags nocuda, as by make build-static) to put at "+image.BinaryPath)
	out := fs.String("out", "out/image", "`DIR` of the OCI image layout to write; it must not exist or be empty")
	version := fs.String("version", "dev", "image version: the org.opencontainers.image.version label and the tag in --ref")
	ref := fs.String("ref", "", "`NAME` of the image in the layout's index.json (default: ringtune:VERSION)")
	revision := fs.String("revision", "", "source revision for the org.opencontainers.image.revision label, such as a git commit")
	source := fs.String("source", "https://github.com/ringtune/ringtune", "source repository `URL` for the org.opencontainers.image.source label")
	arch := fs.String("arch", "", "image architecture (amd64, arm64) (default: the binary's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: every input is a flag, see -help", fs.Args())
	}

	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	content, err := os.ReadFile(*binary)
	if err != nil {
		return fmt.Errorf("read --binary: %w", err)
	}
	if _, err := image.InspectBinary(content); err != nil {
		return fmt.Errorf("--binary %s: %w", *binary, err)
	}
	img, err := image.Build(image.Options{
		Binary:       content,
		Architecture: *arch,
		Version:      *version,
		Revision:     *revision,
		Source:       *source,
		Created:      created,
	})
	if err != nil {
		return err
	}
	name := *ref
	if name == "" {
		name = "ringtune:" + *version
	}
	if err := image.WriteLayout(*out, img, name); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("compute the image digest: %w", err)
	}
	fmt.Printf("wrote %s (%s) to %s\n", name, digest, *out)
	return nil
}

// sourceDateEpoch returns the time in $SOURCE_DATE_EPOCH (seconds since the
// Unix epoch, the reproducible-builds convention), or the zero time, which
// image.Build turns into the epoch.
func sourceDateEpoch() (time.Time, error) {
	text := os.Getenv("SOURCE_DATE_EPOCH")
	if text == "" {
		return time.Time{}, nil
	}
	seconds, err := strconv.ParseInt(text, 10, 64)
	if err != nil || seconds < 0 {
		return time.Time{}, errors.New("invalid SOURCE_DATE_EPOCH " + strconv.Quote(text) + ": must be a non-negative number of seconds since 1970-01-01 UTC")
	}
	return time.Unix(seconds, 0), nil
}
