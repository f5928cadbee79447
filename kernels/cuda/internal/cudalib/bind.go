//go:build linux

package cudalib

import (
	"fmt"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// symbol is a C function to resolve into the Go function variable that fptr points to.
type symbol struct {
	name     string
	fptr     any
	optional bool // absent in older releases; the variable stays nil
}

// bind resolves syms in the library handle and registers each with purego. It fails
// on the first required symbol that the library lacks, naming the library and file.
func bind(handle uintptr, lib Library, path string, syms []symbol) error {
	for _, s := range syms {
		addr, err := purego.Dlsym(handle, s.name)
		if err != nil || addr == 0 {
			if s.optional {
				continue
			}
			return fmt.Errorf("load %s: %s lacks the symbol %s, which CUDA 11.2 and later export: %v", lib.Name, path, s.name, err)
		}
		purego.RegisterFunc(s.fptr, addr)
	}
	return nil
}

// dlopen opens the library at path with its symbols resolved now.
func dlopen(lib Library, path string) (uintptr, error) {
	handle, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return 0, fmt.Errorf("load CUDA: dlopen %s (%s): %w", path, lib.Name, err)
	}
	return handle, nil
}

// cString returns s as a NUL-terminated C string. It rejects a NUL inside s, which
// would silently cut the string short on the C side.
func cString(label, s string) (*byte, error) {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return nil, fmt.Errorf("%s contains a NUL byte at offset %d", label, i)
	}
	b := make([]byte, len(s)+1)
	copy(b, s)
	return &b[0], nil
}

// goString copies the NUL-terminated C string at p, which the C library owns.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
