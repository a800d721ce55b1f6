package files

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// SetRoot makes the opener resolve the image's paths inside root (e.g.
// /proc/PID/root of a container's init) instead of in ctr-cr's own root:
// with openat2 RESOLVE_IN_ROOT, so that ".." and absolute symlinks inside
// it never lead out of it.
func (o *Opener) SetRoot(root string) error {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("root %s: %w", root, err)
	}
	if o.rootFd > 0 {
		unix.Close(o.rootFd)
	}
	o.rootFd = fd
	return nil
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
