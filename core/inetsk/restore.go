package inetsk

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Create rebuilds the socket s in the calling process and returns its fd
// (blocking, close-on-exec: file status flags belong to the caller). A TCP
// connection comes back in repair mode, silent until Resume. The
// socket is created with the dumped owner (sk_uid, via the thread's fsuid),
// its options are set, then it is bound to its address, put back to
// listening with its backlog, or connected (UDP). A TCP port still held by
// connections in TIME_WAIT only is freed (see bind). On error nothing is
// left open.
func Create(s *imagepb.InetSocket) (fd int, err error) {
	if err := check(s); err != nil {
		return -1, err
	}
	fd, err = socketAs(int(s.Family), int(s.Type)|unix.SOCK_CLOEXEC, int(s.Protocol), int(s.Uid))
	if err == unix.EACCES && isPing(s) {
		// net.ipv4.ping_group_range admits the task's group, not ours
		fd, err = pingSocketAs(s)
	}
	if err != nil {
		return -1, fmt.Errorf("%s: socket: %w", Describe(s), err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}()
	if err := applyOptions(fd, s); err != nil {
		return -1, fmt.Errorf("%s: %w", Describe(s), err)
	}
	if s.Tcp != nil {
		if err := restoreTCP(fd, s); err != nil {
			return -1, fmt.Errorf("%s: %w", Describe(s), err)
		}
		return fd, nil
	}
	if s.State == TCPSynSent {
		if err := connectAgain(fd, s); err != nil {
			return -1, fmt.Errorf("%s: %w", Describe(s), err)
		}
		return fd, nil
	}
	if s.Bound {
		if err := bind(fd, s); err != nil {
			return -1, fmt.Errorf("%s: %w", Describe(s), err)
		}
	}
	if s.State == TCPListen {
		if err := unix.Listen(fd, int(s.Backlog)); err != nil {
			return -1, fmt.Errorf("%s: listen(%d): %w", Describe(s), s.Backlog, err)
		}
	}
	if s.Type != unix.SOCK_STREAM && s.State == TCPEstablished {
		sa, err := toSockaddr(s.Family, s.DstAddr, s.DstPort, s.DstScope)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", Describe(s), err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			return -1, fmt.Errorf("%s: connect: %w", Describe(s), err)
		}
	}
	if s.Shutdown != 0 {
		// sk_shutdown bits (RCV=1, SEND=2) are shutdown(2)'s how + 1; an
		// unconnected socket answers ENOTCONN but records the bits.
		if err := unix.Shutdown(fd, int(s.Shutdown)-1); err != nil && err != unix.ENOTCONN {
			return -1, fmt.Errorf("%s: shutdown %d: %w", Describe(s), s.Shutdown, err)
		}
	}
	return fd, nil
}

// CloseConnection turns the entry of a TCP connection (established or
// half-closed, with or without its repair state) into that of the closed
// socket restore --tcp-close gives in its place, as CRIU does: a fresh TCP
// socket with the connection's options, unbound, shut down both ways, so
// that reads give end of file, writes EPIPE (and SIGPIPE), poll POLLHUP,
// and getpeername ENOTCONN. It reports whether s was such a connection.
func CloseConnection(s *imagepb.InetSocket) bool {
	if s == nil || s.Protocol != unix.IPPROTO_TCP || !IsConnection(int(s.State)) {
		return false
	}
	s.Tcp = nil
	s.State = TCPClose
	s.Bound = false
	s.Shutdown = 3 // RCV_SHUTDOWN | SEND_SHUTDOWN
	return true
}

// bind binds fd to the address of s. When a TCP port is held only by
// connections in TIME_WAIT (left by the dumped socket, which had no
// SO_REUSEADDR: theirs is off too, so even SO_REUSEADDR would not do),
// they are destroyed and the bind retried.
func bind(fd int, s *imagepb.InetSocket) error {
	sa, err := toSockaddr(s.Family, s.SrcAddr, s.SrcPort, s.SrcScope)
	if err != nil {
		return err
	}
	if s.SrcPort == 0 && !s.BindAddressNoPort && !isRawOrPing(s) {
		// bound to an address only, without a port (IP_BIND_ADDRESS_NO_PORT
		// then, or a port given back by a failed connection): so again
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			return fmt.Errorf("setsockopt IP_BIND_ADDRESS_NO_PORT for the bind: %w", err)
		}
		defer unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 0)
	}
	err = unix.Bind(fd, sa)
	if err == unix.EADDRNOTAVAIL && !s.Freebind {
		return bindFree(fd, s, sa)
	}
	if err != unix.EADDRINUSE || s.Protocol != unix.IPPROTO_TCP || s.SrcPort == 0 {
		if err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		return nil
	}
	n, terr := clearTimeWait(uint16(s.SrcPort))
	if terr != nil {
		return fmt.Errorf("bind: %w (%v)", err, terr)
	}
	if n == 0 {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind after clearing %d connection(s) in TIME_WAIT on port %d: %w", n, s.SrcPort, err)
	}
	return nil
}

// check validates an image entry before anything is created.
func check(s *imagepb.InetSocket) error {
	if s == nil {
		return errors.New("inet socket entry without its description")
	}
	if s.Family != unix.AF_INET && s.Family != unix.AF_INET6 {
		return fmt.Errorf("inet socket:[%d]: bad family %d", s.Ino, s.Family)
	}
	tcp := s.Type == unix.SOCK_STREAM && s.Protocol == unix.IPPROTO_TCP
	udp := supportedKind(s) && !tcp // UDP, UDP-lite, raw, ping: datagrams
	switch {
	case tcp && IsConnection(int(s.State)):
		if err := checkTCP(s); err != nil {
			return err
		}
	case tcp && s.Tcp != nil:
		return fmt.Errorf("inet socket:[%d]: TCP state for a socket in state %s", s.Ino, StateName(int(s.State)))
	case tcp && (s.State == TCPListen || s.State == TCPClose):
	case tcp && s.State == TCPSynSent:
		if s.DstPort == 0 || s.SrcPort == 0 {
			return fmt.Errorf("inet socket:[%d]: connecting socket without both ports", s.Ino)
		}
	case udp && (s.State == TCPClose || s.State == TCPEstablished):
	case tcp || udp:
		return fmt.Errorf("inet socket:[%d]: cannot rebuild a socket in state %s", s.Ino, StateName(int(s.State)))
	default:
		return fmt.Errorf("inet socket:[%d]: bad type %d / protocol %d", s.Ino, s.Type, s.Protocol)
	}
	if s.Shutdown&^3 != 0 {
		return fmt.Errorf("inet socket:[%d]: bad shutdown bits %#x", s.Ino, s.Shutdown)
	}
	return nil
}

// socketAs creates a socket owned by uid: the kernel takes the owner
// (sk_uid, shown by ss/sock_diag and used by SO_REUSEPORT groups and
// netfilter's owner match) from the creating thread's fsuid.
func socketAs(domain, typ, proto, uid int) (int, error) {
	if uid == unix.Getuid() {
		return unix.Socket(domain, typ, proto)
	}
	runtime.LockOSThread()
	prev, err := unix.SetfsuidRetUid(uid)
	if err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("setfsuid %d: %w", uid, err)
	}
	fd, serr := unix.Socket(domain, typ, proto)
	if _, err := unix.SetfsuidRetUid(prev); err != nil {
		// the thread must not go back to the pool with another fsuid
		if serr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("setfsuid back to %d: %w", prev, err)
	}
	runtime.UnlockOSThread()
	return fd, serr
}

// bindFree binds fd to sa, an address no interface holds (yet: the
// socket was bound to it at dump time, so it was there then, or the
// namespace allowed non-local binds), with IP_FREEBIND set for the bind
// only: the socket is bound as it was, and receives once the address is
// back.
func bindFree(fd int, s *imagepb.InetSocket, sa unix.Sockaddr) error {
	level, opt, name := unix.SOL_IP, unix.IP_FREEBIND, "IP_FREEBIND"
	if s.Family == unix.AF_INET6 {
		level, opt, name = unix.SOL_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND"
	}
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return fmt.Errorf("bind: address not available; setting %s for it: %w", name, err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind (address not available, with %s): %w", name, err)
	}
	if err := unix.SetsockoptInt(fd, level, opt, 0); err != nil {
		return fmt.Errorf("clearing %s after bind: %w", name, err)
	}
	return nil
}

// pingSocketAs creates the ping socket of s with the thread's effective
// group set to the socket's group: ping sockets are open to the groups of
// net.ipv4.ping_group_range only (the task's was, when it made it).
func pingSocketAs(s *imagepb.InetSocket) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// the raw system call: this thread only (Go's Setresgid changes all)
	if s.Uid != uint32(unix.Getuid()) {
		prevUid, err := unix.SetfsuidRetUid(int(s.Uid))
		if err != nil {
			return -1, fmt.Errorf("setfsuid %d: %w", s.Uid, err)
		}
		defer unix.SetfsuidRetUid(prevUid)
	}
	prev := unix.Getegid()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(s.Gid), ^uintptr(0)); e != 0 {
		return -1, fmt.Errorf("setresgid -1 %d -1: %w", s.Gid, e)
	}
	fd, serr := unix.Socket(int(s.Family), int(s.Type)|unix.SOCK_CLOEXEC, int(s.Protocol))
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(prev), ^uintptr(0)); e != 0 {
		if serr == nil {
			unix.Close(fd)
		}
		// the thread keeps the wrong group: never reuse it
		runtime.LockOSThread()
		return -1, fmt.Errorf("setresgid back to %d: %w", prev, e)
	}
	if serr != nil {
		return -1, fmt.Errorf("as group %d (net.ipv4.ping_group_range): %w", s.Gid, serr)
	}
	return fd, nil
}
