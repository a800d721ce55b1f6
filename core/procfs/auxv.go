package procfs

import (
	"encoding/binary"
	"fmt"
	"os"
)

// AuxvEntry is one (a_type, a_val) pair of the ELF auxiliary vector.
type AuxvEntry struct {
	Type  uint64 // AT_* (AT_NULL = 0 terminates the vector)
	Value uint64
}

// ReadAuxv returns the raw bytes of /proc/<pid>/auxv: native-endian
// 64-bit (type, value) pairs up to and including the AT_NULL pair. The file
// is empty for kernel threads; reading a zombie's auxv fails with ESRCH.
func ReadAuxv(pid int) ([]byte, error) {
	path := PidPath(pid, "auxv")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	return b, nil
}

// DecodeAuxv decodes raw auxv bytes into pairs, stopping at (and not
// including) the AT_NULL pair; bytes after it are ignored. Empty input
// yields no entries and no error. Input that is not a whole number of
// 16-byte pairs before AT_NULL, or lacks AT_NULL, is an error wrapping
// ErrMalformed.
func DecodeAuxv(b []byte) ([]AuxvEntry, error) {
	var out []AuxvEntry
	if len(b) == 0 {
		return nil, nil
	}
	for off := 0; ; off += 16 {
		if len(b)-off < 16 {
			return nil, malformed("auxv", 0, "no AT_NULL terminator in %d bytes", len(b))
		}
		e := AuxvEntry{
			Type:  binary.NativeEndian.Uint64(b[off:]),
			Value: binary.NativeEndian.Uint64(b[off+8:]),
		}
		if e.Type == 0 {
			return out, nil
		}
		out = append(out, e)
	}
}
