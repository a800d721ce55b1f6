package inetsk

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func ino(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func sock(t *testing.T, family, typ int) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func loopback(family, port int) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Port: port, Addr: [16]byte{15: 1}}
	}
	return &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func dump(t *testing.T, fd int) (*imagepb.InetSocket, error) {
	t.Helper()
	return Dump(fd, ino(t, fd), nil, false)
}

// roundTrip dumps fd, closes it, rebuilds it and requires the rebuilt
// socket to dump to the same description.
func roundTrip(t *testing.T, fd int) (*imagepb.InetSocket, int) {
	t.Helper()
	s, err := dump(t, fd)
	must(t, err)
	unix.Close(fd)
	nfd, err := Create(s)
	if err != nil {
		t.Fatalf("Create(%s): %v", Describe(s), err)
	}
	t.Cleanup(func() { unix.Close(nfd) })
	s2, err := dump(t, nfd)
	must(t, err)
	s2.Ino = s.Ino
	if s.Family == unix.AF_INET6 && s.State == TCPEstablished && !s.V6Only {
		// autobound by connect: the explicit bind of the rebuild sets
		// IPV6_V6ONLY (no effect on a connected socket)
		s2.V6Only = false
	}
	if !proto.Equal(s, s2) {
		t.Fatalf("rebuilt socket differs:\n dumped  %v\n rebuilt %v", s, s2)
	}
	return s, nfd
}

// connectAndTalk connects to the listener lfd, accepts and exchanges data.
func connectAndTalk(t *testing.T, family, lfd int, s *imagepb.InetSocket) {
	t.Helper()
	c := sock(t, family, unix.SOCK_STREAM)
	must(t, unix.Connect(c, loopback(family, int(s.SrcPort))))
	a, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	must(t, err)
	defer unix.Close(a)
	_, err = unix.Write(c, []byte("hi"))
	must(t, err)
	b := make([]byte, 8)
	n, err := unix.Read(a, b)
	must(t, err)
	if string(b[:n]) != "hi" {
		t.Fatalf("read %q", b[:n])
	}
}

func TestListenerRoundTrip(t *testing.T) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		t.Run(familyName(family), func(t *testing.T) {
			fd := sock(t, family, unix.SOCK_STREAM)
			must(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
			must(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1))
			must(t, unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 33))
			must(t, unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 7))
			must(t, unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 4))
			must(t, unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
			must(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 100000))
			// above net.core.wmem_max: needs the FORCE variant on restore
			must(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20))
			tv := unix.Timeval{Sec: 3, Usec: 500000}
			must(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
			if family == unix.AF_INET6 {
				must(t, unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_V6ONLY, 1))
			}
			must(t, unix.Bind(fd, loopback(family, 0)))
			must(t, unix.Listen(fd, 17))
			s, nfd := roundTrip(t, fd)
			if s.State != TCPListen || s.Backlog != 17 || s.SrcPort == 0 || !s.Keepalive || s.Keepidle != 33 ||
				!s.Nodelay || s.Sndbuf != 16<<20 || s.RcvtimeoUs != 3500000 || s.V6Only != (family == unix.AF_INET6) {
				t.Fatalf("dumped %v", s)
			}
			if d := Describe(s); !strings.Contains(d, "LISTEN") || !strings.HasPrefix(d, "tcp") {
				t.Errorf("Describe: %q", d)
			}
			connectAndTalk(t, family, nfd, s)
		})
	}
}

func TestUnboundAndUDPRoundTrip(t *testing.T) {
	fd := sock(t, unix.AF_INET, unix.SOCK_STREAM)
	must(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1))
	s, _ := roundTrip(t, fd)
	if s.Bound || s.State != TCPClose || !s.Keepalive {
		t.Fatalf("unbound tcp: %v", s)
	}

	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		u := sock(t, family, unix.SOCK_DGRAM)
		must(t, unix.SetsockoptInt(u, unix.SOL_SOCKET, unix.SO_BROADCAST, 1))
		must(t, unix.Bind(u, loopback(family, 0)))
		s, nu := roundTrip(t, u)
		if !s.Bound || s.SrcPort == 0 || !s.Broadcast {
			t.Fatalf("udp: %v", s)
		}
		c := sock(t, family, unix.SOCK_DGRAM)
		must(t, unix.Connect(c, loopback(family, int(s.SrcPort))))
		s2, nc := roundTrip(t, c)
		if s2.State != TCPEstablished || s2.DstPort != s.SrcPort {
			t.Fatalf("connected udp: %v", s2)
		}
		_, err := unix.Write(nc, []byte("dgram"))
		must(t, err)
		b := make([]byte, 16)
		n, _, err := unix.Recvfrom(nu, b, 0)
		must(t, err)
		if string(b[:n]) != "dgram" {
			t.Fatalf("received %q", b[:n])
		}
	}
}

func TestDiagLookup(t *testing.T) {
	fd := sock(t, unix.AF_INET6, unix.SOCK_STREAM)
	must(t, unix.Bind(fd, loopback(unix.AF_INET6, 0)))
	must(t, unix.Listen(fd, 5))
	d := NewDiag()
	e, ok, err := d.Lookup(unix.AF_INET6, unix.IPPROTO_TCP, ino(t, fd))
	must(t, err)
	sa, _ := unix.Getsockname(fd)
	if !ok || e.State != TCPListen || e.WQueue != 5 || e.RQueue != 0 || int(e.SrcPort) != sa.(*unix.SockaddrInet6).Port || e.Src[15] != 1 {
		t.Fatalf("lookup: ok %v, %+v", ok, e)
	}
	if _, ok, _ := d.Lookup(unix.AF_INET, unix.IPPROTO_TCP, ino(t, fd)); ok {
		t.Fatal("an IPv6 socket found in the IPv4 table")
	}
}

func requireRefused(t *testing.T, fd int, want string) {
	t.Helper()
	_, err := dump(t, fd)
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Dump: %v, want an UnsupportedError with %q", err, want)
	}
}

func TestRefusals(t *testing.T) {
	l := sock(t, unix.AF_INET, unix.SOCK_STREAM)
	must(t, unix.Bind(l, loopback(unix.AF_INET, 0)))
	must(t, unix.Listen(l, 4))
	sa, _ := unix.Getsockname(l)
	port := sa.(*unix.SockaddrInet4).Port
	c := sock(t, unix.AF_INET, unix.SOCK_STREAM)
	must(t, unix.Connect(c, loopback(unix.AF_INET, port)))
	requireRefused(t, c, "established TCP connection (needs --tcp-established")
	requireRefused(t, l, "listening socket with 1 connections waiting to be accepted (in-flight connections: --skip-in-flight")
	requireInFlightAndClose(t, l, c)

	// reset by the peer: CLOSE, but not a fresh socket
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	must(t, err)
	must(t, unix.SetsockoptLinger(a, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1}))
	unix.Close(a)
	time.Sleep(50 * time.Millisecond)
	requireRefused(t, c, "closed TCP socket with a pending error")
	if v, err := unix.GetsockoptInt(c, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || v != int(unix.ECONNRESET) {
		t.Fatalf("SO_ERROR %d %v: the dump cleared the pending error", v, err)
	}
	requireRefused(t, c, "closed TCP connection (reset")
	if cs, err := DumpWith(c, inode(t, c), nil, DumpOptions{CloseConn: true}); err != nil || cs.State != TCPClose || cs.Shutdown != 3 || cs.Bound {
		t.Fatalf("DumpWith CloseConn of a reset connection: %v, %v (want CLOSE, shut down both ways)", cs, err)
	}

	u := sock(t, unix.AF_INET, unix.SOCK_DGRAM)
	must(t, unix.Bind(u, loopback(unix.AF_INET, 0)))
	usa, _ := unix.Getsockname(u)
	must(t, unix.Sendto(sock(t, unix.AF_INET, unix.SOCK_DGRAM), []byte("x"), 0, usa))
	time.Sleep(10 * time.Millisecond)
	requireRefused(t, u, "datagrams queued")

	sctp, err := unix.Socket(unix.AF_INET, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err == nil {
		defer unix.Close(sctp)
		requireRefused(t, sctp, "only TCP, UDP, UDP-lite, raw and ping")
	}
}

// TestRawPingUDPLite: raw (with ICMP_FILTER, IP_HDRINCL, connected),
// ping and UDP-lite sockets come back with their addresses and options.
func TestRawPingUDPLite(t *testing.T) {
	r, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	must(t, err)
	must(t, unix.SetsockoptInt(r, solRaw, icmpFilter, 0x5))
	must(t, unix.SetsockoptInt(r, unix.SOL_IP, unix.IP_HDRINCL, 1))
	must(t, unix.Bind(r, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	must(t, unix.Connect(r, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}}))
	s, nfd := roundTrip(t, r)
	defer unix.Close(nfd)
	if s.State != TCPEstablished || s.DstAddr[3] != 2 || s.SrcAddr[3] != 1 || !s.Bound {
		t.Fatalf("raw: %s", Describe(s))
	}
	if v, _ := unix.GetsockoptInt(nfd, solRaw, icmpFilter); v != 5 {
		t.Fatalf("ICMP_FILTER %#x", v)
	}

	inPingNetns(t, func() {
		p, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		must(t, err)
		must(t, unix.Bind(p, &unix.SockaddrInet4{Port: 4321, Addr: [4]byte{127, 0, 0, 1}}))
		s, nfd2 := roundTrip(t, p)
		defer unix.Close(nfd2)
		if s.SrcPort != 4321 || !isPing(s) {
			t.Errorf("ping: %s", Describe(s))
		}
	})

	l, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDPLITE)
	must(t, err)
	must(t, unix.SetsockoptInt(l, solUDPLite, udpliteSendCscov, 20))
	must(t, unix.Bind(l, loopback(unix.AF_INET6, 0)))
	s, nfd3 := roundTrip(t, l)
	defer unix.Close(nfd3)
	if v, _ := unix.GetsockoptInt(nfd3, solUDPLite, udpliteSendCscov); v != 20 || s.SrcPort == 0 {
		t.Fatalf("udplite: %s, UDPLITE_SEND_CSCOV %d", Describe(s), v)
	}
}

func TestCreateRejectsBadEntries(t *testing.T) {
	for _, s := range []*imagepb.InetSocket{
		nil,
		{Family: 99, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP, State: TCPClose},
		{Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP, State: TCPEstablished},
		{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP, State: TCPListen},
		{Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP, State: TCPClose, Bound: true, SrcAddr: []byte{1, 2}},
	} {
		if fd, err := Create(s); err == nil {
			unix.Close(fd)
			t.Errorf("Create(%v) succeeded", s)
		}
	}
}

// TestOwner: the rebuilt socket belongs to the dumped owner (sk_uid
// follows the creating thread's fsuid), and the restorer's fsuid is back.
func TestOwner(t *testing.T) {
	if unix.Getuid() != 0 {
		t.Skip("needs root")
	}
	fd, err := Create(&imagepb.InetSocket{Family: unix.AF_INET6, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP, State: TCPClose, Uid: 65534, Linger: -1})
	must(t, err)
	defer unix.Close(fd)
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	if st.Uid != 65534 {
		t.Fatalf("socket owner %d, want 65534", st.Uid)
	}
	s, err := dump(t, fd)
	must(t, err)
	if s.Uid != 65534 {
		t.Fatalf("dumped owner %d", s.Uid)
	}
	if f, _ := unix.SetfsuidRetUid(-1); f != 0 {
		t.Fatalf("fsuid left at %d", f)
	}
}

// TestListenerOverTimeWait: a listener without SO_REUSEADDR whose port is
// still held by one of its connections in TIME_WAIT binds again (the
// TIME_WAIT connection is destroyed); a port held by a live socket is not
// taken.
func TestListenerOverTimeWait(t *testing.T) {
	l := sock(t, unix.AF_INET, unix.SOCK_STREAM)
	must(t, unix.Bind(l, loopback(unix.AF_INET, 0)))
	must(t, unix.Listen(l, 4))
	s, err := dump(t, l)
	must(t, err)
	c := sock(t, unix.AF_INET, unix.SOCK_STREAM)
	must(t, unix.Connect(c, loopback(unix.AF_INET, int(s.SrcPort))))
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	must(t, err)
	unix.Close(a) // active close on the server side: TIME_WAIT on the listener's port
	b := make([]byte, 1)
	if n, err := unix.Read(c, b); n != 0 || err != nil {
		t.Fatalf("read after close: %d %v", n, err)
	}
	unix.Close(c)
	unix.Close(l)
	time.Sleep(20 * time.Millisecond)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	must(t, err)
	if err := unix.Bind(fd, loopback(unix.AF_INET, int(s.SrcPort))); err != unix.EADDRINUSE {
		t.Logf("plain bind over TIME_WAIT: %v (expected EADDRINUSE)", err)
	}
	unix.Close(fd)
	// a live socket on the port: refused, TIME_WAIT left alone
	live := sock(t, unix.AF_INET6, unix.SOCK_STREAM)
	must(t, unix.SetsockoptInt(live, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, unix.Bind(live, loopback(unix.AF_INET6, int(s.SrcPort))))
	if fd, err := Create(s); err == nil || !strings.Contains(err.Error(), "in use by a live IPv6 socket") {
		unix.Close(fd)
		t.Fatalf("Create over a live socket: %v", err)
	}
	unix.Close(live)
	nfd, err := Create(s)
	must(t, err)
	defer unix.Close(nfd)
	if v, _ := unix.GetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 0 {
		t.Errorf("SO_REUSEADDR left at %d", v)
	}
	connectAndTalk(t, unix.AF_INET, nfd, s)
}

// TestMoreOptions: the options of InetSocket.opts, set away from their
// defaults, come back.
func TestMoreOptions(t *testing.T) {
	u := sock(t, unix.AF_INET, unix.SOCK_DGRAM)
	for _, o := range [][3]int{
		{unix.SOL_IP, unix.IP_PKTINFO, 1}, {unix.SOL_IP, unix.IP_RECVTOS, 1}, {unix.SOL_IP, unix.IP_RECVERR, 1},
		{unix.SOL_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE}, {unix.SOL_IP, unix.IP_MULTICAST_TTL, 7},
		{unix.SOL_IP, unix.IP_MULTICAST_LOOP, 0}, {unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1},
		{unix.IPPROTO_UDP, unix.UDP_GRO, 1}, {unix.SOL_IP, unix.IP_TRANSPARENT, 1},
	} {
		must(t, unix.SetsockoptInt(u, o[0], o[1], o[2]))
	}
	must(t, unix.Bind(u, loopback(unix.AF_INET, 0)))
	s, _ := roundTrip(t, u)
	if len(s.Opts) == 0 {
		t.Fatal("no options recorded")
	}

	l := sock(t, unix.AF_INET6, unix.SOCK_STREAM)
	for _, o := range [][3]int{
		{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 12345}, {unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 5},
		{unix.IPPROTO_TCP, unix.TCP_SYNCNT, 3}, {unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 4096},
		{unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, 1}, {unix.SOL_SOCKET, unix.SO_RCVLOWAT, 10},
	} {
		must(t, unix.SetsockoptInt(l, o[0], o[1], o[2]))
	}
	must(t, unix.Bind(l, loopback(unix.AF_INET6, 0)))
	must(t, unix.Listen(l, 2))
	roundTrip(t, l)

	s.Opts = append(s.Opts, &imagepb.InetOpt{Level: unix.SOL_SOCKET, Name: unix.SO_DEBUG, Value: 1})
	if fd, err := Create(s); err == nil {
		unix.Close(fd)
		t.Fatal("Create accepted an option outside the list")
	}
}

// TestClosedAfterFailedConnect: a socket whose connect was refused (and
// reported by connect) is a closed socket again: kept, with its bound
// address but not the port it was given back.
func TestClosedAfterFailedConnect(t *testing.T) {
	// a port nobody listens on: bound, not listening
	hole := sock(t, unix.AF_INET, unix.SOCK_STREAM)
	must(t, unix.Bind(hole, loopback(unix.AF_INET, 0)))
	sa, _ := unix.Getsockname(hole)
	port := sa.(*unix.SockaddrInet4).Port
	for _, bindAddr := range []bool{false, true} {
		c := sock(t, unix.AF_INET, unix.SOCK_STREAM)
		if bindAddr {
			must(t, unix.SetsockoptInt(c, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1))
			must(t, unix.Bind(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
			must(t, unix.SetsockoptInt(c, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 0))
		}
		if err := unix.Connect(c, loopback(unix.AF_INET, port)); err != unix.ECONNREFUSED {
			t.Fatalf("connect: %v", err)
		}
		s, nfd := roundTrip(t, c)
		if s.State != TCPClose || s.SrcPort != 0 || s.Bound != bindAddr {
			t.Fatalf("bindAddr %v: %s bound %v", bindAddr, Describe(s), s.Bound)
		}
		na, _ := unix.Getsockname(nfd)
		if a := na.(*unix.SockaddrInet4); a.Port != 0 || (a.Addr[0] == 127) != bindAddr {
			t.Fatalf("bindAddr %v: restored socket named %v", bindAddr, a.Addr)
		}
		// it can connect again
		if err := unix.Connect(nfd, loopback(unix.AF_INET, port)); err != unix.ECONNREFUSED {
			t.Fatalf("connect again: %v", err)
		}
		unix.Close(nfd)
	}
}

// requireInFlightAndClose: with SkipInFlight the listener l (one
// connection waiting) is dumped as a plain listener; with CloseConn the
// connection c is recorded without its TCP state, and CloseConnection
// makes an entry that Create rebuilds as a socket shut down both ways.
func requireInFlightAndClose(t *testing.T, l, c int) {
	t.Helper()
	ls, err := DumpWith(l, inode(t, l), nil, DumpOptions{SkipInFlight: true})
	if err != nil || ls.State != TCPListen || ls.Backlog != 4 {
		t.Fatalf("DumpWith SkipInFlight: %v, %v", ls, err)
	}
	cs, err := DumpWith(c, inode(t, c), nil, DumpOptions{CloseConn: true})
	if err != nil || cs.State != TCPEstablished || cs.Tcp != nil || cs.DstPort == 0 {
		t.Fatalf("DumpWith CloseConn: %v, %v", cs, err)
	}
	if _, err := Create(cs); err == nil {
		t.Fatalf("Create of a connection without its TCP state: no error")
	}
	if !CloseConnection(cs) || CloseConnection(ls) {
		t.Fatalf("CloseConnection: a connection is one, a listener is not")
	}
	fd, err := Create(cs)
	must(t, err)
	defer unix.Close(fd)
	if n, err := unix.Read(fd, make([]byte, 4)); n != 0 || err != nil {
		t.Errorf("read on the closed connection: %d, %v (want 0: end of file)", n, err)
	}
	if _, err := unix.SendmsgN(fd, []byte("x"), nil, nil, unix.MSG_NOSIGNAL); err != unix.EPIPE {
		t.Errorf("send on the closed connection: %v, want EPIPE", err)
	}
	// dumped again (a second cycle), it stays shut down
	again, err := Dump(fd, inode(t, fd), nil, false)
	if err != nil || again.State != TCPClose || again.Shutdown != 3 {
		t.Fatalf("Dump of the closed connection: %v, %v (want CLOSE, shut down both ways)", again, err)
	}
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	return st.Ino
}

// inPingNetns runs fn on a thread of its own in a fresh network namespace
// whose loopback is up and whose net.ipv4.ping_group_range admits root's
// group (the host's may admit no group: ping sockets need it). The thread
// is thrown away afterwards.
func inPingNetns(t *testing.T, fn func()) {
	t.Helper()
	if unix.Getuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare(CLONE_NEWNET): %v", err)
			return
		}
		sk, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Errorf("socket: %v", err)
			return
		}
		defer unix.Close(sk)
		ifr, err := unix.NewIfreq("lo")
		if err == nil {
			err = unix.IoctlIfreq(sk, unix.SIOCGIFFLAGS, ifr)
		}
		if err == nil {
			ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
			err = unix.IoctlIfreq(sk, unix.SIOCSIFFLAGS, ifr)
		}
		if err != nil {
			t.Errorf("lo up: %v", err)
			return
		}
		// /proc/sys/net is the writing thread's network namespace's
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 0"), 0); err != nil {
			t.Errorf("ping_group_range: %v", err)
			return
		}
		fn()
	}()
	<-done
}
