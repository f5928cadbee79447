package cudalib

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CacheDir returns the default folder of CompileCached: $RINGTUNE_CACHE/cuda-kernels
// when RINGTUNE_CACHE is set, and otherwise ringtune/cuda-kernels in os.UserCacheDir
// (such as ~/.cache/ringtune/cuda-kernels). It fails when neither is known.
func CacheDir() (string, error) {
	if dir := os.Getenv("RINGTUNE_CACHE"); dir != "" {
		return filepath.Join(dir, "cuda-kernels"), nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder for CUDA kernels: %w; set RINGTUNE_CACHE", err)
	}
	return filepath.Join(dir, "ringtune", "cuda-kernels"), nil
}

// cacheMagic starts every cache entry: the format's name and version.
var cacheMagic = []byte("ringtune-cuda-image-v1\n")

// CompileCached returns n.Compile's image of source for arch, from the cache in
// dir when an earlier call stored it there. dir "" means CacheDir().
//
// The entry's name is the SHA-256 of the source, name, arch, options and NVRTC
// version, so a change to any of them compiles anew. An entry carries the
// SHA-256 of its image, and an entry that is unreadable, truncated or corrupt,
// or whose image is not a cubin or PTX, is compiled anew and replaced. Entries
// are written to a temporary file and renamed into place, so concurrent
// processes never read half an entry. The cache only saves time: when dir cannot
// be created or written, CompileCached still returns the compiled image.
func CompileCached(n *NVRTC, dir, source, name, arch string, options []string) ([]byte, error) {
	if n == nil {
		return nil, errNoNVRTC
	}
	major, minor, err := n.Version()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		// Without a cache folder the kernels still compile, only every time.
		dir, _ = CacheDir()
	}
	key := cacheKey(source, name, arch, options, major, minor)
	var path string
	if dir != "" {
		path = filepath.Join(dir, key+".bin")
		if image, ok := readCacheEntry(path); ok {
			return image, nil
		}
	}

	image, _, err := n.Compile(source, name, arch, options)
	if err != nil {
		return nil, err
	}
	if path != "" {
		// A failed write leaves the cache as it was; the next call compiles again.
		_ = writeCacheEntry(path, image)
	}
	return image, nil
}

// cacheKey hashes the inputs of a compile, each with its length, so that no two
// different inputs give the same byte stream.
func cacheKey(source, name, arch string, options []string, major, minor int) string {
	h := sha256.New()
	field := func(s string) {
		var size [8]byte
		binary.LittleEndian.PutUint64(size[:], uint64(len(s)))
		h.Write(size[:])
		h.Write([]byte(s))
	}
	field(string(cacheMagic))
	field(fmt.Sprintf("nvrtc %d.%d", major, minor))
	field(source)
	field(name)
	field(arch)
	field(fmt.Sprint(len(options)))
	for _, option := range options {
		field(option)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// maxCacheEntrySize bounds the entries that readCacheEntry reads. Compiled kernel
// modules are far smaller, and the bound stops a huge or endless file, such as a
// symlink to /dev/zero, from filling memory.
const maxCacheEntrySize = 256 << 20

// readCacheEntry returns the image of the entry at path, or false when the entry
// is missing, unreadable, not a regular file, larger than maxCacheEntrySize or
// fails its checks.
func readCacheEntry(path string) ([]byte, bool) {
	data, err := readRegularFile(path, maxCacheEntrySize)
	if err != nil {
		return nil, false
	}
	image, err := decodeCacheEntry(data)
	if err != nil {
		return nil, false
	}
	return image, true
}

// readRegularFile returns the contents of path, which must be a regular file
// (after symlinks) of at most limit bytes. It checks the type before it opens the
// file, because opening a FIFO for reading blocks until a writer appears.
// NOTE: a FIFO put in the file's place between the check and the open still
// blocks the open. Only a process that can write to the cache folder can do that.
func readRegularFile(path string, limit int64) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (mode %v)", path, info.Mode())
	}
	if info.Size() > limit {
		return nil, fmt.Errorf("%s has %d bytes, more than the limit of %d", path, info.Size(), limit)
	}

	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The file may have been replaced or grown since the Stat.
	opened, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !os.SameFile(info, opened) {
		return nil, fmt.Errorf("%s changed while it was opened", path)
	}

	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s grew past the limit of %d bytes", path, limit)
	}
	return data, nil
}

// decodeCacheEntry checks an entry: the magic, then the SHA-256 of the image, then
// the image, which must be a cubin or PTX.
func decodeCacheEntry(data []byte) ([]byte, error) {
	if !bytes.HasPrefix(data, cacheMagic) {
		return nil, errors.New("cache entry lacks the magic")
	}
	data = data[len(cacheMagic):]
	if len(data) < sha256.Size {
		return nil, errors.New("cache entry is truncated")
	}
	sum, image := data[:sha256.Size], data[sha256.Size:]
	if actual := sha256.Sum256(image); !bytes.Equal(sum, actual[:]) {
		return nil, errors.New("cache entry fails its checksum")
	}
	if kind := DetectImage(image); kind != ImageCubin && kind != ImagePTX {
		return nil, fmt.Errorf("cache entry contains an image of kind %v, not a cubin or PTX", kind)
	}
	return image, nil
}

func encodeCacheEntry(image []byte) []byte {
	sum := sha256.Sum256(image)
	data := make([]byte, 0, len(cacheMagic)+len(sum)+len(image))
	data = append(data, cacheMagic...)
	data = append(data, sum[:]...)
	return append(data, image...)
}

// writeCacheEntry stores image at path through a temporary file in the same
// folder and a rename, which replaces the entry atomically on POSIX systems.
func writeCacheEntry(path string, image []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(encodeCacheEntry(image))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
