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

// Options tune Dump.
type Options struct {
	// InFlight takes the descriptors the kernel installed in our process
	// for the SCM_RIGHTS of one queued element (peeking installs copies of
	// the in-flight files) and returns their file ids; it owns the fds,
	// even on error. nil: fd passing in flight is refused.
	InFlight func(fds []int) ([]uint32, error)
	// Root is the directory where the socket's bound path name resolves:
	// the root of a process holding it (/proc/PID/root), which in a
	// container is not ours. "": ctr-cr's own root.
	Root string
	// Cwd is the working directory of that process (/proc/PID/cwd), where
	// a name bound as a relative path is looked for. "": ours.
	Cwd string
}

// Dump describes one unix socket end with the default Options (fd passing
// in flight refused); see DumpWith.
func Dump(fd int, ino uint64, d *Diag) (*imagepb.UnixSocket, error) {
	return DumpWith(fd, ino, d, Options{})
}

// DumpWith describes one unix socket end from our stolen copy fd (the same
// file as in the target). It reads the queued data WITHOUT consuming it:
// stream: recv MSG_PEEK of the whole queue; dgram/seqpacket: SO_PEEK_OFF
// walk message by message (put back to its previous value afterwards).
//
// Contract: fd refers to the socket whose inode is ino (checked with
// fstat); d is a snapshot of the socket's network namespace taken after
// the socket's owners were frozen (nil: DumpWith reads one itself, in the
// caller's netns). The target must not run during DumpWith.
//
// Recorded: type, state, bound name (path: also its socket file's inode,
// mode and owner, and whether the path was deleted; abstract "@name"),
// listen backlog and accept queue (icons: client inodes, oldest first),
// peer inode and name, a waiting client's listener, options (the
// socket-level ones read back exactly: opts.go), shutdown, the
// queue with per-element credentials, SCM_RIGHTS file ids (o.InFlight) and
// dgram sender addresses. Whether the peer is inside the dump is for the
// caller to check (the image must hold it, or it is external).
//
// A socket whose peer was closed (the kernel reports peer 0 with state
// ESTABLISHED, and getpeername still answers with the dead peer's name) is
// recorded with PeerGone, the dead peer's name and a pending ECONNRESET
// (ErrReset); see peerGone.
//
// Refusals are *UnsupportedError: unknown socket types; a name that is a
// relative path not leading to the socket's file from o.Cwd; a stream/seqpacket socket whose peer is in another network
// namespace or connected elsewhere; a dgram socket connected to
// an unbound socket that is not connected back; an unbound dgram socket
// with queued datagrams that is not one end of a pair; SO_PEEK_OFF in use
// by the task on a dgram/seqpacket socket (a stream socket's is carried); SO_PASSPIDFD with queued messages; queued messages with a
// security label (SCM_SECURITY);
// MSG_OOB data in flight; fd passing in flight when o.InFlight is nil.
// Data a waiting client sent into its unaccepted connection is not read
// here (it cannot be without accepting it): see CaptureEmbryos.
//
// Side effects the task could notice (none changes what it reads): peeking
// a zero-length message marks it "peeked" in the kernel, and on a
// seqpacket socket with its read side shut down SO_TIMESTAMP is enabled
// during the peek (and disabled again) to tell an empty record from EOF.
func DumpWith(fd int, ino uint64, d *Diag, o Options) (*imagepb.UnixSocket, error) {
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
	gone, goneName, err := peerGone(fd, e, d)
	if err != nil {
		return nil, err
	}

	s := &imagepb.UnixSocket{Type: int32(typ), Ino: ino, PeerIno: e.PeerIno, Shutdown: uint32(e.shutdown), State: int32(e.State), Name: e.Name}
	if err := describeName(s, e, o); err != nil {
		return nil, err
	}
	if p, ok := d.Lookup(e.PeerIno); ok && e.PeerIno != 0 {
		s.PeerName = p.Name
	}
	if e.State == tcpListen {
		s.Backlog = e.WQueue
		s.Icons = append([]uint64(nil), e.Icons...)
	}
	if l, ok := d.ListenerOf(ino); ok && e.PeerIno == 0 {
		s.ListenerIno = l
		if le, ok := d.Lookup(l); ok {
			s.PeerName = le.Name
		}
	}
	if gone {
		s.PeerGone, s.PeerName = true, goneName
	}
	if err := dumpOptions(fd, s); err != nil {
		return nil, err
	}
	if err := dumpSockErr(fd, s); err != nil {
		return nil, err
	}
	if e.State == tcpListen {
		return s, nil // a listener has no data queue of its own
	}
	if err := dumpQueue(fd, s, e, o); err != nil {
		return nil, err
	}
	if s.PeerGone {
		return s, checkGoneQueue(s)
	}
	if s.Type == unix.SOCK_DGRAM && len(s.Queue) > 0 && s.Name == "" && !mutualPair(e, d) {
		return nil, unsupported(ino, "unbound dgram socket with %d queued datagrams and no peer to send them again", len(s.Queue))
	}
	return s, nil
}

// dumpQueue peeks the receive queue into s, turning in-flight descriptors
// into file ids with o.InFlight.
func dumpQueue(fd int, s *imagepb.UnixSocket, e DiagEntry, o Options) error {
	p := peeker{fd: fd, ino: s.Ino, keepFds: o.InFlight != nil}
	defer p.closeFds()
	q, err := peekQueue(&p, s, e)
	if err != nil {
		return err
	}
	if err := checkPassOptions(&imagepb.UnixSocket{Ino: s.Ino, Passpidfd: s.Passpidfd, Queue: q}, p.labels); err != nil {
		return err
	}
	s.Queue = q
	s.Creds = credsOf(p.creds)
	if s.Type == unix.SOCK_DGRAM {
		for _, n := range p.senders {
			if n != "" {
				s.Senders = p.senders
				break
			}
		}
	}
	any := false
	for _, fs := range p.fds {
		any = any || len(fs) > 0
	}
	if !any {
		return nil
	}
	s.Fds = make([]*imagepb.UnixFds, len(p.fds))
	for i, fs := range p.fds {
		s.Fds[i] = &imagepb.UnixFds{}
		if len(fs) == 0 {
			continue
		}
		p.fds[i] = nil // handed over
		ids, err := o.InFlight(fs)
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: queued message %d: fds in flight: %w", s.Ino, i, err)
		}
		s.Fds[i].FileIds = ids
	}
	return nil
}

// mutualPair reports a socket connected to a peer that is connected back.
func mutualPair(e DiagEntry, d *Diag) bool {
	p, ok := d.Lookup(e.PeerIno)
	return ok && e.PeerIno != 0 && p.PeerIno == e.Ino
}

// checkShape refuses the socket shapes restore cannot rebuild.
func checkShape(e DiagEntry, d *Diag) error {
	switch e.Type {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return unsupported(e.Ino, "socket type %d", e.Type)
	}
	if e.State == tcpListen {
		return nil
	}
	if e.PeerIno == 0 {
		// (a bound dgram socket that others connected to is ESTABLISHED
		// too; an unbound one cannot be connected to, its peer is gone)
		if e.State != tcpEstablished || e.Type == unix.SOCK_DGRAM && e.Name != "" {
			return nil // unconnected
		}
		if _, ok := d.ListenerOf(e.Ino); ok {
			return nil // waiting in an accept queue
		}
		return nil // the peer was closed: see peerGone
	}
	p, ok := d.Lookup(e.PeerIno)
	if !ok {
		return unsupported(e.Ino, "peer socket:[%d] is gone (not in sock_diag)", e.PeerIno)
	}
	if e.Type == unix.SOCK_DGRAM {
		if p.PeerIno != e.Ino && p.Name == "" {
			return unsupported(e.Ino, "dgram socket connected to the unbound socket:[%d], which is not connected back", e.PeerIno)
		}
		return nil
	}
	if p.PeerIno != e.Ino {
		return unsupported(e.Ino, "peer socket:[%d] is connected to socket:[%d], not back to us", e.PeerIno, p.PeerIno)
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

// dumpOptions records the options in the image (opts.go for the
// socket-level ones beyond the buffers and SO_PASS*) and refuses those
// the image cannot carry when they are not at their default.
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
	// (an older kernel without one of these answers an error: never set)
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSSEC); err == nil {
		s.Passsec = v != 0
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSPIDFD); err == nil {
		s.Passpidfd = v != 0
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS); err == nil {
		s.NoPassrights = v == 0
	}
	return dumpGenericOptions(fd, s)
}

// checkPassOptions refuses the queues the SO_PASS* options make
// unrestorable: with SO_PASSPIDFD each queued message yields a pidfd of
// its sender, which a refilled message cannot name again; messages that
// carried a security label (SCM_SECURITY, SO_PASSSEC under an LSM) would
// come back with the restorer's.
func checkPassOptions(s *imagepb.UnixSocket, labels bool) error {
	if s.Passpidfd && len(s.Queue) > 0 {
		return unsupported(s.Ino, "SO_PASSPIDFD with %d queued messages (the pidfds of their senders cannot be given again)", len(s.Queue))
	}
	if labels {
		return unsupported(s.Ino, "queued messages with security labels (SO_PASSSEC: SCM_SECURITY)")
	}
	return nil
}

// peekQueue reads the receive queue without consuming it.
func peekQueue(p *peeker, s *imagepb.UnixSocket, e DiagEntry) (q [][]byte, err error) {
	ino, fd := s.Ino, p.fd
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
	if prev >= 0 && s.Type != unix.SOCK_STREAM {
		// the walk below marks the zero-length messages it passes as
		// peeked, which a task peeking with an offset would notice
		kind := "dgram"
		if s.Type == unix.SOCK_SEQPACKET {
			kind = "seqpacket"
		}
		return nil, unsupported(ino, "SO_PEEK_OFF=%d in use by the task on a %s socket", prev, kind)
	}
	// Whatever happens below, put the task's peek offset back.
	defer func() {
		if rerr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, prev); rerr != nil {
			err = errors.Join(err, fmt.Errorf("unix socket:[%d]: restore SO_PEEK_OFF=%d: %w", ino, prev, rerr))
		}
	}()

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
