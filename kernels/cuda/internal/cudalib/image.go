package cudalib

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
)

// arch is a parsed NVRTC architecture name.
type arch struct {
	real   bool   // sm_XY, a real architecture; false for compute_XY, a virtual one
	number int    // XY, such as 80 or 90
	suffix string // "a" or "f" for architecture- or family-specific targets such as sm_90a; usually empty
}

var archPattern = regexp.MustCompile(`^(sm|compute)_([1-9][0-9]{1,2})([af]?)$`)

// parseArch parses names such as "sm_80", "sm_90a" or "compute_90".
func parseArch(name string) (arch, error) {
	m := archPattern.FindStringSubmatch(name)
	if m == nil {
		return arch{}, fmt.Errorf("invalid CUDA architecture %q: expected sm_XY or compute_XY, such as sm_80 or sm_90", name)
	}
	number, _ := strconv.Atoi(m[2])
	return arch{real: m[1] == "sm", number: number, suffix: m[3]}, nil
}

// ImageKind is the format of a compiled CUDA image.
type ImageKind int

// Formats that cuModuleLoadData accepts.
const (
	ImageUnknown ImageKind = iota
	ImageCubin             // an ELF file of machine code for one architecture
	ImagePTX               // PTX assembly text, compiled by the driver at load
	ImageFatbin            // a fat binary of cubins and PTX
)

func (k ImageKind) String() string {
	switch k {
	case ImageCubin:
		return "cubin"
	case ImagePTX:
		return "PTX"
	case ImageFatbin:
		return "fatbin"
	}
	return "unknown"
}

// Magic bytes of the formats: the ELF header of a cubin, and the little-endian
// 0xBA55ED50 that starts a fatbin (fatbinary.h in the CUDA toolkit).
var (
	elfMagic    = []byte{0x7f, 'E', 'L', 'F'}
	fatbinMagic = []byte{0x50, 0xed, 0x55, 0xba}
)

// DetectImage returns the format of image from its first bytes. PTX is text that
// contains a ".version" directive, as every PTX file from NVRTC or nvcc does.
func DetectImage(image []byte) ImageKind {
	switch {
	case bytes.HasPrefix(image, elfMagic):
		return ImageCubin
	case bytes.HasPrefix(image, fatbinMagic):
		return ImageFatbin
	case isPTX(image):
		return ImagePTX
	}
	return ImageUnknown
}

// isPTX reports whether image is text with a .version directive. It looks at the
// first 4 KiB only, where NVRTC puts the directive after a few comment lines.
func isPTX(image []byte) bool {
	head := image[:min(len(image), 4096)]
	if bytes.IndexByte(bytes.TrimRight(head, "\x00"), 0) >= 0 {
		return false
	}
	return bytes.Contains(head, []byte(".version "))
}
