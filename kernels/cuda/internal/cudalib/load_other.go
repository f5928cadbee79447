//go:build !linux

package cudalib

import (
	"time"
	"unsafe"
)

// On systems other than Linux every loader and device call fails with
// ErrNotLinux, so that the packages above compile everywhere.

// Libs holds the loaded libraries; on this system none can be loaded.
type Libs struct{ Paths Paths }

// Load fails: the loader is implemented for Linux only.
func Load(Paths) (*Libs, error) { return nil, ErrNotLinux }

// LoadAll fails: the loader is implemented for Linux only.
func LoadAll() (*Libs, error) { return nil, ErrNotLinux }

// Devices fails: the loader is implemented for Linux only.
func (l *Libs) Devices() (int, []Device, error) { return 0, nil, ErrNotLinux }

// Open fails: the loader is implemented for Linux only.
func (l *Libs) Open(int) (*Context, error) { return nil, ErrNotLinux }

// NVRTC returns nil.
func (l *Libs) NVRTC() *NVRTC { return nil }

// CuBLASVersion fails: the loader is implemented for Linux only.
func (l *Libs) CuBLASVersion() (int, int, int, error) { return 0, 0, 0, ErrNotLinux }

// NVRTC is the CUDA runtime compiler; on this system it cannot be loaded.
type NVRTC struct {
	Path, BuiltinsPath string
}

// FindNVRTC fails: the loader is implemented for Linux only.
func FindNVRTC() (*NVRTC, error) { return nil, ErrNotLinux }

// LoadNVRTC fails: the loader is implemented for Linux only.
func LoadNVRTC(Paths) (*NVRTC, error) { return nil, ErrNotLinux }

// Version fails: the loader is implemented for Linux only.
func (n *NVRTC) Version() (int, int, error) { return 0, 0, ErrNotLinux }

// SupportedArchs returns nil.
func (n *NVRTC) SupportedArchs() []int { return nil }

// Compile fails: the loader is implemented for Linux only.
func (n *NVRTC) Compile(string, string, string, []string) ([]byte, string, error) {
	return nil, "", ErrNotLinux
}

// Context is a CUDA device; on this system none can be opened.
type Context struct{}

// Module is a loaded CUDA image; on this system none can be loaded.
type Module struct{}

// Open fails: the loader is implemented for Linux only.
func Open(int) (*Context, error) { return nil, ErrNotLinux }

func (c *Context) Close() error                                        { return nil }
func (c *Context) Device() Device                                      { return Device{} }
func (c *Context) NVRTC() *NVRTC                                       { return nil }
func (c *Context) Stream() Stream                                      { return 0 }
func (c *Context) MemAlloc(int) (DevicePtr, error)                     { return 0, ErrNotLinux }
func (c *Context) MemFree(DevicePtr) error                             { return ErrNotLinux }
func (c *Context) MemGetInfo() (int, int, error)                       { return 0, 0, ErrNotLinux }
func (c *Context) MemsetD32Async(DevicePtr, uint32, int, Stream) error { return ErrNotLinux }
func (c *Context) MemcpyHtoD(DevicePtr, unsafe.Pointer, int) error     { return ErrNotLinux }
func (c *Context) MemcpyDtoH(unsafe.Pointer, DevicePtr, int) error     { return ErrNotLinux }
func (c *Context) MemcpyHtoDAsync(DevicePtr, unsafe.Pointer, int, Stream) error {
	return ErrNotLinux
}
func (c *Context) MemcpyDtoHAsync(unsafe.Pointer, DevicePtr, int, Stream) error {
	return ErrNotLinux
}
func (c *Context) MemcpyDtoDAsync(DevicePtr, DevicePtr, int, Stream) error { return ErrNotLinux }
func (c *Context) MemHostAlloc(int) (unsafe.Pointer, error)                { return nil, ErrNotLinux }
func (c *Context) MemHostFree(unsafe.Pointer) error                        { return ErrNotLinux }
func (c *Context) NewStream() (Stream, error)                              { return 0, ErrNotLinux }
func (c *Context) DestroyStream(Stream) error                              { return ErrNotLinux }
func (c *Context) StreamSynchronize(Stream) error                          { return ErrNotLinux }
func (c *Context) NewEvent() (Event, error)                                { return 0, ErrNotLinux }
func (c *Context) NewTimingEvent() (Event, error)                          { return 0, ErrNotLinux }
func (c *Context) EventRecord(Event, Stream) error                         { return ErrNotLinux }
func (c *Context) StreamWaitEvent(Stream, Event) error                     { return ErrNotLinux }
func (c *Context) EventSynchronize(Event) error                            { return ErrNotLinux }
func (c *Context) EventElapsed(Event, Event) (time.Duration, error)        { return 0, ErrNotLinux }
func (c *Context) DestroyEvent(Event) error                                { return ErrNotLinux }
func (c *Context) LoadModule([]byte) (*Module, error)                      { return nil, ErrNotLinux }
func (m *Module) Function(string) (Function, error)                        { return Function{}, ErrNotLinux }
func (m *Module) Unload() error                                            { return nil }
func (c *Context) Launch(Function, [3]uint32, [3]uint32, uint32, Stream, ...unsafe.Pointer) error {
	return ErrNotLinux
}
func (c *Context) FuncSetMaxDynamicShared(Function, int) error { return ErrNotLinux }
func (c *Context) GemmEx(bool, bool, int, int, int, float32, DevicePtr, DataType, int,
	DevicePtr, DataType, int, float32, DevicePtr, DataType, int, ComputeType) error {
	return ErrNotLinux
}
