package unixsk

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Pair recreates a connected socket pair from the two ends' descriptions (a.PeerIno == b.Ino and vice versa):
// socketpair(AF_UNIX, type|SOCK_CLOEXEC), options set, each end's queue refilled by sending from the other end
// (message by message for dgram/seqpacket so boundaries are kept), shutdown state re-applied after the refill.
// Returns fds for a and b in the caller's process.
//
// Contract: a and b are what Dump returned for the two ends (same type,
// unbound, each the other's peer). The fds are blocking and close-on-exec
// (file status flags such as O_NONBLOCK belong to the caller). SO_SNDBUF
// and SO_RCVBUF read back exactly as recorded (0 = not recorded: kept at
// the default); values above net.core.[wr]mem_max are set with
// SO_SNDBUFFORCE/SO_RCVBUFFORCE, which needs CAP_NET_ADMIN. During the
// refill the sending end's SO_SNDBUF is raised temporarily so that queues
// which fit at dump time always fit again, whatever the chunking. Refilled
// messages carry no credentials (SO_PASSCRED is set only after the
// refill), matching what Dump accepts. Sending never blocks: a queue that
// does not fit is an error. On error nothing is left open.
func Pair(a, b *imagepb.UnixSocket) (fdA, fdB int, err error) {
	if err := checkPair(a, b); err != nil {
		return -1, -1, err
	}
	var fds [2]int
	fds, err = unix.Socketpair(unix.AF_UNIX, int(a.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("unix pair %d-%d: socketpair: %w", a.Ino, b.Ino, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			fdA, fdB = -1, -1
		}
	}()
	lim := readLimits()
	ends := [2]*imagepb.UnixSocket{a, b}
	var defSnd [2]uint32 // the fresh sockets' SO_SNDBUF, kept when not recorded
	for i := range fds {
		v, err := unix.GetsockoptInt(fds[i], unix.SOL_SOCKET, unix.SO_SNDBUF)
		if err != nil {
			return -1, -1, fmt.Errorf("unix socket:[%d]: getsockopt SO_SNDBUF: %w", ends[i].Ino, err)
		}
		defSnd[i] = uint32(v)
	}
	for i, s := range ends {
		if err := setBuf(fds[i], s.Ino, "SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, s.Rcvbuf, lim.rmem); err != nil {
			return -1, -1, err
		}
	}
	// Refill: end i's queue is sent by end 1-i.
	for i, s := range ends {
		if err := refill(fds[1-i], s, nil, nil); err != nil {
			return -1, -1, err
		}
	}
	for i, s := range ends {
		fd := fds[i]
		snd := s.Sndbuf
		if snd == 0 {
			snd = defSnd[i]
		}
		if err := setBuf(fd, s.Ino, "SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, snd, lim.wmem); err != nil {
			return -1, -1, err
		}
		if s.Passcred {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
				return -1, -1, fmt.Errorf("unix socket:[%d]: set SO_PASSCRED: %w", s.Ino, err)
			}
		}
	}
	// Shutdown last: SHUT_WR would forbid the refill. On stream/seqpacket
	// the kernel mirrors each end's shutdown onto the other (SEND on one
	// is RCV on the other), so re-applying both ends' bits is idempotent.
	for i, s := range ends {
		if s.Shutdown == 0 {
			continue
		}
		// sk_shutdown bits (RCV=1, SEND=2) are shutdown(2)'s how + 1.
		if err := unix.Shutdown(fds[i], int(s.Shutdown)-1); err != nil {
			return -1, -1, fmt.Errorf("unix socket:[%d]: shutdown %d: %w", s.Ino, s.Shutdown, err)
		}
	}
	return fds[0], fds[1], nil
}

// checkPair validates the two descriptions before anything is created.
func checkPair(a, b *imagepb.UnixSocket) error {
	if a == nil || b == nil {
		return fmt.Errorf("unix pair: missing end")
	}
	if a.PeerIno != b.Ino || b.PeerIno != a.Ino || a.Ino == b.Ino {
		return fmt.Errorf("unix pair: socket:[%d] (peer %d) and socket:[%d] (peer %d) are not each other's peer", a.Ino, a.PeerIno, b.Ino, b.PeerIno)
	}
	if a.Type != b.Type {
		return fmt.Errorf("unix pair %d-%d: types differ (%d, %d)", a.Ino, b.Ino, a.Type, b.Type)
	}
	switch a.Type {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return fmt.Errorf("unix pair %d-%d: unsupported type %d", a.Ino, b.Ino, a.Type)
	}
	for _, s := range []*imagepb.UnixSocket{a, b} {
		if s.Name != "" && !autobound(s.Name) {
			return fmt.Errorf("unix socket:[%d]: bound sockets (%q) cannot be rebuilt as a pair", s.Ino, s.Name)
		}
		if s.Shutdown&^(rcvShutdown|sendShutdown) != 0 {
			return fmt.Errorf("unix socket:[%d]: bad shutdown bits %#x", s.Ino, s.Shutdown)
		}
		if s.State != 0 && s.State != tcpEstablished {
			return fmt.Errorf("unix socket:[%d]: state %d is not a connected pair", s.Ino, s.State)
		}
	}
	return nil
}

func queueBytes(s *imagepb.UnixSocket) int {
	n := 0
	for _, m := range s.Queue {
		n += len(m)
	}
	return n
}

// OpenFile returns our fd of the file with that id in files.img, for an
// SCM_RIGHTS message; the fd stays the caller's.
type OpenFile func(id uint32) (int, error)

// refill sends s's queue into it from the socket from: to its peer when
// to is nil (connected), else with sendto(to). For dgram/seqpacket every
// element is one message (empty ones included). Each element goes with its
// sender credentials and its in-flight files (opened with open; an image
// with in-flight files and a nil open is an error).
func refill(from int, s *imagepb.UnixSocket, to unix.Sockaddr, open OpenFile) error {
	if len(s.Queue) == 0 {
		return nil
	}
	total := queueBytes(s)
	raiseSndbuf(from, total, len(s.Queue))
	for i := range s.Queue {
		if err := sendElem(from, s, i, to, open, nil); err != nil {
			return err
		}
	}
	return nil
}

// raiseSndbuf makes room for the data plus per-message overhead (skb
// truesize), doubled for the kernel's accounting slack; raised with FORCE
// when possible.
func raiseSndbuf(from, total, msgs int) {
	need := min(2*(total+msgs*2048)+64<<10, math.MaxInt32-1)
	if cur, err := unix.GetsockoptInt(from, unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil && cur < need {
		if unix.SetsockoptInt(from, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, need/2) != nil {
			_ = unix.SetsockoptInt(from, unix.SOL_SOCKET, unix.SO_SNDBUF, need/2)
		}
	}
}

// ancillary builds the control data of element i: its sender credentials
// (any pid/uid/gid: we have CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID) and its
// in-flight files.
func ancillary(s *imagepb.UnixSocket, i int, open OpenFile) ([]byte, error) {
	var oob []byte
	if i < len(s.Creds) && s.Creds[i].GetPid() != 0 {
		c := s.Creds[i]
		oob = unix.UnixCredentials(&unix.Ucred{Pid: c.Pid, Uid: c.Uid, Gid: c.Gid})
	}
	if i >= len(s.Fds) || len(s.Fds[i].GetFileIds()) == 0 {
		return oob, nil
	}
	ids := s.Fds[i].FileIds
	if open == nil {
		return nil, fmt.Errorf("unix socket:[%d]: message %d carries %d files in flight, no opener", s.Ino, i, len(ids))
	}
	if len(ids) > 253 { // SCM_MAX_FD
		return nil, fmt.Errorf("unix socket:[%d]: message %d carries %d files in flight (at most 253)", s.Ino, i, len(ids))
	}
	fds := make([]int, len(ids))
	for j, id := range ids {
		fd, err := open(id)
		if err != nil {
			return nil, fmt.Errorf("unix socket:[%d]: message %d: file %d in flight: %w", s.Ino, i, id, err)
		}
		fds[j] = fd
	}
	return append(oob, unix.UnixRights(fds...)...), nil
}

// sendElem sends element i of s's queue. Stream data may go in several
// sends; the ancillary data goes with the first.
func sendElem(from int, s *imagepb.UnixSocket, i int, to unix.Sockaddr, open OpenFile, in InRoot) error {
	m := s.Queue[i]
	oob, err := ancillary(s, i, open)
	if err != nil {
		return err
	}
	return in.do(func() error {
		for first := true; first || (s.Type == unix.SOCK_STREAM && len(m) > 0); {
			n, err := unix.SendmsgN(from, m, oob, to, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("unix socket:[%d]: refill message %d (%d bytes left): %w", s.Ino, i, len(m), err)
			}
			if s.Type != unix.SOCK_STREAM && n != len(m) {
				return fmt.Errorf("unix socket:[%d]: refill message %d: sent %d of %d bytes", s.Ino, i, n, len(m))
			}
			m, oob, first = m[n:], nil, false
		}
		return nil
	})
}

// limits are the sysctl maxima for plain SO_SNDBUF/SO_RCVBUF (-1: unknown).
type limits struct{ wmem, rmem int }

func readLimits() limits {
	l := limits{-1, -1}
	if v, err := readSysctl("net/core/wmem_max"); err == nil {
		l.wmem = v
	}
	if v, err := readSysctl("net/core/rmem_max"); err == nil {
		l.rmem = v
	}
	return l
}

// setBuf sets a buffer size so that getsockopt reads back want. The kernel
// stores twice the value given (and at least its minimum), so half of want
// is passed. Above sysMax the plain option is silently capped, so the FORCE
// variant is used; with sysMax unknown (-1) it is tried after a mismatch.
func setBuf(fd int, ino uint64, name string, opt, forceOpt int, want uint32, sysMax int) error {
	if want == 0 {
		return nil
	}
	get := func() (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt) }
	cur, err := get()
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: getsockopt %s: %w", ino, name, err)
	}
	if cur == int(want) {
		return nil
	}
	half := int(want / 2)
	o, oname := opt, name
	if sysMax >= 0 && half > sysMax {
		o, oname = forceOpt, name+"FORCE"
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, half); err != nil {
		return fmt.Errorf("unix socket:[%d]: setsockopt %s=%d: %w", ino, oname, half, err)
	}
	if cur, err = get(); err == nil && cur != int(want) && o == opt && sysMax < 0 {
		oname = name + "FORCE"
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, forceOpt, half); err != nil {
			return fmt.Errorf("unix socket:[%d]: setsockopt %s=%d: %w", ino, oname, half, err)
		}
		cur, err = get()
	}
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: getsockopt %s: %w", ino, name, err)
	}
	if cur != int(want) {
		return fmt.Errorf("unix socket:[%d]: %s: set %d via %s, kernel reports %d", ino, name, want, oname, cur)
	}
	return nil
}
