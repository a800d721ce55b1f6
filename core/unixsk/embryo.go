package unixsk

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// EmbryosWithData lists the clients waiting in listener l's accept queue
// (oldest first) that have sent data into their unaccepted connection
// (the kernel still charges it to the client: its write queue is not
// empty). d must be a fresh snapshot taken with the owners frozen.
func EmbryosWithData(l *imagepb.UnixSocket, d *Diag) []uint64 {
	var out []uint64
	for _, c := range l.Icons {
		if e, ok := d.Lookup(c); ok && e.WQueue > 0 {
			out = append(out, c)
		}
	}
	return out
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
	want := EmbryosWithData(l, d)
	if len(want) == 0 {
		return nil, nil
	}
	last := want[len(want)-1]
	e, _ := d.Lookup(l.Ino)
	for _, c := range e.Icons {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return accepted, fmt.Errorf("unix socket:[%d]: accept the waiting connection of socket:[%d] to read its data: %w", l.Ino, c, err)
		}
		accepted = append(accepted, fd)
		if c == last {
			break
		}
	}
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
	return accepted, nil
}
