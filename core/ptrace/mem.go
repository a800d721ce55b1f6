package ptrace

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Mem is an open /proc/PID/mem. Its accesses use FOLL_FORCE: writes reach
// read-only and PROT_NONE pages of a tracee, which restore relies on.
type Mem struct {
	pid int
	f   *os.File
}

// OpenMem opens /proc/PID/mem read-write.
func OpenMem(pid int) (*Mem, error) {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open mem of pid %d: %w", pid, err)
	}
	return &Mem{pid: pid, f: f}, nil
}

// Close releases the file.
func (m *Mem) Close() error { return m.f.Close() }

// WriteAt writes b at addr in the tracee.
func (m *Mem) WriteAt(b []byte, addr uint64) error {
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(int(m.f.Fd()), b[off:], int64(addr)+int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write pid %d memory at %#x (%d bytes): %w", m.pid, addr+uint64(off), len(b)-off, err)
		}
		if n == 0 {
			return fmt.Errorf("write pid %d memory at %#x: short write", m.pid, addr+uint64(off))
		}
		off += n
	}
	return nil
}

// ReadAt fills b from addr in the tracee.
func (m *Mem) ReadAt(b []byte, addr uint64) error {
	for off := 0; off < len(b); {
		n, err := unix.Pread(int(m.f.Fd()), b[off:], int64(addr)+int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read pid %d memory at %#x (%d bytes): %w", m.pid, addr+uint64(off), len(b)-off, err)
		}
		if n == 0 {
			return fmt.Errorf("read pid %d memory at %#x: short read", m.pid, addr+uint64(off))
		}
		off += n
	}
	return nil
}
