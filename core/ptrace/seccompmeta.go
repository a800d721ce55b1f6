package ptrace

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const reqSeccompGetMetadata = 0x420d // PTRACE_SECCOMP_GET_METADATA

// SeccompFilterFlagLog is SECCOMP_FILTER_FLAG_LOG, the one install flag
// the kernel keeps with a filter and reports back.
const SeccompFilterFlagLog = 2

// SeccompFilterFlags returns the install flags the kernel reports for
// filter i of thread tid (0 = the first installed, as SeccompFilters numbers them).
func SeccompFilterFlags(tid, i int) (uint64, error) {
	md := [2]uint64{uint64(i), 0} // struct seccomp_metadata {filter_off, flags}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, reqSeccompGetMetadata, uintptr(tid), unsafe.Sizeof(md), uintptr(unsafe.Pointer(&md)), 0, 0); e != 0 {
		return 0, fmt.Errorf("seccomp get metadata %d tid %d: %w", i, tid, e)
	}
	return md[1], nil
}
