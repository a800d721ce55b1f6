package unixsk

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// detachedName reports a socket whose bound path no longer leads to it
// (deleted, or replaced by another file): it is bound where the path never
// shows on disk (bindScratch).
func detachedName(s *imagepb.UnixSocket) bool {
	return s.NameDeleted && s.Name != "" && s.Name[0] != '@'
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
