package inetsk

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// diagAddrs are the addresses to record for a closed or connecting TCP
// socket: getsockname shows a stale port once a failed connection gave
// its port back, and getpeername answers ENOTCONN while connecting.
type diagAddrs struct {
	src, dst         []byte
	srcPort, dstPort uint32
	bound            bool
}

func (a *diagAddrs) set(s *imagepb.InetSocket) {
	s.SrcAddr, s.SrcPort, s.Bound = a.src, a.srcPort, a.bound
	s.DstAddr, s.DstPort = a.dst, a.dstPort
}

func diagAddr(family int32, b [16]byte) []byte {
	if family == unix.AF_INET {
		return append([]byte(nil), b[:4]...)
	}
	return append([]byte(nil), b[:]...)
}

// closedTCP handles a closed TCP socket. One that was used (sent or
// received segments, or was shut down) is kept when nothing tells it from
// a fresh socket bound the same way: its failed connection was reported by
// connect(2) (which resets it), or it was disconnected with
// connect(AF_UNSPEC). Refused: a pending error (SO_ERROR or the error
// queue: reading it would clear it), a connection that ended otherwise
// (reset, finished, or a non-blocking connect that failed and was not
// retried: shut down both ways, with a socket state connect(2) tells
// apart but no dump can read), and unread data.
//
// getsockname keeps showing the port a failed connection gave back: with
// listsBound, the port is taken as bound only when sock_diag lists the
// socket (bound explicitly: the port stays); an address bound explicitly
// survives the failure, so getsockname's address is the bound one.
// Without listsBound (older kernels) a used socket is refused.
//
// An unused socket not in sock_diag that poll shows shut down for reading
// is recorded shut down both ways (see the comment in the code).
//
// With closeConn (--tcp-close, which CRIU documents as covering "the
// connection once established but now closed" too), a connection that
// ended (reset and its error read, or finished) is recorded as restore
// --tcp-close gives every connection back: shut down both ways, its
// unread data dropped.
func closedTCP(fd int, s *imagepb.InetSocket, e DiagEntry, found, listsBound, used, closeConn bool) (*unix.TCPInfo, *diagAddrs, error) {
	ino := s.Ino
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	if _, err := unix.Poll(p, 0); err != nil {
		return nil, nil, fmt.Errorf("inet socket:[%d]: poll: %w", ino, err)
	}
	if p[0].Revents&unix.POLLERR != 0 {
		return nil, nil, unsupported(ino, "closed TCP socket with a pending error (SO_ERROR or error queue)")
	}
	if !used && !found && p[0].Revents&unix.POLLRDHUP != 0 {
		// shut down while unconnected (as restore --tcp-close leaves a
		// connection): sock_diag does not list the socket, poll shows
		// the read half; the send half cannot be read in state CLOSE,
		// where writes fail with EPIPE either way, and is taken as shut
		// down too (see inetsk.CloseConnection)
		s.Shutdown = 3
	}
	if used && closeConn && (p[0].Revents&unix.POLLRDHUP != 0 || (found && e.Shutdown != 0)) {
		s.Shutdown = 3
		if found { // its port bound explicitly, still held
			return nil, &diagAddrs{src: diagAddr(s.Family, e.Src), srcPort: uint32(e.SrcPort), bound: true}, nil
		}
		return nil, &diagAddrs{src: diagAddr(s.Family, [16]byte{})}, nil // unbound, as CloseConnection
	}
	if used {
		if p[0].Revents&unix.POLLRDHUP != 0 || (found && e.Shutdown != 0) {
			return nil, nil, unsupported(ino, "closed TCP connection (reset, finished, or a failed non-blocking connect not retried)")
		}
		if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err != nil || n > 0 {
			return nil, nil, unsupported(ino, "closed TCP connection with %d bytes unread", n)
		}
		if !listsBound {
			return nil, nil, unsupported(ino, "closed TCP connection (this kernel's sock_diag does not tell its bound port)")
		}
	}
	if !listsBound {
		return nil, nil, nil // getsockname's addresses
	}
	a := &diagAddrs{}
	if found {
		a.src, a.srcPort, a.bound = diagAddr(s.Family, e.Src), uint32(e.SrcPort), true
		return nil, a, nil
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("inet socket:[%d]: getsockname: %w", ino, err)
	}
	a.src, _, _ = fromSockaddr(sa)
	a.bound = !allZero(a.src) // bound to an address only (port 0)
	return nil, a, nil
}

// synSent handles a TCP socket whose connect is in progress: it is
// restored by connecting again, non-blocking, from the same port. Data
// queued with the SYN (TCP Fast Open) is refused.
//
// Bound reports a port bound explicitly, outside the ephemeral range
// (the socket's IP_LOCAL_PORT_RANGE, else the namespace's): Create binds
// it. A port in the range is taken again by connect's own choice
// (autobind, with the range narrowed to it), so that, as before, the
// port is given back if the connection fails.
func synSent(fd int, s *imagepb.InetSocket, e DiagEntry, found bool) (*unix.TCPInfo, *diagAddrs, error) {
	if !found {
		return nil, nil, fmt.Errorf("inet socket:[%d]: connecting socket not in the sock_diag snapshot (other network namespace?)", s.Ino)
	}
	if e.WQueue > 1 { // the SYN counts for one
		return nil, nil, unsupported(s.Ino, "connecting TCP socket with %d bytes queued with its SYN (TCP Fast Open)", e.WQueue-1)
	}
	lo, hi, err := ephemeralRange(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("inet socket:[%d]: %w", s.Ino, err)
	}
	a := &diagAddrs{
		src: diagAddr(s.Family, e.Src), srcPort: uint32(e.SrcPort),
		dst: diagAddr(s.Family, e.Dst), dstPort: uint32(e.DstPort),
	}
	a.bound = int(e.SrcPort) < lo || int(e.SrcPort) > hi
	return nil, a, nil
}

// ephemeralRange returns the ports connect(2) may choose for fd.
func ephemeralRange(fd int) (lo, hi int, err error) {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE); err == nil && v != 0 {
		lo, hi = v&0xffff, int(uint32(v)>>16)
		if lo != 0 && hi != 0 {
			return lo, hi, nil
		}
	}
	b, err := readFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(b)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ip_local_port_range %q", b)
	}
	if lo, err = strconv.Atoi(f[0]); err == nil {
		hi, err = strconv.Atoi(f[1])
	}
	return lo, hi, err
}

// connectAgain puts the fresh socket fd back to connecting to the peer of
// s (state SYN_SENT), from its port: see synSent.
func connectAgain(fd int, s *imagepb.InetSocket) error {
	if s.Bound {
		if err := bind(fd, s); err != nil {
			return err
		}
	} else {
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE, int(s.SrcPort|s.SrcPort<<16)); err != nil {
			return fmt.Errorf("setsockopt IP_LOCAL_PORT_RANGE %d-%d: %w", s.SrcPort, s.SrcPort, err)
		}
	}
	da, err := toSockaddr(s.Family, s.DstAddr, s.DstPort, s.DstScope)
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	if err := unix.Connect(fd, da); err != nil && err != unix.EINPROGRESS {
		return fmt.Errorf("connect (in progress at dump): %w", err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return err
	}
	if !s.Bound {
		// the option's own value back
		v := int32(0)
		for _, o := range s.Opts {
			if o.Level == unix.SOL_IP && o.Name == unix.IP_LOCAL_PORT_RANGE {
				v = o.Value
			}
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE, int(v)); err != nil {
			return fmt.Errorf("setsockopt IP_LOCAL_PORT_RANGE back to %#x: %w", v, err)
		}
	}
	return nil
}
