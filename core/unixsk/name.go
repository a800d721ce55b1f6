package unixsk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// kernelDev encodes a device number the way the kernel keeps it internally
// (MKDEV: major<<20 | minor), which is what UNIX_DIAG_VFS reports.
func kernelDev(dev uint64) uint32 {
	return uint32(unix.Major(dev))<<20 | uint32(unix.Minor(dev))
}

// describeName records the facts of a bound path: the socket file inode
// the kernel holds, whether the path still leads to it (else the name was
// deleted, or replaced by another file), and the file's mode and owner.
func describeName(s *imagepb.UnixSocket, e DiagEntry, o Options) error {
	root := o.Root
	if s.Name == "" || s.Name[0] == '@' {
		return nil
	}
	s.VfsIno, s.VfsDev = uint64(e.vfsIno), e.vfsDev
	if s.Name[0] != '/' {
		return describeRelName(s, o)
	}
	var st unix.Stat_t
	err := statIn(root, s.Name, &st)
	switch {
	case err == nil && st.Ino == s.VfsIno && kernelDev(st.Dev) == s.VfsDev:
		s.NameMode, s.NameUid, s.NameGid = st.Mode, st.Uid, st.Gid
	case err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		s.NameDeleted = true
		s.NameMode = unix.S_IFSOCK | 0o777&^0o022 // unknown: the usual umask
	default:
		return fmt.Errorf("unix socket:[%d]: stat bound path %s: %w", s.Ino, s.Name, err)
	}
	return nil
}

// describeRelName records where a relative name leads to the socket's
// file: the task's cwd (o.Cwd), as a path in its root (o.Root). The name
// is refused when it does not lead there: the file was deleted, or the
// task changed its cwd since the bind; the two cannot be told apart.
func describeRelName(s *imagepb.UnixSocket, o Options) error {
	cwd, root := o.Cwd, o.Root
	if cwd == "" {
		cwd = "."
	}
	var st unix.Stat_t
	err := unix.Stat(cwd+"/"+s.Name, &st)
	if err != nil || st.Ino != s.VfsIno || kernelDev(st.Dev) != s.VfsDev {
		return unsupported(s.Ino, "socket bound to the relative path %q, which no longer leads to its file from the task's cwd (deleted, or the cwd changed since the bind)", s.Name)
	}
	dir, err := linkOrAbs(cwd)
	if err != nil {
		return fmt.Errorf("unix socket:[%d]: the cwd its relative name %q resolves in: %w", s.Ino, s.Name, err)
	}
	if root != "" {
		r, err := linkOrAbs(root)
		if err != nil {
			return fmt.Errorf("unix socket:[%d]: root: %w", s.Ino, err)
		}
		if r != "/" {
			rel, err := filepath.Rel(r, dir)
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return unsupported(s.Ino, "socket bound to the relative path %q from %s, outside the task's root %s", s.Name, dir, r)
			}
			dir = "/" + rel
		}
	}
	s.BindDir = filepath.Clean(dir)
	s.NameMode, s.NameUid, s.NameGid = st.Mode, st.Uid, st.Gid
	return nil
}

// linkOrAbs is where a /proc/PID/{cwd,root} link points, or p itself
// (absolute) when it is a plain directory.
func linkOrAbs(p string) (string, error) {
	l, err := os.Readlink(p)
	if errors.Is(err, unix.EINVAL) {
		return filepath.Abs(p)
	}
	return l, err
}

// statIn stats path (following symlinks) as seen from root ("": ours),
// never leaving it (openat2 RESOLVE_IN_ROOT).
func statIn(root, path string, st *unix.Stat_t) error {
	if root == "" {
		return unix.Stat(path, st)
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	for {
		fd, err := unix.Openat2(rfd, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fstat(fd, st)
	}
}

// ListenerOf returns the listening socket whose accept queue holds the
// connection of client ino (the kernel reports such a client with state
// ESTABLISHED and no peer inode: its peer, the embryonic server end, has
// no file).
func (d *Diag) ListenerOf(ino uint64) (uint64, bool) {
	if d == nil {
		return 0, false
	}
	l, ok := d.listenerOf[ino]
	return l, ok
}

// sockaddr is the address for an image name ("@x": abstract).
func sockaddr(name string) *unix.SockaddrUnix { return &unix.SockaddrUnix{Name: name} }

// bindName binds fd to s.Name (a name still on disk, or abstract; deleted
// names go to bindScratch). A path still occupied by a socket file that
// nobody listens on any more (left behind by the dumped, now dead, owner:
// connect answers ECONNREFUSED) is removed first; a path held by a live
// socket or by another kind of file is an error. The socket file gets its
// dumped mode and owner back. (unlink is always "" now: kept for the
// callers.)
func bindName(fd int, s *imagepb.UnixSocket) (unlink string, err error) {
	name := s.Name
	if name[0] != '@' {
		if name, err = freePath(s); err != nil {
			return "", err
		}
	}
	if err := unix.Bind(fd, sockaddr(name)); err != nil {
		if errors.Is(err, unix.EADDRINUSE) && name[0] == '@' {
			return "", fmt.Errorf("unix socket:[%d]: bind %q: abstract name in use by another socket: %w", s.Ino, name, err)
		}
		return "", fmt.Errorf("unix socket:[%d]: bind %q: %w", s.Ino, name, err)
	}
	if name[0] == '@' {
		return "", nil
	}
	if s.NameMode != 0 {
		if err := unix.Chmod(name, s.NameMode&0o7777); err != nil {
			return "", fmt.Errorf("unix socket:[%d]: chmod %s: %w", s.Ino, name, err)
		}
		if err := unix.Lchown(name, int(s.NameUid), int(s.NameGid)); err != nil {
			return "", fmt.Errorf("unix socket:[%d]: chown %s: %w", s.Ino, name, err)
		}
	}
	return "", nil
}

// freePath returns where to bind a path name (see bindName).
func freePath(s *imagepb.UnixSocket) (string, error) {
	var st unix.Stat_t
	err := unix.Lstat(s.Name, &st)
	if errors.Is(err, unix.ENOENT) {
		return s.Name, nil
	}
	if err != nil {
		return "", fmt.Errorf("unix socket:[%d]: stat %s: %w", s.Ino, s.Name, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFSOCK && !liveSocket(s.Name, int(s.Type)) {
		if err := os.Remove(s.Name); err != nil && !os.IsNotExist(err) {
			return "", fmt.Errorf("unix socket:[%d]: remove the stale socket file %s: %w", s.Ino, s.Name, err)
		}
		return s.Name, nil
	}
	what := "a live socket"
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		what = fmt.Sprintf("a file of mode %#o", st.Mode&unix.S_IFMT)
	}
	return "", fmt.Errorf("unix socket:[%d]: cannot bind %s: the path is taken by %s", s.Ino, s.Name, what)
}

// liveSocket reports whether some socket still listens (or, for dgram,
// is bound) at path: only ECONNREFUSED says the file is a leftover.
func liveSocket(path string, typ int) bool {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, sockaddr(path))
	return !errors.Is(err, unix.ECONNREFUSED)
}
