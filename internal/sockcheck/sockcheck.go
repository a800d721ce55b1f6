// Package sockcheck finds socket-level (SOL_SOCKET) options of a socket
// that read otherwise than on a fresh socket of its kind: the dumpers of
// socket kinds whose image does not carry them refuse such a socket,
// naming the option, instead of restoring it without it.
package sockcheck

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/sockopt"
)

// intOpts are the integer SOL_SOCKET options compared.
var intOpts = []struct {
	name string
	opt  int
}{
	{"SO_RCVLOWAT", unix.SO_RCVLOWAT}, {"SO_PRIORITY", unix.SO_PRIORITY}, {"SO_MARK", unix.SO_MARK},
	{"SO_KEEPALIVE", unix.SO_KEEPALIVE}, {"SO_BROADCAST", unix.SO_BROADCAST}, {"SO_DONTROUTE", unix.SO_DONTROUTE},
	{"SO_OOBINLINE", unix.SO_OOBINLINE}, {"SO_REUSEADDR", unix.SO_REUSEADDR}, {"SO_REUSEPORT", unix.SO_REUSEPORT},
	{"SO_TIMESTAMP", unix.SO_TIMESTAMP}, {"SO_TIMESTAMPNS", unix.SO_TIMESTAMPNS}, {"SO_TIMESTAMPING", unix.SO_TIMESTAMPING},
	{"SO_BUSY_POLL", unix.SO_BUSY_POLL}, {"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL},
	{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET}, {"SO_INCOMING_CPU", unix.SO_INCOMING_CPU},
	{"SO_RXQ_OVFL", unix.SO_RXQ_OVFL}, {"SO_WIFI_STATUS", unix.SO_WIFI_STATUS},
	{"SO_SELECT_ERR_QUEUE", unix.SO_SELECT_ERR_QUEUE}, {"SO_TXREHASH", unix.SO_TXREHASH},
	{"SO_RCVMARK", unix.SO_RCVMARK}, {"SO_RESERVE_MEM", unix.SO_RESERVE_MEM}, {"SO_LOCK_FILTER", unix.SO_LOCK_FILTER},
	{"SO_PASSCRED", unix.SO_PASSCRED}, {"SO_PASSSEC", unix.SO_PASSSEC}, {"SO_PEEK_OFF", unix.SO_PEEK_OFF},
	{"SO_ZEROCOPY", unix.SO_ZEROCOPY},
	{"SO_TIMESTAMP_NEW", sockopt.SoTimestampNew}, {"SO_TIMESTAMPNS_NEW", sockopt.SoTimestampNSNew},
}

// NonDefault returns a description ("SO_RCVTIMEO=3.000000s") of the first
// option of fd that reads otherwise than on ref, a fresh socket of the
// same kind, or "" when there is none. Options named in skip (the caller
// carries them) are not compared. Beyond the integer options it compares
// SO_RCVTIMEO/SO_SNDTIMEO, SO_LINGER, SO_BINDTODEVICE, SO_TXTIME,
// SO_MAX_PACING_RATE and the socket filter (SO_ATTACH_FILTER or an eBPF
// SO_ATTACH_BPF, named "SO_ATTACH_FILTER"/"SO_ATTACH_BPF").
func NonDefault(fd, ref int, skip map[string]bool) string {
	for _, o := range intOpts {
		if skip[o.name] {
			continue
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.opt)
		if err != nil {
			continue // not in this kernel, or not for this kind
		}
		if def, err := unix.GetsockoptInt(ref, unix.SOL_SOCKET, o.opt); err == nil && v != def {
			return fmt.Sprintf("%s=%d", o.name, v)
		}
	}
	for _, o := range []struct {
		name string
		opt  int
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO}} {
		if skip[o.name] {
			continue
		}
		if tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, o.opt); err == nil && (tv.Sec != 0 || tv.Usec != 0) {
			return fmt.Sprintf("%s=%d.%06ds", o.name, tv.Sec, tv.Usec)
		}
	}
	if l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && l.Onoff != 0 && !skip["SO_LINGER"] {
		return fmt.Sprintf("SO_LINGER=%ds", l.Linger)
	}
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil && dev != "" && !skip["SO_BINDTODEVICE"] {
		return fmt.Sprintf("SO_BINDTODEVICE %q", dev)
	}
	var tt [2]uint32
	l := uint32(unsafe.Sizeof(tt))
	if get(fd, unix.SO_TXTIME, unsafe.Pointer(&tt), &l) == nil && (tt[0] != 0 || tt[1] != 0) {
		return "SO_TXTIME"
	}
	var rate uint64
	l = uint32(unsafe.Sizeof(rate))
	if get(fd, unix.SO_MAX_PACING_RATE, unsafe.Pointer(&rate), &l) == nil && l == 8 && rate != ^uint64(0) {
		return fmt.Sprintf("SO_MAX_PACING_RATE=%d", rate)
	}
	var insn [8]byte
	n := uint32(0) // counted in instructions
	switch err := get(fd, unix.SO_GET_FILTER, unsafe.Pointer(&insn[0]), &n); {
	case err == unix.EACCES:
		return "SO_ATTACH_BPF (eBPF socket filter)"
	case err == nil && n > 0 && !skip["SO_ATTACH_FILTER"]:
		return fmt.Sprintf("SO_ATTACH_FILTER (%d instructions)", n)
	}
	return ""
}

func get(fd, opt int, p unsafe.Pointer, l *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// SetBuf makes fd's buffer size (SO_SNDBUF or SO_RCVBUF, opt; force the
// FORCE variant) read back want (getsockopt's doubled value; 0: keep),
// with the FORCE variant when the plain one is capped by net.core.*mem_max.
func SetBuf(fd int, name string, opt, force int, want uint32) error {
	cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	if err != nil {
		return fmt.Errorf("getsockopt %s: %w", name, err)
	}
	if want == 0 || uint32(cur) == want {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, int(want/2)); err != nil {
		return fmt.Errorf("setsockopt %s %d: %w", name, want/2, err)
	}
	if cur, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt); err == nil && uint32(cur) == want {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, int(want/2)); err != nil {
		return fmt.Errorf("setsockopt %sFORCE %d: %w", name, want/2, err)
	}
	return nil
}
