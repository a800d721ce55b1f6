package unixsk

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// peerGone tells whether the socket's peer was closed, and the dead peer's
// name. The kernel keeps a closed peer attached (unix_peer still points to
// it, so getpeername answers with its name) but sock_diag reports it as
// peer 0 since it has no inode any more; the state stays ESTABLISHED.
//
//   - stream/seqpacket: peer 0, ESTABLISHED, not waiting in an accept queue
//     (a client whose unaccepted connection died with its listener is in
//     the same state);
//   - dgram: peer 0, ESTABLISHED and getpeername succeeds (a bound dgram
//     socket others connected to is ESTABLISHED with peer 0 too, but has
//     no peer of its own: getpeername answers ENOTCONN).
func peerGone(fd int, e DiagEntry, d *Diag) (bool, string, error) {
	if e.State != tcpEstablished || e.PeerIno != 0 {
		return false, "", nil
	}
	if _, ok := d.ListenerOf(e.Ino); ok {
		return false, "", nil
	}
	name, err := peerName(fd)
	if errors.Is(err, unix.ENOTCONN) && e.Type == unix.SOCK_DGRAM {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("unix socket:[%d]: getpeername of the closed peer: %w", e.Ino, err)
	}
	if name != "" && name[0] != '@' && name[0] != '/' {
		return false, "", unsupported(e.Ino, "peer is gone and was bound to the relative path %q", name)
	}
	return true, name, nil
}

// peerName is getpeername in the image's form (see decodeName): "" for an
// unbound peer, where x/sys/unix would answer "@" (it cannot tell an
// unnamed address from the empty abstract name).
func peerName(fd int) (string, error) {
	var sa unix.RawSockaddrUnix
	l := uint32(unix.SizeofSockaddrUnix)
	for {
		_, _, e := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return "", e
		}
		break
	}
	if sa.Family != unix.AF_UNIX {
		return "", fmt.Errorf("not a unix address (family %d)", sa.Family)
	}
	const off = 2 // sizeof(sa_family_t)
	if l <= off {
		return "", nil
	}
	n := min(int(l)-off, len(sa.Path))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(sa.Path[i])
	}
	return decodeName(b), nil
}

// dumpSockErr records a pending socket error without consuming it (SO_ERROR
// would clear it): poll reports POLLERR while sk_err is set, and the only
// error af_unix ever sets there is ECONNRESET (a stream/seqpacket peer
// closed with data unread; a dgram peer disconnecting with data unread).
// Restore reproduces it for a closed stream peer only; elsewhere it is
// refused.
func dumpSockErr(fd int, s *imagepb.UnixSocket) error {
	pending, err := pendingErr(fd)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: %w", s.Ino, err)
	}
	if !pending {
		return nil
	}
	if !s.PeerGone || s.Type == unix.SOCK_DGRAM {
		return unsupported(s.Ino, "pending socket error (SO_ERROR=ECONNRESET) on a %s socket whose peer is not closed", typeWord(s.Type))
	}
	if s.Type == unix.SOCK_SEQPACKET {
		// a record socket reports sk_err before its queue: peeking the
		// queue would consume the error the task has yet to see
		return unsupported(s.Ino, "seqpacket socket whose peer was closed with data unread: pending ECONNRESET (SO_ERROR) that reading its queue would consume")
	}
	s.ErrReset = true
	return nil
}

// pendingErr reports POLLERR on fd: sk_err is set.
func pendingErr(fd int) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(fd)}}
	for {
		_, err := unix.Poll(pfd, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll: %w", err)
		}
		return pfd[0].Revents&unix.POLLERR != 0, nil
	}
}

// checkGoneQueue refuses the queue of a dgram socket whose peer is gone
// when restore cannot send it again: restore refills it from a transient
// peer bound to the dead peer's name, so every datagram must come from
// that name.
func checkGoneQueue(s *imagepb.UnixSocket) error {
	if s.Type != unix.SOCK_DGRAM {
		return nil
	}
	for i := range s.Queue {
		from := ""
		if i < len(s.Senders) {
			from = s.Senders[i]
		}
		if from != s.PeerName {
			return unsupported(s.Ino, "dgram socket whose peer %s is gone has datagram %d from another sender (%s) queued", nameOrNone(s.PeerName), i, nameOrNone(from))
		}
	}
	return nil
}

func nameOrNone(n string) string {
	if n == "" {
		return "(unbound)"
	}
	return fmt.Sprintf("%q", n)
}

func typeWord(t int32) string {
	switch t {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "dgram"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	}
	return fmt.Sprintf("type-%d", t)
}
