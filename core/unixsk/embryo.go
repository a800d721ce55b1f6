package unixsk

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// EmbryosWithData lists the clients waiting in listener l's accept queue
// (oldest first) that have sent data into their unaccepted connection
// (the kernel still charges it to the client: its write queue is not
// empty). d must be a fresh snapshot taken with the owners frozen.
//
// A client that was closed while waiting is reported as inode 0 (its
// connection stays in the queue with what it sent, then EOF); it is listed
// too: what it sent can only be read by accepting its connection.
func EmbryosWithData(l *imagepb.UnixSocket, d *Diag) []uint64 {
	var out []uint64
	for _, c := range l.Icons {
		if e, ok := d.Lookup(c); c == 0 || ok && e.WQueue > 0 {
			out = append(out, c)
		}
	}
	return out
}

// lastToAccept is the index in icons of the last connection to accept to
// read every unaccepted connection's data (-1: none).
func lastToAccept(icons []uint64, d *Diag) int {
	last := -1
	for i, c := range icons {
		if e, ok := d.Lookup(c); c == 0 || ok && e.WQueue > 0 {
			last = i
		}
	}
	return last
}

// CaptureEmbryos reads the data that waiting clients sent into their
// unaccepted connections on listener l (lfd: our copy of it) and records it
// in each client's Embryo (clients: the waiting clients of the image, by
// inode).
//
// This is DESTRUCTIVE: the kernel offers no way to read an unaccepted
// connection but to accept it, so the connections of the accept queue, up
// to the last one with data, are accepted from our copy and taken from the
// target for good (returned: our fds of them, for the caller to close once
// the image is written). Call it only when the target will not run again
// (the dump kills it) and as late as possible. Connections are matched to
// clients by peer inode; a mismatch (the queue changed) is an error.
func CaptureEmbryos(lfd int, l *imagepb.UnixSocket, clients map[uint64]*imagepb.UnixSocket, o Options) (accepted []int, err error) {
	d, err := ReadDiag()
	if err != nil {
		return nil, err
	}
	e, _ := d.Lookup(l.Ino)
	last := lastToAccept(e.Icons, d)
	if last < 0 {
		return nil, nil
	}
	for _, c := range e.Icons[:last+1] {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return accepted, fmt.Errorf("unix socket:[%d]: accept the waiting connection of socket:[%d] to read its data: %w", l.Ino, c, err)
		}
		accepted = append(accepted, fd)
	}
	l.GoneIcons = nil
	if d, err = ReadDiag(); err != nil {
		return accepted, err
	}
	for i, fd := range accepted {
		c := e.Icons[i]
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return accepted, fmt.Errorf("unix socket:[%d]: fstat accepted connection: %w", l.Ino, err)
		}
		se, ok := d.Lookup(st.Ino)
		if !ok || se.PeerIno != c {
			return accepted, fmt.Errorf("unix socket:[%d]: accepted connection %d is not the one of socket:[%d] (peer %d): the accept queue changed", l.Ino, i, c, se.PeerIno)
		}
		if c == 0 {
			g, err := captureGoneClient(fd, st.Ino, l.Type, se, o)
			if err != nil {
				return accepted, err
			}
			l.GoneIcons = append(l.GoneIcons, g)
			continue
		}
		cl := clients[c]
		if cl == nil {
			continue // a client outside the dump: dropped at restore
		}
		s := &imagepb.UnixSocket{Ino: st.Ino, Type: l.Type}
		if err := dumpQueue(fd, s, se, o); err != nil {
			return accepted, fmt.Errorf("unaccepted connection of socket:[%d]: %w", c, err)
		}
		cl.Embryo = &imagepb.UnixSocket{Queue: s.Queue, Creds: s.Creds, Fds: s.Fds}
	}
	if n := zeroIcons(l.Icons); n != len(l.GoneIcons) {
		return accepted, fmt.Errorf("unix socket:[%d]: %d waiting clients were closed at dump but %d now: the accept queue changed", l.Ino, n, len(l.GoneIcons))
	}
	return accepted, nil
}

// captureGoneClient records an accepted connection whose client was closed
// while it waited: what the client sent and its name.
func captureGoneClient(fd int, ino uint64, typ int32, se DiagEntry, o Options) (*imagepb.UnixSocket, error) {
	name, err := peerName(fd)
	if err != nil {
		return nil, fmt.Errorf("unaccepted connection socket:[%d] of a closed client: getpeername: %w", ino, err)
	}
	if name != "" && name[0] != '/' && name[0] != '@' {
		return nil, unsupported(ino, "unaccepted connection of a closed client bound to the relative path %q", name)
	}
	s := &imagepb.UnixSocket{Ino: ino, Type: typ}
	if pending, err := pendingErr(fd); err != nil || pending {
		return nil, errors.Join(err, unsupported(ino, "unaccepted connection of a closed client with a pending socket error"))
	}
	if err := dumpQueue(fd, s, se, o); err != nil {
		return nil, fmt.Errorf("unaccepted connection of a closed client: %w", err)
	}
	return &imagepb.UnixSocket{Type: typ, Queue: s.Queue, Creds: s.Creds, Fds: s.Fds, PeerName: name}, nil
}

// zeroIcons counts the closed clients (inode 0) of an accept queue.
func zeroIcons(icons []uint64) int {
	n := 0
	for _, c := range icons {
		if c == 0 {
			n++
		}
	}
	return n
}
