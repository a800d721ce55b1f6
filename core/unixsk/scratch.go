package unixsk

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// detachedName reports a socket whose bound path no longer leads to it
// (deleted, or replaced by another file): it is bound where the path never
// shows on disk (bindScratch).
//
// So is the path name of a stream/seqpacket socket whose peer is gone and
// which is not rebuilt by accept: most likely an accepted connection whose
// listener is outside the image (its name and file are the listener's, so
// binding it at the path would take the listener's place); a socket that
// bound itself before connecting cannot be connected to either, so its
// file left on disk (stale) reads the same to everyone.
func detachedName(s *imagepb.UnixSocket) bool {
	if s.Name == "" || s.Name[0] == '@' {
		return false
	}
	return s.NameDeleted || s.PeerGone && s.Type != unix.SOCK_DGRAM && s.State != tcpListen
}

// inOf is where the bound name of socket ino resolves: a deleted name in
// the scratch directory it was bound in, else where the image's paths do.
func (b *builder) inOf(ino uint64) InRoot {
	if in, ok := b.where[ino]; ok {
		return in
	}
	return b.in
}

// bindScratch binds a socket whose name was deleted so that getsockname and
// /proc/net/unix report exactly that name while no file appears at the
// path: the name is bound in a scratch directory taken as root by a
// throwaway thread (see onScratchThread), with the path's directories made
// there. The image's sockets that connect or send to it do so through the
// same scratch root (inOf); the directory is removed at the end of Build,
// which leaves the name deleted as it was.
func (b *builder) bindScratch(fd int, s *imagepb.UnixSocket) error {
	if b.scratch == "" {
		dir, err := os.MkdirTemp("", "ctr-cr-unixsk-")
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: scratch directory for its deleted name: %w", s.Ino, err)
		}
		b.scratch = dir
	}
	root := b.scratch
	in := InRoot(func(fn func() error) error { return onScratchThread(root, fn) })
	name := s.Name
	err := in.do(func() error {
		if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
			return err
		}
		return unix.Bind(fd, sockaddr(name))
	})
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: bind its deleted name %q: %w", s.Ino, name, err)
	}
	if b.where == nil {
		b.where = map[uint64]InRoot{}
	}
	b.where[s.Ino] = in
	b.bound[s.Ino] = name
	return nil
}

// cwdIn runs functions where a relative name bound from dir resolves: in
// dir of the image's root (in). The thread of in has a cwd of its own (it
// unshared its fs), which is put back to its root afterwards; without in,
// a throwaway thread is used (see onScratchThread), so that the process's
// cwd never changes.
func cwdIn(in InRoot, dir string) InRoot {
	if in == nil {
		return func(fn func() error) error { return onCwdThread(dir, fn) }
	}
	return func(fn func() error) error {
		return in(func() error {
			if err := unix.Chdir(dir); err != nil {
				return fmt.Errorf("chdir %s: %w", dir, err)
			}
			defer unix.Chdir("/")
			return fn()
		})
	}
}

// onCwdThread runs fn on a fresh OS thread whose cwd is dir (dropped
// after: threadns.Locked).
func onCwdThread(dir string, fn func() error) error {
	return threadns.Locked(func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare CLONE_FS: %w", err)
		}
		if err := unix.Chdir(dir); err != nil {
			return fmt.Errorf("chdir %s: %w", dir, err)
		}
		return fn()
	})
}
