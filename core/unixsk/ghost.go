package unixsk

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// ghost is the transient peer of a socket whose peer is gone: it stands in
// for the dead peer while the socket is rebuilt and is closed last, which
// leaves the socket exactly as the dead peer did (stream/seqpacket: shut
// down both ways, its queue readable then EOF; dgram: connected to a dead
// peer, whose first send answers ECONNREFUSED), with getpeername naming
// the dead peer.
type ghost struct {
	fd       int                 // our fd of the transient peer (-1 once closed)
	listener *imagepb.UnixSocket // the socket is accepted from it
	server   *imagepb.UnixSocket // the transient peer is accepted from it
}

// ghostCreate makes socket s and its transient peer. A stream/seqpacket
// socket carrying the name of a listener of the image was accepted from
// it: it is accepted again (ghostAccept), so that it shares the
// listener's name; one whose dead peer carried a listener's name (it had
// connected to that listener) connects to it again and the transient
// peer is the accepted end. Else the two come from socketpair. s is bound
// to its own name by bindAll like any other named socket (binding a
// connected socket is allowed).
func (b *builder) ghostCreate(s *imagepb.UnixSocket) error {
	if b.ghosts == nil {
		b.ghosts = map[uint64]ghost{}
	}
	if s.Type != unix.SOCK_DGRAM {
		if l := b.listenerNamed(s); l != nil {
			fd, err := unix.Socket(unix.AF_UNIX, int(s.Type)|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("unix socket:[%d]: transient peer: socket: %w", s.Ino, err)
			}
			b.ghosts[s.Ino] = ghost{fd: fd, listener: l}
			return nil
		}
		if l := b.listenerCalled(s.PeerName, s.Type); l != nil {
			b.ghosts[s.Ino] = ghost{fd: -1, server: l}
			return b.socket(s)
		}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, int(s.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: socketpair with a transient peer: %w", s.Ino, err)
	}
	b.fd[s.Ino] = fds[0]
	b.ghosts[s.Ino] = ghost{fd: fds[1]}
	b.noteDefaults(s)
	return nil
}

// ghostAccept connects the transient peers of accepted sockets to their
// listener and accepts the sockets, then binds every transient peer to
// the dead peer's name (a path never on disk: see bindDetached).
func (b *builder) ghostAccept() error {
	for _, s := range b.socks {
		g, ok := b.ghosts[s.Ino]
		if !ok || g.server == nil {
			continue
		}
		l := g.server
		if err := b.connectToSock(b.fd[s.Ino], s.Ino, l.Ino); err != nil {
			return err
		}
		nfd, _, err := unix.Accept4(b.fd[l.Ino], unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: accept its transient peer on %q: %w", s.Ino, l.Name, err)
		}
		g.fd = nfd
		b.ghosts[s.Ino] = g
	}
	for _, s := range b.socks {
		g, ok := b.ghosts[s.Ino]
		if !ok || g.listener == nil {
			continue
		}
		l := g.listener
		if err := b.connectToSock(g.fd, s.Ino, l.Ino); err != nil {
			return fmt.Errorf("transient peer of %w", err)
		}
		nfd, _, err := unix.Accept4(b.fd[l.Ino], unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: accept on %q: %w", s.Ino, l.Name, err)
		}
		b.fd[s.Ino] = nfd
		if err := unix.SetNonblock(nfd, false); err != nil {
			return err
		}
		b.noteDefaults(s)
	}
	for _, s := range b.socks {
		g, ok := b.ghosts[s.Ino]
		if !ok || s.PeerName == "" || g.server != nil {
			continue // (an accepted peer has its listener's name)
		}
		if err := bindDetached(g.fd, s.PeerName); err != nil {
			return fmt.Errorf("unix socket:[%d]: bind its transient peer to the dead peer's name %q: %w", s.Ino, s.PeerName, err)
		}
	}
	return nil
}

// listenerCalled finds a listener of the image of that type bound to name.
func (b *builder) listenerCalled(name string, typ int32) *imagepb.UnixSocket {
	if name == "" {
		return nil
	}
	for _, l := range b.socks {
		if l.State == tcpListen && l.Type == typ && l.Name == name {
			return l
		}
	}
	return nil
}

// ghostRefill refills the queues of the sockets whose peer is gone from
// their transient peer.
func (b *builder) ghostRefill() error {
	for _, s := range b.socks {
		g, ok := b.ghosts[s.Ino]
		if !ok {
			continue
		}
		if err := setBuf(b.fd[s.Ino], s.Ino, "SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, s.Rcvbuf, b.lim.rmem); err != nil {
			return err
		}
		if err := refill(g.fd, s, nil, b.open); err != nil {
			return err
		}
	}
	return nil
}

// ghostClose closes the transient peers, last. A pending ECONNRESET comes
// back the way it came: the kernel sets it when the peer is closed with
// data unread in its queue, so one byte is sent to the transient peer first.
func (b *builder) ghostClose() error {
	for _, s := range b.socks {
		g, ok := b.ghosts[s.Ino]
		if !ok || g.fd < 0 {
			continue
		}
		if s.ErrReset {
			if _, err := unix.SendmsgN(b.fd[s.Ino], []byte{0}, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL); err != nil {
				return fmt.Errorf("unix socket:[%d]: leave data unread in its transient peer (for ECONNRESET): %w", s.Ino, err)
			}
		}
		err := unix.Close(g.fd)
		g.fd = -1
		b.ghosts[s.Ino] = g
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: close its transient peer: %w", s.Ino, err)
		}
	}
	return nil
}

// bindDetached binds fd to name so that getsockname and /proc/net/unix
// report exactly name, without a socket file appearing at that path: an
// abstract name is bound as is; a path is bound on a throwaway thread
// whose root is a fresh empty directory (its directories made there), which
// is removed afterwards, socket file included. The thread unshares its fs
// (root, cwd) from the process, so it is never used again: its goroutine
// ends locked, which ends the thread.
func bindDetached(fd int, name string) error {
	if name == "" || name[0] == '@' {
		return unix.Bind(fd, sockaddr(name))
	}
	tmp, err := os.MkdirTemp("", "ctr-cr-unixsk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	return onScratchThread(tmp, func() error {
		if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
			return err
		}
		return unix.Bind(fd, sockaddr(name))
	})
}

// onScratchThread runs fn on a fresh OS thread chrooted to root, with "/"
// as its cwd (relative names resolve there too); the thread is dropped
// after (threadns.Locked).
func onScratchThread(root string, fn func() error) error {
	return threadns.Locked(func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare CLONE_FS: %w", err)
		}
		if err := unix.Chroot(root); err != nil {
			return fmt.Errorf("chroot %s: %w", root, err)
		}
		if err := unix.Chdir("/"); err != nil {
			return err
		}
		return fn()
	})
}

// goneClient puts back, in listener l's accept queue, the connection of a
// client that was closed while it waited: a transient client bound to the
// dead one's name connects, sends what it had sent and is closed.
func (b *builder) goneClient(l, g *imagepb.UnixSocket) error {
	fd, err := unix.Socket(unix.AF_UNIX, int(l.Type)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: closed waiting client: socket: %w", l.Ino, err)
	}
	defer unix.Close(fd)
	if g.PeerName != "" {
		if err := bindDetached(fd, g.PeerName); err != nil {
			return fmt.Errorf("unix socket:[%d]: bind its closed waiting client to %q: %w", l.Ino, g.PeerName, err)
		}
	}
	if err := b.connectToSock(fd, l.Ino, l.Ino); err != nil {
		return fmt.Errorf("closed waiting client of %w", err)
	}
	e := &imagepb.UnixSocket{Ino: l.Ino, Type: l.Type, Queue: g.Queue, Creds: g.Creds, Fds: g.Fds}
	if err := refill(fd, e, nil, b.open); err != nil {
		return fmt.Errorf("closed waiting client's data on %w", err)
	}
	return nil
}

// validateGoneIcons checks a listener's closed waiting clients against its
// accept queue (one per icon 0).
func validateGoneIcons(s *imagepb.UnixSocket) error {
	if n := zeroIcons(s.Icons); n != len(s.GoneIcons) || n > 0 && s.State != tcpListen {
		return fmt.Errorf("unix socket:[%d]: %d closed waiting clients in the accept queue but %d described", s.Ino, n, len(s.GoneIcons))
	}
	for _, g := range s.GoneIcons {
		if g == nil {
			return fmt.Errorf("unix socket:[%d]: empty closed waiting client", s.Ino)
		}
		n := len(g.Queue)
		if len(g.Creds) != 0 && len(g.Creds) != n || len(g.Fds) != 0 && len(g.Fds) != n {
			return fmt.Errorf("unix socket:[%d]: closed waiting client: %d queued elements but %d creds, %d fd lists", s.Ino, n, len(g.Creds), len(g.Fds))
		}
		if len(g.PeerName) > 107 || g.PeerName != "" && g.PeerName[0] != '/' && g.PeerName[0] != '@' {
			return fmt.Errorf("unix socket:[%d]: closed waiting client: bad name %q", s.Ino, g.PeerName)
		}
	}
	return nil
}
