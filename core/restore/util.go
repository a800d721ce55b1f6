package restore

import (
	"fmt"
	"os"
	"unsafe"
)

func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

func readMapsText(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	return string(b), err
}

// memAt adapts /proc/PID/mem access to io.WriterAt.
type memAt struct {
	m interface{ WriteAt([]byte, uint64) error }
}

func (w memAt) WriteAt(b []byte, off int64) (int, error) {
	if err := w.m.WriteAt(b, uint64(off)); err != nil {
		return 0, err
	}
	return len(b), nil
}
