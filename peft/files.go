package peft

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"

	"github.com/ringtune/ringtune/internal/atomicfile"
)

// writeFileAtomic writes data to a temporary file next to path, syncs it and renames it
// over path, so a crash leaves the old file or the complete new one.
func writeFileAtomic(path string, data []byte) error {
	return writeAtomic(path, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}

// copyFileAtomic copies src to dst through a temporary file that is renamed into place.
// It stops with ctx's error once ctx is canceled.
func copyFileAtomic(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(dst, func(w io.Writer) error {
		_, err := io.Copy(w, contextReader{ctx: ctx, r: in})
		return err
	})
}

// writeAtomic writes path through a temporary file and makes the rename durable.
func writeAtomic(path string, write func(io.Writer) error) error {
	if err := atomicfile.Write(path, write); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }
