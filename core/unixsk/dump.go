package unixsk

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// UnsupportedError reports a unix socket in a state the engine cannot
// dump or rebuild yet (listening, bound, peer gone, fds in flight, ...).
type UnsupportedError struct {
	Ino    uint64 // socket inode
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("unix socket:[%d]: unsupported: %s", e.Ino, e.Reason)
}

func unsupported(ino uint64, format string, a ...any) error {
	return &UnsupportedError{Ino: ino, Reason: fmt.Sprintf(format, a...)}
}

// Dump describes one unix socket end from our stolen copy fd (same file as in the target). It reads the
// queued data WITHOUT consuming it: stream: recv MSG_PEEK|MSG_DONTWAIT of the whole queue (size via SIOCINQ / the diag rqueue);
// dgram/seqpacket: enable SO_PEEK_OFF=0 on the socket and peek message by message (each recv with MSG_PEEK advances the peek offset;
// MSG_TRUNC on dgram to learn each size), then set SO_PEEK_OFF back to -1 (disabled) so the target sees no change.
// Note SO_PEEK_OFF is per socket (shared with the target!) — restore it to its previous value (read it first with getsockopt).
// Refuses (clear error) what restore cannot rebuild yet: in-flight SCM_RIGHTS/SCM_CREDENTIALS (use MSG_PEEK with a control buffer and report "fd passing in flight"), listening sockets, sockets bound to a name (for now), a peer that is not given.
//
// Contract: fd refers to the socket whose inode is ino (checked with
// fstat); d is a snapshot of the socket's network namespace taken after
// the socket's owners were frozen (nil: Dump reads one itself, in the
// caller's netns). The target must not run during Dump. Refusals are
// *UnsupportedError: sockets that are listening, bound to a name or
// connected to a bound peer, unconnected, whose peer is gone (the other
// end of a pair was closed; the kernel then reports peer 0 with state
// ESTABLISHED), whose peer is connected elsewhere, with SO_PEEK_OFF in use
// by the task, with SO_PASSPIDFD/SO_PASSSEC set or SO_PASSRIGHTS cleared,
// with MSG_OOB data in flight, or with queued messages that carry
// SCM_RIGHTS ("fd passing in flight") or sender credentials (attached by
// the kernel when either end had SO_PASSCRED at send time, or sent
// explicitly). Queue holds one element per message for dgram/seqpacket and
// a single element for stream (none when empty). Shutdown and State come
// from d.
//
// Side effects the task could notice (none changes what it reads): peeking
// a zero-length message marks it "peeked" in the kernel, and on a
// seqpacket socket with its read side shut down SO_TIMESTAMP is enabled
// during the peek (and disabled again) to tell an empty record from EOF.
// Both are restored or harmless for normal reads; see peekRecords.
func Dump(fd int, ino uint64, d *Diag) (*imagepb.UnixSocket, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("unix socket:[%d]: fstat fd %d: %w", ino, fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != ino {
		return nil, fmt.Errorf("unix socket:[%d]: fd %d is not that socket (mode %#o, inode %d)", ino, fd, st.Mode, st.Ino)
	}
	if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
		return nil, fmt.Errorf("unix socket:[%d]: not an AF_UNIX socket (domain %d, %v)", ino, dom, err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("unix socket:[%d]: SO_TYPE: %w", ino, err)
	}
	if d == nil {
		if d, err = ReadDiag(); err != nil {
			return nil, err
		}
	}
	e, ok := d.Lookup(ino)
	if !ok {
		return nil, fmt.Errorf("unix socket:[%d]: not in the sock_diag snapshot (other network namespace, or created after it)", ino)
	}
	if e.Type != typ {
		return nil, fmt.Errorf("unix socket:[%d]: SO_TYPE %d but sock_diag type %d", ino, typ, e.Type)
	}
	if err := checkShape(e, d); err != nil {
		return nil, err
	}

	s := &imagepb.UnixSocket{Type: int32(typ), Ino: ino, PeerIno: e.PeerIno, Shutdown: uint32(e.shutdown), State: int32(e.State)}
	if err := dumpOptions(fd, s); err != nil {
		return nil, err
	}
	q, err := peekQueue(fd, s, e)
	if err != nil {
		return nil, err
	}
	s.Queue = q
	return s, nil
}

// checkShape refuses the socket shapes Pair cannot rebuild.
func checkShape(e DiagEntry, d *Diag) error {
	switch e.Type {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return unsupported(e.Ino, "socket type %d", e.Type)
	}
	if e.State == tcpListen {
		return unsupported(e.Ino, "listening socket (%q)", e.Name)
	}
	if e.Name != "" && !autobound(e.Name) {
		return unsupported(e.Ino, "socket bound to %q", e.Name)
	}
	if e.PeerIno == 0 {
		if e.State == tcpEstablished {
			return unsupported(e.Ino, "peer is gone (the other end was closed)")
		}
		return unsupported(e.Ino, "socket without a peer (unconnected, state %d)", e.State)
	}
	p, ok := d.Lookup(e.PeerIno)
	if !ok {
		return unsupported(e.Ino, "peer socket:[%d] is gone (not in sock_diag)", e.PeerIno)
	}
	if p.PeerIno != e.Ino {
		return unsupported(e.Ino, "peer socket:[%d] is connected to socket:[%d], not back to us", e.PeerIno, p.PeerIno)
	}
	if p.Name != "" && !autobound(p.Name) {
		return unsupported(e.Ino, "peer socket:[%d] is bound to %q (accepted connection)", e.PeerIno, p.Name)
	}
	return nil
}

// autobound reports a name the kernel gave by itself (autobind: an abstract
// "@" and five hex digits, e.g. on the first send with SO_PASSCRED). Nobody
// chose it, so a pair socket carrying one is rebuilt unbound and gets a new
// one the same way.
func autobound(name string) bool {
	if len(name) != 6 || name[0] != '@' {
		return false
	}
	for _, c := range name[1:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// dumpOptions records the options in the image and refuses the unix
// options the image cannot carry when they are not at their default.
func dumpOptions(fd int, s *imagepb.UnixSocket) error {
	get := func(name string, opt int) (int, error) {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return 0, fmt.Errorf("unix socket:[%d]: getsockopt %s: %w", s.Ino, name, err)
		}
		return v, nil
	}
	sb, err := get("SO_SNDBUF", unix.SO_SNDBUF)
	if err != nil {
		return err
	}
	rb, err := get("SO_RCVBUF", unix.SO_RCVBUF)
	if err != nil {
		return err
	}
	pc, err := get("SO_PASSCRED", unix.SO_PASSCRED)
	if err != nil {
		return err
	}
	s.Sndbuf, s.Rcvbuf, s.Passcred = uint32(sb), uint32(rb), pc != 0
	for _, o := range []struct {
		name string
		opt  int
		def  int
	}{{"SO_PASSPIDFD", unix.SO_PASSPIDFD, 0}, {"SO_PASSSEC", unix.SO_PASSSEC, 0}, {"SO_PASSRIGHTS", unix.SO_PASSRIGHTS, 1}} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.opt)
		if err == nil && v != o.def {
			return unsupported(s.Ino, "%s=%d is not kept by the image", o.name, v)
		}
	}
	return nil
}

// peekQueue reads the receive queue without consuming it.
func peekQueue(fd int, s *imagepb.UnixSocket, e DiagEntry) (q [][]byte, err error) {
	ino := s.Ino
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("unix socket:[%d]: SIOCINQ: %w", ino, err)
	}
	if s.Type == unix.SOCK_STREAM {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		if n, err := unix.Poll(pfd, 0); err == nil && n > 0 && pfd[0].Revents&unix.POLLPRI != 0 {
			return nil, unsupported(ino, "MSG_OOB data in flight")
		}
	}

	prev, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("unix socket:[%d]: getsockopt SO_PEEK_OFF: %w", ino, err)
	}
	if prev >= 0 {
		return nil, unsupported(ino, "SO_PEEK_OFF=%d in use by the task", prev)
	}
	// Whatever happens below, put the task's peek offset back.
	defer func() {
		if rerr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, prev); rerr != nil {
			err = errors.Join(err, fmt.Errorf("unix socket:[%d]: restore SO_PEEK_OFF=%d: %w", ino, prev, rerr))
		}
	}()

	p := peeker{fd: fd, ino: ino}
	defer func() { s.Creds = credsOf(p.creds) }()
	if s.Type == unix.SOCK_STREAM {
		return p.stream(inq)
	}
	// A seqpacket socket whose read side is shut down answers 0 (EOF)
	// instead of EAGAIN once nothing is left to peek, which looks like an
	// empty record: a timestamp control message tells them apart.
	if s.Type == unix.SOCK_SEQPACKET && e.shutdown&rcvShutdown != 0 {
		restore, err := p.enableTimestamps()
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, restore()) }()
	}
	q, err = p.records()
	if err != nil {
		return nil, err
	}
	// Cross-check against the kernel's own count (dgram: length of the
	// first datagram; seqpacket: bytes of all records).
	want, got := inq, 0
	if s.Type == unix.SOCK_DGRAM {
		if len(q) > 0 {
			got = len(q[0])
		}
	} else {
		for _, m := range q {
			got += len(m)
		}
	}
	if got != want {
		return nil, fmt.Errorf("unix socket:[%d]: peeked %d bytes but SIOCINQ says %d (queue changed during dump?)", ino, got, want)
	}
	return q, nil
}

// credsOf converts the peeked credentials for the image: nothing when no
// element carried any.
func credsOf(cs []*unix.Ucred) []*imagepb.UnixCred {
	any := false
	for _, c := range cs {
		any = any || c != nil
	}
	if !any {
		return nil
	}
	out := make([]*imagepb.UnixCred, len(cs))
	for i, c := range cs {
		out[i] = &imagepb.UnixCred{}
		if c != nil {
			out[i] = &imagepb.UnixCred{Pid: c.Pid, Uid: c.Uid, Gid: c.Gid}
		}
	}
	return out
}
