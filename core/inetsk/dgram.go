package inetsk

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Options of <linux/udp.h>, <linux/icmpv6.h>, <linux/in6.h> that x/sys/unix
// does not carry.
const (
	solUDPLite        = 136 // SOL_UDPLITE
	udpliteSendCscov  = 10
	udpliteRecvCscov  = 11
	solICMPv6         = 58 // SOL_ICMPV6
	icmpv6Filter      = 1  // ICMPV6_FILTER
	sizeofICMP6Filter = 32
	solRaw            = 255 // SOL_RAW
	icmpFilter        = 1   // ICMP_FILTER
	ipv6HdrIncl       = 36  // IPV6_HDRINCL
)

// isUDP reports UDP and UDP-lite (which share their code and options).
func isUDP(proto int32) bool {
	return proto == unix.IPPROTO_UDP || proto == unix.IPPROTO_UDPLITE
}

// isPing reports an ICMP "ping" socket (SOCK_DGRAM, IPPROTO_ICMP or
// IPPROTO_ICMPV6).
func isPing(s *imagepb.InetSocket) bool {
	return s.Type == unix.SOCK_DGRAM && ((s.Family == unix.AF_INET && s.Protocol == unix.IPPROTO_ICMP) ||
		(s.Family == unix.AF_INET6 && s.Protocol == unix.IPPROTO_ICMPV6))
}

func isRawOrPing(s *imagepb.InetSocket) bool {
	return s.Type == unix.SOCK_RAW || isPing(s)
}

// supportedKind reports the socket kinds Dump and Create handle.
func supportedKind(s *imagepb.InetSocket) bool {
	switch {
	case s.Type == unix.SOCK_STREAM && s.Protocol == unix.IPPROTO_TCP:
	case s.Type == unix.SOCK_DGRAM && isUDP(s.Protocol):
	case isPing(s):
	case s.Type == unix.SOCK_RAW && s.Protocol >= 0 && s.Protocol <= 255:
	default:
		return false
	}
	return true
}

// kindName names the socket's kind for messages ("udplite", "raw/1").
func kindName(s *imagepb.InetSocket) string {
	switch {
	case s.Protocol == unix.IPPROTO_TCP && s.Type == unix.SOCK_STREAM:
		return "tcp"
	case s.Protocol == unix.IPPROTO_UDPLITE:
		return "udplite"
	case isPing(s):
		return "ping"
	case s.Type == unix.SOCK_RAW:
		return fmt.Sprintf("raw/%d", s.Protocol)
	}
	return "udp"
}

// datagramState fills State and Shutdown of a UDP, UDP-lite, raw or ping
// socket from its sock_diag or /proc/net entry e (found: listed), and
// refuses queued datagrams (raw and ping packets cannot be queued again).
// For raw and ping sockets it returns the addresses to record: their
// "port" is the protocol or the ICMP identifier, and a connected one
// without a peer port answers getpeername with ENOTCONN.
func datagramState(fd int, s *imagepb.InetSocket, e DiagEntry, found bool) (*diagAddrs, error) {
	ino, kind := s.Ino, kindName(s)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("inet socket:[%d]: getsockname: %w", ino, err)
	}
	src, port, _ := fromSockaddr(sa)
	if !found {
		// unhashed: never bound, so never connected either
		if port != 0 || s.Type == unix.SOCK_RAW {
			return nil, fmt.Errorf("inet socket:[%d]: bound %s socket not in the sock_diag snapshot or /proc/net (other network namespace?)", ino, kind)
		}
		e.State = TCPClose
	}
	s.State, s.Shutdown = int32(e.State), uint32(e.Shutdown)
	if e.RQueue > 0 {
		return nil, unsupported(ino, "%s socket with datagrams queued for reading (%d bytes)", kind, e.RQueue)
	}
	if e.State != TCPClose && e.State != TCPEstablished {
		return nil, unsupported(ino, "%s socket in state %d", kind, e.State)
	}
	if !isRawOrPing(s) {
		return nil, nil
	}
	// no shutdown bits in /proc/net: poll shows a read side shut down
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	if _, err := unix.Poll(p, 0); err != nil {
		return nil, fmt.Errorf("inet socket:[%d]: poll: %w", ino, err)
	}
	if p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0 {
		return nil, unsupported(ino, "%s socket shut down", kind)
	}
	if p[0].Revents&unix.POLLIN != 0 {
		return nil, unsupported(ino, "%s socket with datagrams queued for reading", kind)
	}
	if p[0].Revents&unix.POLLERR != 0 {
		return nil, unsupported(ino, "%s socket with a pending error (SO_ERROR or error queue)", kind)
	}
	a := &diagAddrs{src: src, srcPort: port, bound: port != 0 || !allZero(src)}
	if s.Type == unix.SOCK_RAW {
		a.srcPort, a.bound = 0, !allZero(src) // the port shown is the protocol
	}
	if e.State == TCPEstablished {
		a.dst, a.dstPort = diagAddr(s.Family, e.Dst), uint32(e.DstPort)
	}
	return a, nil
}

// dumpICMP6Filter records a raw ICMPv6 socket's filter when a fresh
// socket reads another one.
func dumpICMP6Filter(fd int, s *imagepb.InetSocket) error {
	if s.Type != unix.SOCK_RAW || s.Family != unix.AF_INET6 || s.Protocol != unix.IPPROTO_ICMPV6 {
		return nil
	}
	cur, err := icmp6Filter(fd)
	if err != nil {
		return fmt.Errorf("inet socket:[%d]: getsockopt ICMPV6_FILTER: %w", s.Ino, err)
	}
	ref, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("inet socket:[%d]: reference socket: %w", s.Ino, err)
	}
	defer unix.Close(ref)
	def, err := icmp6Filter(ref)
	if err != nil {
		return fmt.Errorf("inet socket:[%d]: getsockopt ICMPV6_FILTER: %w", s.Ino, err)
	}
	if string(cur) != string(def) {
		s.Icmp6Filter = cur
	}
	return nil
}

func icmp6Filter(fd int) ([]byte, error) {
	b := make([]byte, sizeofICMP6Filter)
	l := uint32(len(b))
	if err := getsockopt(fd, solICMPv6, icmpv6Filter, unsafe.Pointer(&b[0]), &l); err != nil {
		return nil, err
	}
	return b[:l], nil
}
