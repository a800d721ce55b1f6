// Package capnames maps Linux capability names, as OCI configs spell them
// ("CAP_SYS_ADMIN"), to their numbers and back.
package capnames

import "fmt"

// Names lists the capabilities by number (CAP_CHOWN is 0), up to
// CAP_CHECKPOINT_RESTORE (40), the last one this kernel generation knows.
var Names = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// Mask returns the bit mask of the named capabilities. An unknown name is
// an error: a config asking for a capability this list does not know must
// not silently get less, or more, than it says.
func Mask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		i := index(n)
		if i < 0 {
			return 0, fmt.Errorf("unknown capability %q", n)
		}
		m |= 1 << i
	}
	return m, nil
}

// FromMask names the capabilities set in m (bits past the list are left
// out).
func FromMask(m uint64) []string {
	var out []string
	for i, n := range Names {
		if m&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

func index(name string) int {
	for i, n := range Names {
		if n == name {
			return i
		}
	}
	return -1
}
