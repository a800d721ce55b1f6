package unixsk

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// genericOpts are socket-level integer options a unix socket accepts but
// the image does not carry: a socket where one reads otherwise than on a
// fresh socket of its type is refused, naming it.
var genericOpts = []struct {
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
}

// checkGenericOptions refuses a unix socket fd with an option the image
// does not carry set away from what a fresh socket of type typ reads:
// the integer options above, SO_RCVTIMEO/SO_SNDTIMEO, SO_LINGER,
// SO_BINDTODEVICE, SO_TXTIME, SO_MAX_PACING_RATE and a socket filter
// (SO_ATTACH_FILTER / SO_ATTACH_BPF).
func checkGenericOptions(fd, typ int, s *imagepb.UnixSocket) error {
	ref, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: reference socket: %w", s.Ino, err)
	}
	defer unix.Close(ref)
	for _, o := range genericOpts {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.opt)
		if err != nil {
			continue // not in this kernel
		}
		if def, err := unix.GetsockoptInt(ref, unix.SOL_SOCKET, o.opt); err == nil && v != def {
			return unsupported(s.Ino, "%s=%d is not kept by the image", o.name, v)
		}
	}
	for _, o := range []struct {
		name string
		opt  int
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO}} {
		if tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, o.opt); err == nil && (tv.Sec != 0 || tv.Usec != 0) {
			return unsupported(s.Ino, "%s=%d.%06ds is not kept by the image", o.name, tv.Sec, tv.Usec)
		}
	}
	if l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && l.Onoff != 0 {
		return unsupported(s.Ino, "SO_LINGER=%ds is not kept by the image", l.Linger)
	}
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil && dev != "" {
		return unsupported(s.Ino, "SO_BINDTODEVICE %q is not kept by the image", dev)
	}
	var tt [2]uint32
	l := uint32(unsafe.Sizeof(tt))
	if rawGetsockopt(fd, unix.SO_TXTIME, unsafe.Pointer(&tt), &l) == nil && (tt[0] != 0 || tt[1] != 0) {
		return unsupported(s.Ino, "SO_TXTIME is not kept by the image")
	}
	var rate uint64
	l = uint32(unsafe.Sizeof(rate))
	if rawGetsockopt(fd, unix.SO_MAX_PACING_RATE, unsafe.Pointer(&rate), &l) == nil && l == 8 && rate != ^uint64(0) {
		return unsupported(s.Ino, "SO_MAX_PACING_RATE=%d is not kept by the image", rate)
	}
	var insn [8]byte
	n := uint32(0) // counted in instructions
	switch err := rawGetsockopt(fd, unix.SO_GET_FILTER, unsafe.Pointer(&insn[0]), &n); {
	case err == unix.EACCES:
		return unsupported(s.Ino, "eBPF socket filter (SO_ATTACH_BPF) is not kept by the image")
	case err == nil && n > 0:
		return unsupported(s.Ino, "socket filter (SO_ATTACH_FILTER, %d instructions) is not kept by the image", n)
	}
	return nil
}

func rawGetsockopt(fd, opt int, p unsafe.Pointer, l *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(l)), 0)
	if e != 0 {
		return e
	}
	return nil
}
