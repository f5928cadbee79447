//go:build linux

package cudalib

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// nvrtcAPI holds NVRTC's entry points. nvrtcProgram is uintptr, size_t is uintptr,
// and every function but nvrtcGetErrorString returns an nvrtcResult.
type nvrtcAPI struct {
	nvrtcVersion              func(major, minor *int32) int32
	nvrtcGetErrorString       func(result int32) *byte
	nvrtcGetNumSupportedArchs func(count *int32) int32 // NVRTC 11.2 and later
	nvrtcGetSupportedArchs    func(archs *int32) int32 // NVRTC 11.2 and later
	nvrtcCreateProgram        func(program *uintptr, source, name *byte, numHeaders int32, headers, includeNames **byte) int32
	nvrtcDestroyProgram       func(program *uintptr) int32
	nvrtcCompileProgram       func(program uintptr, numOptions int32, options **byte) int32
	nvrtcGetProgramLogSize    func(program uintptr, size *uintptr) int32
	nvrtcGetProgramLog        func(program uintptr, log *byte) int32
	nvrtcGetPTXSize           func(program uintptr, size *uintptr) int32
	nvrtcGetPTX               func(program uintptr, ptx *byte) int32
	nvrtcGetCUBINSize         func(program uintptr, size *uintptr) int32 // NVRTC 11.1 and later
	nvrtcGetCUBIN             func(program uintptr, cubin *byte) int32   // NVRTC 11.1 and later
}

// NVRTC is a loaded NVRTC library, the CUDA runtime compiler. It needs neither a
// GPU nor the driver. Its methods are safe for concurrent use.
type NVRTC struct {
	Path         string // the libnvrtc file loaded
	BuiltinsPath string // the libnvrtc-builtins file loaded beside it; empty when left to the system's loader
	api          nvrtcAPI
	major, minor int
	archs        []int // the sm_XY numbers (XY) this NVRTC compiles for, ascending; nil before NVRTC 11.2
}

// FindNVRTC finds NVRTC in SearchDirs(os.Getenv) and loads it.
func FindNVRTC() (*NVRTC, error) {
	paths, err := Find([]Library{NVRTCLibrary}, SearchDirs(os.Getenv))
	if err != nil {
		return nil, err
	}
	return LoadNVRTC(paths)
}

// LoadNVRTC opens the NVRTC file of paths and resolves its entry points.
//
// NVRTC opens its builtins library (libnvrtc-builtins.so.X.Y) by name when it
// first compiles. When that file sits beside libnvrtc but outside the loader's
// search path, as in the folder of scripts/install-nvrtc.sh, LoadNVRTC opens it
// first, so that NVRTC's own dlopen finds it already loaded.
func LoadNVRTC(paths Paths) (*NVRTC, error) {
	path, ok := paths[NVRTCLibrary.Name]
	if !ok {
		return nil, fmt.Errorf("load NVRTC: no file for NVRTC (%s)", strings.Join(NVRTCLibrary.Files, ", "))
	}
	handle, err := dlopen(NVRTCLibrary, path)
	if err != nil {
		return nil, err
	}
	n := &NVRTC{Path: path}
	a := &n.api
	syms := []symbol{
		{name: "nvrtcVersion", fptr: &a.nvrtcVersion},
		{name: "nvrtcGetErrorString", fptr: &a.nvrtcGetErrorString},
		{name: "nvrtcGetNumSupportedArchs", fptr: &a.nvrtcGetNumSupportedArchs, optional: true},
		{name: "nvrtcGetSupportedArchs", fptr: &a.nvrtcGetSupportedArchs, optional: true},
		{name: "nvrtcCreateProgram", fptr: &a.nvrtcCreateProgram},
		{name: "nvrtcDestroyProgram", fptr: &a.nvrtcDestroyProgram},
		{name: "nvrtcCompileProgram", fptr: &a.nvrtcCompileProgram},
		{name: "nvrtcGetProgramLogSize", fptr: &a.nvrtcGetProgramLogSize},
		{name: "nvrtcGetProgramLog", fptr: &a.nvrtcGetProgramLog},
		{name: "nvrtcGetPTXSize", fptr: &a.nvrtcGetPTXSize},
		{name: "nvrtcGetPTX", fptr: &a.nvrtcGetPTX},
		{name: "nvrtcGetCUBINSize", fptr: &a.nvrtcGetCUBINSize, optional: true},
		{name: "nvrtcGetCUBIN", fptr: &a.nvrtcGetCUBIN, optional: true},
	}
	if err := bind(handle, NVRTCLibrary, path, syms); err != nil {
		return nil, err
	}
	if (a.nvrtcGetCUBINSize == nil) != (a.nvrtcGetCUBIN == nil) {
		a.nvrtcGetCUBINSize, a.nvrtcGetCUBIN = nil, nil
	}

	var major, minor int32
	if err := n.check("nvrtcVersion", a.nvrtcVersion(&major, &minor), ""); err != nil {
		return nil, fmt.Errorf("load NVRTC %s: %w", path, err)
	}
	n.major, n.minor = int(major), int(minor)
	if err := n.loadArchs(); err != nil {
		return nil, fmt.Errorf("load NVRTC %s: %w", path, err)
	}
	n.BuiltinsPath = preloadBuiltins(path, n.major, n.minor)
	return n, nil
}

// loadArchs reads the architectures this NVRTC compiles for.
func (n *NVRTC) loadArchs() error {
	a := &n.api
	if a.nvrtcGetNumSupportedArchs == nil || a.nvrtcGetSupportedArchs == nil {
		return nil
	}
	var count int32
	if err := n.check("nvrtcGetNumSupportedArchs", a.nvrtcGetNumSupportedArchs(&count), ""); err != nil {
		return err
	}
	if count <= 0 || count > 1024 {
		return fmt.Errorf("nvrtcGetNumSupportedArchs returned %d architectures", count)
	}
	archs := make([]int32, count)
	if err := n.check("nvrtcGetSupportedArchs", a.nvrtcGetSupportedArchs(&archs[0]), ""); err != nil {
		return err
	}
	for _, arch := range archs {
		n.archs = append(n.archs, int(arch))
	}
	slices.Sort(n.archs)
	return nil
}

// preloadBuiltins opens libnvrtc-builtins.so.MAJOR.MINOR from the folder of the
// NVRTC file, or from the folder its symbolic link points into, and returns the
// path opened, or "" when neither has it or it does not load. In the "" case
// NVRTC searches the loader's path itself and reports a missing file in its log.
func preloadBuiltins(nvrtcPath string, major, minor int) string {
	name := fmt.Sprintf("libnvrtc-builtins.so.%d.%d", major, minor)
	dirs := []string{filepath.Dir(nvrtcPath)}
	if resolved, err := filepath.EvalSymlinks(nvrtcPath); err == nil && filepath.Dir(resolved) != dirs[0] {
		dirs = append(dirs, filepath.Dir(resolved))
	}
	for _, dir := range dirs {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		if _, err := dlopen(Library{Name: "NVRTC builtins", Files: []string{name}}, path); err == nil {
			return path
		}
	}
	return ""
}

// Version returns NVRTC's version, such as 11.8 or 12.4, which LoadNVRTC read.
// It fails only on a nil *NVRTC.
func (n *NVRTC) Version() (major, minor int, err error) {
	if n == nil {
		return 0, 0, errNoNVRTC
	}
	return n.major, n.minor, nil
}

// SupportedArchs returns the XY of every sm_XY this NVRTC compiles for, ascending,
// or nil when NVRTC is older than 11.2 and cannot list them.
func (n *NVRTC) SupportedArchs() []int {
	if n == nil {
		return nil
	}
	return slices.Clone(n.archs)
}

func (n *NVRTC) check(call string, rc int32, detail string, args ...any) error {
	if rc == 0 {
		return nil
	}
	e := &Error{Call: call, Code: int(rc), Name: goString(n.api.nvrtcGetErrorString(rc))}
	if e.Name == "" {
		e.Name = fmt.Sprintf("nvrtcResult(%d)", rc)
	}
	if detail != "" {
		e.Detail = fmt.Sprintf(detail, args...)
	}
	return e
}

// target is the output NVRTC produces for an arch.
type target struct {
	option string // the value of --gpu-architecture, such as "sm_90" or "compute_80"
	cubin  bool   // true: get a cubin; false: get PTX, which the driver compiles at load
}

// chooseTarget maps arch to what this NVRTC can emit. A "compute_XY" arch gives
// PTX. An "sm_XY" arch gives a cubin when NVRTC supports sm_XY and can emit
// cubins. Otherwise it gives PTX for the newest supported architecture up to XY,
// which the driver can compile for the newer device, except for arch-specific
// targets such as sm_90a, whose features do not carry over.
func (n *NVRTC) chooseTarget(arch string) (target, error) {
	a, err := parseArch(arch)
	if err != nil {
		return target{}, err
	}
	if !a.real {
		return target{option: arch}, nil
	}
	supported := n.archs == nil || slices.Contains(n.archs, a.number)
	if supported && n.api.nvrtcGetCUBIN != nil {
		return target{option: arch, cubin: true}, nil
	}
	if supported {
		return target{option: fmt.Sprintf("compute_%d%s", a.number, a.suffix)}, nil
	}
	if a.suffix != "" {
		return target{}, fmt.Errorf("NVRTC %d.%d at %s cannot compile for %s, and code for an architecture-specific target cannot come from an older architecture: install NVRTC from a CUDA release that supports %s", n.major, n.minor, n.Path, arch, arch)
	}
	older := -1
	for _, number := range n.archs {
		if number <= a.number {
			older = number
		}
	}
	if older < 0 {
		return target{}, fmt.Errorf("NVRTC %d.%d at %s cannot compile for %s: it supports sm_%d to sm_%d", n.major, n.minor, n.Path, arch, n.archs[0], n.archs[len(n.archs)-1])
	}
	return target{option: fmt.Sprintf("compute_%d", older)}, nil
}

// Compile compiles the CUDA C++ source, named name in messages, for arch, such as
// "sm_80" or "sm_90". It returns a cubin, or PTX text (NUL-terminated, as
// cuModuleLoadData expects) when arch is a "compute_XY" target or when this NVRTC
// cannot emit a cubin for arch. It also returns NVRTC's log, which holds the
// warnings of a successful compile.
//
// Options are nvcc-style NVRTC options, such as "-std=c++17" or
// "--use_fast_math"; the architecture comes from arch, so options must not set
// -arch or --gpu-architecture. A failed compile returns a *CompileError with the
// log. Kernels that Module.Function looks up by name should be extern "C", so
// that their names are not mangled.
func (n *NVRTC) Compile(source, name, arch string, options []string) (image []byte, log string, err error) {
	if n == nil {
		return nil, "", errNoNVRTC
	}
	for _, option := range options {
		if strings.HasPrefix(option, "-arch") || strings.HasPrefix(option, "--gpu-architecture") {
			return nil, "", fmt.Errorf("compile %q: option %q sets the architecture; pass it as arch (%q) instead", name, option, arch)
		}
	}
	t, err := n.chooseTarget(arch)
	if err != nil {
		return nil, "", fmt.Errorf("compile %q: %w", name, err)
	}
	cSource, err := cString("CUDA source of "+name, source)
	if err != nil {
		return nil, "", err
	}
	cName, err := cString("CUDA program name", name)
	if err != nil {
		return nil, "", err
	}
	cOptions := make([]*byte, 0, len(options)+1)
	for _, option := range append(slices.Clip(options), "--gpu-architecture="+t.option) {
		cOption, err := cString("NVRTC option", option)
		if err != nil {
			return nil, "", fmt.Errorf("compile %q: %w", name, err)
		}
		cOptions = append(cOptions, cOption)
	}

	var program uintptr
	if err := n.check("nvrtcCreateProgram", n.api.nvrtcCreateProgram(&program, cSource, cName, 0, nil, nil), "program %q", name); err != nil {
		return nil, "", err
	}
	defer n.api.nvrtcDestroyProgram(&program)

	rc := n.api.nvrtcCompileProgram(program, int32(len(cOptions)), &cOptions[0])
	log, logErr := n.programLog(program)
	if err := n.check("nvrtcCompileProgram", rc, "program %q, --gpu-architecture=%s", name, t.option); err != nil {
		if logErr != nil {
			log = logErr.Error()
		}
		return nil, log, &CompileError{Program: name, Arch: arch, Log: log, Err: err}
	}
	if logErr != nil {
		return nil, "", logErr
	}

	if t.cubin {
		image, err = n.output("nvrtcGetCUBIN", program, n.api.nvrtcGetCUBINSize, n.api.nvrtcGetCUBIN)
	} else {
		image, err = n.output("nvrtcGetPTX", program, n.api.nvrtcGetPTXSize, n.api.nvrtcGetPTX)
	}
	if err != nil {
		return nil, log, fmt.Errorf("compile %q for %s: %w", name, arch, err)
	}
	return image, log, nil
}

// programLog returns the compile log of program, without the trailing NUL.
func (n *NVRTC) programLog(program uintptr) (string, error) {
	var size uintptr
	if err := n.check("nvrtcGetProgramLogSize", n.api.nvrtcGetProgramLogSize(program, &size), ""); err != nil {
		return "", err
	}
	if size <= 1 {
		return "", nil
	}
	buf := make([]byte, size)
	if err := n.check("nvrtcGetProgramLog", n.api.nvrtcGetProgramLog(program, &buf[0]), ""); err != nil {
		return "", err
	}
	return strings.TrimRight(string(buf), "\x00"), nil
}

// output copies a compiled image of program through the size and copy functions
// named call.
func (n *NVRTC) output(call string, program uintptr, sizeOf func(uintptr, *uintptr) int32, copyOut func(uintptr, *byte) int32) ([]byte, error) {
	var size uintptr
	if err := n.check(call+"Size", sizeOf(program, &size), ""); err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, fmt.Errorf("%sSize returned 0 bytes", call)
	}
	image := make([]byte, size)
	if err := n.check(call, copyOut(program, &image[0]), ""); err != nil {
		return nil, err
	}
	return image, nil
}
