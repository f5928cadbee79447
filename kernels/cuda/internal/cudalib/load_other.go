//go:build !linux

package cudalib

// Libs holds the loaded libraries; on this system none can be loaded.
type Libs struct{ Paths Paths }

// Device describes one CUDA device.
type Device struct {
	Ordinal      int
	Major, Minor int
}

// Load fails: the loader is implemented for Linux only.
func Load(Paths) (*Libs, error) { return nil, ErrNotLinux }

// Devices fails: the loader is implemented for Linux only.
func (l *Libs) Devices() (int, []Device, error) { return 0, nil, ErrNotLinux }
