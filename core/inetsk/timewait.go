package inetsk

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// clearTimeWait destroys (SOCK_DESTROY) the TCP connections in TIME_WAIT
// whose local port is port, of both families, and returns how many there
// were. They are what is left of connections of a dumped listener
// without SO_REUSEADDR: they keep its port from being bound again, even
// with SO_REUSEADDR, until they expire (their own sk_reuse is the
// listener's). Needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY.
//
// Nothing is destroyed when a live socket uses the port too: then the
// bind fails anyway.
func clearTimeWait(port uint16) (int, error) {
	var tw [][2]any
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		es, err := readDiag(family, unix.IPPROTO_TCP, 0xffffffff)
		if err != nil {
			return 0, err
		}
		for _, e := range es {
			if e.SrcPort != port {
				continue
			}
			if e.State != TCPTimeWait {
				return 0, fmt.Errorf("port %d is in use by a live %s socket (%s)", port, familyName(family), StateName(e.State))
			}
			tw = append(tw, [2]any{family, e})
		}
	}
	for i, t := range tw {
		if err := destroy(t[0].(int), t[1].(DiagEntry)); err != nil {
			return i, fmt.Errorf("SOCK_DESTROY of a TIME_WAIT connection from port %d: %w", port, err)
		}
	}
	return len(tw), nil
}

// destroy sends SOCK_DESTROY for the socket e of family and waits for the
// acknowledgement.
func destroy(family int, e DiagEntry) error {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ne := binary.NativeEndian
	req := make([]byte, unix.SizeofNlMsghdr+sizeofInetDiagReqV2)
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DESTROY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(req[8:], 1)
	r := req[unix.SizeofNlMsghdr:]
	r[0], r[1] = byte(family), unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 0xffffffff)
	copy(r[8:], e.id[:])
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n < unix.SizeofNlMsghdr+4 || ne.Uint16(buf[4:]) != unix.NLMSG_ERROR {
			continue
		}
		if e := int32(ne.Uint32(buf[unix.SizeofNlMsghdr:])); e != 0 {
			return unix.Errno(-e)
		}
		return nil
	}
}
