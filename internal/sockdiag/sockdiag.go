// Package sockdiag runs NETLINK_SOCK_DIAG dumps: it sends one
// SOCK_DIAG_BY_FAMILY request and hands each reply message to the caller.
// The family-specific request and reply layouts stay with their users
// (core/unixsk, core/inetsk).
package sockdiag

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

const seq = 1

// Dump sends a SOCK_DIAG_BY_FAMILY dump request whose body (after the
// netlink header) is req, in the calling thread's network namespace, and
// calls each with the payload of every reply message until the dump ends.
// what names the caller in errors ("unix diag").
func Dump(what string, req []byte, each func(msg []byte) error) error {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("%s: socket: %w", what, err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%s: bind: %w", what, err)
	}
	ne := binary.NativeEndian
	msg := make([]byte, unix.SizeofNlMsghdr+len(req))
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(msg[8:], seq)
	copy(msg[unix.SizeofNlMsghdr:], req)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%s: send request: %w", what, err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, flags, _, err := unix.Recvmsg(s, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: receive: %w", what, err)
		}
		if flags&unix.MSG_TRUNC != 0 {
			return fmt.Errorf("%s: reply truncated", what)
		}
		for b := buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(ne.Uint32(b[0:]))
			typ, mseq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return fmt.Errorf("%s: bad netlink message length %d", what, l)
			}
			data := b[unix.SizeofNlMsghdr:l]
			if al := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1); al < len(b) {
				b = b[al:]
			} else {
				b = nil
			}
			if mseq != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(data) >= 4 {
					if e := int32(ne.Uint32(data)); e != 0 {
						return fmt.Errorf("%s: %w", what, unix.Errno(-e))
					}
				}
				return fmt.Errorf("%s: error reply", what)
			case unix.SOCK_DIAG_BY_FAMILY:
				if err := each(data); err != nil {
					return fmt.Errorf("%s: %w", what, err)
				}
			}
		}
	}
}
