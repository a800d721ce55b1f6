// Package sockopt holds what the socket dumpers share to carry
// socket-level (SOL_SOCKET) options exactly: the integer options that
// getsockopt reads back as they were set, the receive/send timeouts and
// the classic BPF socket filter. core/inetsk and core/unixsk keep them in
// their own image messages; the reading, the checks and the setting live
// here once.
package sockopt

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Int is an integer SOL_SOCKET option.
type Int struct {
	Name string
	Opt  int
}

// Option numbers of <asm-generic/socket.h> that x/sys/unix does not
// carry: the 64-bit time variants of SO_TIMESTAMP and SO_TIMESTAMPNS (set
// by programs built with 64-bit time_t on 32-bit ABIs, or by hand). Each
// reads 1 only while its variant is the one in effect, so at most one of
// the pair is recorded away from 0.
const (
	SoTimestampNew   = 63
	SoTimestampNSNew = 64
)

// Generic are the integer SOL_SOCKET options any socket family reads back
// exactly as set, in the order they are set again. SO_RCVLOWAT comes
// first among them but after the buffer sizes (the callers set those
// before: on TCP it may grow the receive buffer); the timestamp variants
// go plain first, then nanoseconds, then the 64-bit variants, so that
// setting one does not clear another recorded one. The family-specific
// ones (SO_OOBINLINE, SO_NO_CHECK), the ones with image fields of their
// own and SO_BUF_LOCK (set last, after the buffers) are the callers'.
var Generic = []Int{
	{"SO_RCVLOWAT", unix.SO_RCVLOWAT},
	{"SO_TIMESTAMP", unix.SO_TIMESTAMP},
	{"SO_TIMESTAMPNS", unix.SO_TIMESTAMPNS},
	{"SO_TIMESTAMP_NEW", SoTimestampNew},
	{"SO_TIMESTAMPNS_NEW", SoTimestampNSNew},
	{"SO_TIMESTAMPING", unix.SO_TIMESTAMPING},
	{"SO_DONTROUTE", unix.SO_DONTROUTE},
	{"SO_BUSY_POLL", unix.SO_BUSY_POLL},
	{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL},
	{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET},
	{"SO_INCOMING_CPU", unix.SO_INCOMING_CPU},
	{"SO_RXQ_OVFL", unix.SO_RXQ_OVFL},
	{"SO_WIFI_STATUS", unix.SO_WIFI_STATUS},
	{"SO_SELECT_ERR_QUEUE", unix.SO_SELECT_ERR_QUEUE},
	{"SO_ZEROCOPY", unix.SO_ZEROCOPY},
	{"SO_TXREHASH", unix.SO_TXREHASH},
	{"SO_RCVMARK", unix.SO_RCVMARK},
	{"SO_PEEK_OFF", unix.SO_PEEK_OFF},
	{"SO_RESERVE_MEM", unix.SO_RESERVE_MEM},
}

// Flags of SO_TIMESTAMPING (<linux/net_tstamp.h>) whose state no
// getsockopt shows: OPT_ID's counter, BIND_PHC's clock index.
const (
	tsOptID   = 1 << 7
	tsBindPHC = 1 << 15
)

// TimestampingRefusal names what an SO_TIMESTAMPING value v holds that
// cannot be carried ("" when nothing).
func TimestampingRefusal(v int) string {
	switch {
	case v&tsOptID != 0:
		return "SO_TIMESTAMPING with SOF_TIMESTAMPING_OPT_ID (its counter is not kept)"
	case v&tsBindPHC != 0:
		return "SO_TIMESTAMPING with SOF_TIMESTAMPING_BIND_PHC"
	}
	return ""
}

// TimeoutUs reads SO_RCVTIMEO or SO_SNDTIMEO (opt) of fd in microseconds
// (the kernel keeps jiffies: the value reads back rounded to them, and
// setting that value again gives the same jiffies).
func TimeoutUs(fd, opt int) (int64, error) {
	tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, opt)
	if err != nil {
		return 0, err
	}
	return tv.Sec*1e6 + tv.Usec, nil
}

// SetTimeoutUs sets SO_RCVTIMEO or SO_SNDTIMEO (opt) of fd to us
// microseconds (0: none).
func SetTimeoutUs(fd, opt int, us int64) error {
	if us < 0 {
		return fmt.Errorf("negative timeout %dus", us)
	}
	tv := unix.NsecToTimeval(us * 1000)
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv)
}

const sizeofFilt = 8 // struct sock_filter

// GetFilter returns the classic BPF filter attached to fd (nil: none) as
// struct sock_filter bytes. An eBPF program (SO_ATTACH_BPF) has no
// classic form: EACCES.
func GetFilter(fd int) ([]byte, error) {
	var one [sizeofFilt]byte
	n := uint32(0) // SO_GET_FILTER counts in instructions, not bytes
	if err := getsockopt(fd, unix.SO_GET_FILTER, unsafe.Pointer(&one[0]), &n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, int(n)*sizeofFilt)
	if err := getsockopt(fd, unix.SO_GET_FILTER, unsafe.Pointer(&buf[0]), &n); err != nil {
		return nil, err
	}
	return buf[:int(n)*sizeofFilt], nil
}

// SetFilter attaches the classic BPF filter prog (GetFilter's bytes) to
// fd, and locks it when locked. Set it after anything that must not be
// filtered (a queue refilled into fd) and last of the options: a locked
// filter is final.
func SetFilter(fd int, prog []byte, locked bool) error {
	if len(prog) > 0 {
		if len(prog)%sizeofFilt != 0 || len(prog)/sizeofFilt > unix.BPF_MAXINSNS {
			return fmt.Errorf("socket filter of %d bytes", len(prog))
		}
		ins := make([]unix.SockFilter, len(prog)/sizeofFilt)
		for i := range ins {
			b := prog[i*sizeofFilt:]
			ins[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
		}
		prog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return fmt.Errorf("SO_ATTACH_FILTER (%d instructions): %w", len(ins), err)
		}
	}
	if locked {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 1); err != nil {
			return fmt.Errorf("SO_LOCK_FILTER: %w", err)
		}
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, l *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(l)), 0)
	if e != 0 {
		return e
	}
	return nil
}
