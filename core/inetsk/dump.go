package inetsk

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// UnsupportedError reports an inet socket the engine cannot dump or
// rebuild yet; Reason says what it is ("established TCP connection ...").
type UnsupportedError struct {
	Ino    uint64
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("inet socket:[%d]: unsupported: %s", e.Ino, e.Reason)
}

func unsupported(ino uint64, format string, a ...any) error {
	return &UnsupportedError{Ino: ino, Reason: fmt.Sprintf(format, a...)}
}

// Dump describes the inet socket fd (our copy of the target's socket,
// inode ino) from getsockopt/getsockname and the diag snapshot d (nil: a
// fresh one). It only reads. The target must not run during Dump.
//
// With conn set, a TCP connection (established or half-closed) is dumped
// in repair mode (see dumpTCP: the socket is left in repair mode, and the
// caller must have locked the network for it first); without it, such a
// socket is refused.
//
// Refusals are *UnsupportedError: raw sockets and protocols other than
// TCP and UDP, connections without conn ("needs --tcp-established"),
// connecting TCP sockets, a closed TCP socket that was once connected,
// listeners with connections waiting to be accepted, and UDP sockets with
// datagrams queued for reading.
func Dump(fd int, ino uint64, d *Diag, conn bool) (*imagepb.InetSocket, error) {
	return DumpWith(fd, ino, d, DumpOptions{Conn: conn})
}

// DumpOptions say which TCP sockets Dump may take that it otherwise
// refuses (CRIU's --tcp-established, --skip-in-flight, --tcp-close).
type DumpOptions struct {
	// Conn: the socket is a TCP connection the network lock covers; it
	// is dumped in repair mode (see Dump).
	Conn bool
	// SkipInFlight: a listener with connections waiting to be accepted
	// is dumped without them (--skip-in-flight): the restored listener's
	// accept queue is empty, and those connections end when the dumped
	// tree is killed (their peers see a reset).
	SkipInFlight bool
	// CloseConn: a TCP connection (established or half-closed) is
	// recorded without its state, neither locked nor put in repair mode
	// (--tcp-close): restore gives a closed socket in its place (see
	// CloseConnection). Takes precedence over Conn.
	CloseConn bool
}

// DumpWith is Dump with the options o.
func DumpWith(fd int, ino uint64, d *Diag, o DumpOptions) (*imagepb.InetSocket, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("inet socket:[%d]: fstat: %w", ino, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != ino {
		return nil, fmt.Errorf("inet socket:[%d]: fd %d is not that socket (mode %#o, inode %d)", ino, fd, st.Mode, st.Ino)
	}
	get := func(name string, level, opt int) (int, error) {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return 0, fmt.Errorf("inet socket:[%d]: getsockopt %s: %w", ino, name, err)
		}
		return v, nil
	}
	family, err := get("SO_DOMAIN", unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, err
	}
	typ, err := get("SO_TYPE", unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, err
	}
	proto, err := get("SO_PROTOCOL", unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, err
	}
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, fmt.Errorf("inet socket:[%d]: family %d is not AF_INET/AF_INET6", ino, family)
	}
	s := &imagepb.InetSocket{Family: int32(family), Type: int32(typ), Protocol: int32(proto), Ino: ino, Uid: st.Uid, Gid: st.Gid}
	if !supportedKind(s) {
		return nil, unsupported(ino, "%s socket of type %d, protocol %d (only TCP, UDP, UDP-lite, raw and ping)", familyName(family), typ, proto)
	}
	if d == nil {
		d = NewDiag()
	}
	// Sockets that are in no hash table (never bound, or unhashed when
	// their connection ended) are not in sock_diag. Raw and ping sockets
	// are read from /proc/net.
	var e DiagEntry
	var found bool
	if isRawOrPing(s) {
		e, found, err = procNetEntry(procTable(family, typ), family, ino)
	} else {
		e, found, err = d.Lookup(family, proto, ino)
	}
	if err != nil {
		return nil, fmt.Errorf("inet socket:[%d]: %w", ino, err)
	}
	listsBound := false
	if proto == unix.IPPROTO_TCP {
		if listsBound, err = d.ListsBound(); err != nil {
			return nil, fmt.Errorf("inet socket:[%d]: %w", ino, err)
		}
	}
	info, fromDiag, err := fillState(fd, s, e, found, o, listsBound)
	if err != nil {
		return nil, err
	}
	if err := addresses(fd, s); err != nil {
		return nil, err
	}
	if fromDiag != nil {
		// a closed or connecting TCP socket: sock_diag's addresses, not the
		// stale or partial ones getsockname shows
		fromDiag.set(s)
	}
	if err := dumpOptions(fd, s); err != nil {
		return nil, err
	}
	if info != nil {
		if err := dumpTCP(fd, s, info); err != nil {
			return nil, fmt.Errorf("%s: %w", Describe(s), err)
		}
	}
	return s, nil
}

func familyName(f int) string {
	if f == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}

// Describe is a one-line summary for messages and ctr-cr show:
// "tcp 127.0.0.1:8080 LISTEN".
func Describe(s *imagepb.InetSocket) string {
	p := kindName(s)
	if s.Family == unix.AF_INET6 {
		p += "6"
	}
	out := fmt.Sprintf("%s %s", p, hostPort(s.SrcAddr, s.SrcPort))
	if s.DstPort != 0 {
		out += " -> " + hostPort(s.DstAddr, s.DstPort)
	}
	st := StateName(int(s.State))
	if s.Protocol != unix.IPPROTO_TCP {
		st = "unconnected"
		if s.State == TCPEstablished {
			st = "connected"
		}
	} else if s.State == TCPClose {
		st = "unconnected"
	}
	if t := s.Tcp; t != nil {
		st += fmt.Sprintf(" sendq %d (unsent %d) recvq %d", len(t.SendQueue), t.Unsent, len(t.RecvQueue))
	}
	return out + " " + st
}

// fillState sets State, Shutdown and Backlog from TCP_INFO and the diag
// entry e (found: the socket is in sock_diag), and refuses the states
// Create cannot rebuild. The socket owner is the socket inode's owner
// (sk_uid follows it). For a TCP connection to dump (conn) it returns the
// TCP_INFO read. For a closed TCP socket that was used, or a connecting
// one, it returns the addresses to record instead of getsockname's.
//
// listsBound tells that sock_diag lists TCP sockets that are only bound
// (Linux 6.7 and later), which tells a bound port from a stale one.
func fillState(fd int, s *imagepb.InetSocket, e DiagEntry, found bool, o DumpOptions, listsBound bool) (*unix.TCPInfo, *diagAddrs, error) {
	ino := s.Ino
	if s.Protocol != unix.IPPROTO_TCP {
		a, err := datagramState(fd, s, e, found)
		return nil, a, err
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, nil, fmt.Errorf("inet socket:[%d]: getsockopt TCP_INFO: %w", ino, err)
	}
	state := int(info.State)
	s.State, s.Shutdown = int32(state), uint32(e.Shutdown)
	switch state {
	case TCPListen:
		if !found {
			return nil, nil, fmt.Errorf("inet socket:[%d]: listening socket not in the sock_diag snapshot (other network namespace?)", ino)
		}
		s.Backlog = e.WQueue
		if e.RQueue > 0 && !o.SkipInFlight {
			return nil, nil, unsupported(ino, "listening socket with %d connections waiting to be accepted (in-flight connections: --skip-in-flight drops them)", e.RQueue)
		}
		return nil, nil, nil
	case TCPClose:
		used := e.Shutdown != 0 || info.Segs_in != 0 || info.Segs_out != 0
		return closedTCP(fd, s, e, found, listsBound, used, o.CloseConn)
	case TCPSynSent:
		return synSent(fd, s, e, found)
	case TCPSynRecv:
		return nil, nil, unsupported(ino, "connecting TCP socket, state %s", StateName(state))
	}
	if !IsConnection(state) {
		return nil, nil, unsupported(ino, "TCP socket in state %s", StateName(state))
	}
	if o.CloseConn {
		// recorded as it is; restore closes it (no repair, no lock)
		return nil, nil, nil
	}
	if !o.Conn {
		if state == TCPEstablished {
			return nil, nil, unsupported(ino, "established TCP connection (needs --tcp-established, or --tcp-close to restore it closed)")
		}
		return nil, nil, unsupported(ino, "closing TCP connection, state %s (needs --tcp-established, or --tcp-close to restore it closed)", StateName(state))
	}
	if !found {
		return nil, nil, fmt.Errorf("inet socket:[%d]: connection not in the sock_diag snapshot (other network namespace?)", ino)
	}
	return info, nil, nil
}

// addresses records the bound and the connected address.
func addresses(fd int, s *imagepb.InetSocket) error {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("inet socket:[%d]: getsockname: %w", s.Ino, err)
	}
	s.SrcAddr, s.SrcPort, s.SrcScope = fromSockaddr(sa)
	s.Bound = s.SrcPort != 0 || !allZero(s.SrcAddr)
	udp := isUDP(s.Protocol) && s.Type == unix.SOCK_DGRAM
	if (udp && s.State == TCPEstablished) || (s.Protocol == unix.IPPROTO_TCP && IsConnection(int(s.State))) { // connected UDP, TCP connection
		pa, err := unix.Getpeername(fd)
		if err != nil {
			return fmt.Errorf("inet socket:[%d]: getpeername: %w", s.Ino, err)
		}
		s.DstAddr, s.DstPort, s.DstScope = fromSockaddr(pa)
	}
	return nil
}

func fromSockaddr(sa unix.Sockaddr) ([]byte, uint32, uint32) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return append([]byte(nil), a.Addr[:]...), uint32(a.Port), 0
	case *unix.SockaddrInet6:
		return append([]byte(nil), a.Addr[:]...), uint32(a.Port), a.ZoneId
	}
	return nil, 0, 0
}

func toSockaddr(family int32, addr []byte, port, scope uint32) (unix.Sockaddr, error) {
	if family == unix.AF_INET {
		a := &unix.SockaddrInet4{Port: int(port)}
		if len(addr) != 4 {
			return nil, fmt.Errorf("IPv4 address of %d bytes", len(addr))
		}
		copy(a.Addr[:], addr)
		return a, nil
	}
	a := &unix.SockaddrInet6{Port: int(port), ZoneId: scope}
	if len(addr) != 16 {
		return nil, fmt.Errorf("IPv6 address of %d bytes", len(addr))
	}
	copy(a.Addr[:], addr)
	return a, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func hostPort(addr []byte, port uint32) string {
	a, ok := netip.AddrFromSlice(addr)
	if !ok {
		return fmt.Sprintf("?:%d", port)
	}
	return netip.AddrPortFrom(a, uint16(port)).String()
}
