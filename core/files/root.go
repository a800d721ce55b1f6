package files

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// SetRoot makes the opener resolve the image's paths as process pid sees
// them (e.g. a container's init) instead of in ctr-cr's own root: files
// are opened in /proc/PID/root with openat2 RESOLVE_IN_ROOT, so that ".."
// and absolute symlinks inside it never lead out of it; the path names of
// unix sockets (bind, connect) resolve on a thread that entered the
// process's mount namespace and root (internal/threadns.Root).
func (o *Opener) SetRoot(pid int) error {
	root := fmt.Sprintf("/proc/%d/root", pid)
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("root %s: %w", root, err)
	}
	if o.rootFd > 0 {
		unix.Close(o.rootFd)
	}
	o.rootFd, o.rootPid = fd, pid
	return nil
}

// inRoot returns how to run the path operations of unix sockets: on a
// thread in the root's mount namespace (close it when done), or here.
func (o *Opener) inRoot() (in func(fn func() error) error, done func(), err error) {
	if o.rootPid == 0 {
		return nil, func() {}, nil
	}
	r, err := threadns.EnterRoot(o.rootPid)
	if err != nil {
		return nil, nil, err
	}
	return r.Do, r.Close, nil
}

// openPath opens path of the image (in the root set by SetRoot, if any).
func (o *Opener) openPath(path string, flags int, mode uint32) (int, error) {
	if o.rootFd <= 0 {
		return unix.Open(path, flags, mode)
	}
	for {
		fd, err := unix.Openat2(o.rootFd, path, &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: unix.RESOLVE_IN_ROOT})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// statPath stats path of the image (following symlinks, in the root).
func (o *Opener) statPath(path string, st *unix.Stat_t) error {
	if o.rootFd <= 0 {
		return unix.Stat(path, st)
	}
	fd, err := o.openPath(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fstat(fd, st)
}

// removePath unlinks path of the image (in the root set by SetRoot): its
// directory is opened in the root, the name removed there.
func (o *Opener) removePath(path string) error {
	if o.rootFd <= 0 {
		return unix.Unlink(path)
	}
	dir, name := filepath.Split(path)
	dfd, err := o.openPath(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return unix.Unlinkat(dfd, name, 0)
}
