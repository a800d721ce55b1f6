package mounts

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsJoin is one namespace a helper thread joins.
type nsJoin struct {
	name string // entry under /proc/PID/ns
	flag int    // CLONE_NEW*
}

// inTarget runs fn on a new OS thread that has unshared its fs struct, joined
// the namespaces in extra and then the mount namespace of pid, and chrooted to
// pid's root (/proc/PID/root, opened before setns), so that absolute paths in
// fn resolve as they do for pid. setns(CLONE_NEWNS) fails with EINVAL while
// the fs struct is shared with other threads (every Go thread shares it), hence
// unshare(CLONE_FS) first. The thread stays locked: it exits with the
// goroutine and never runs other Go code in the target's namespaces.
func inTarget(pid int, extra []nsJoin, fn func() error) error {
	rootfd, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open root of pid %d: %w", pid, err)
	}
	defer unix.Close(rootfd)
	joins := append(append([]nsJoin{}, extra...), nsJoin{"mnt", unix.CLONE_NEWNS})
	fds := make([]int, 0, len(joins))
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, j := range joins {
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, j.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s namespace of pid %d: %w", j.name, pid, err)
		}
		fds = append(fds, fd)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare(CLONE_FS): %w", err)
			}
			for i, j := range joins {
				if err := unix.Setns(fds[i], j.flag); err != nil {
					return fmt.Errorf("setns into %s namespace of pid %d: %w", j.name, pid, err)
				}
			}
			if err := unix.Fchdir(rootfd); err != nil {
				return fmt.Errorf("fchdir to root of pid %d: %w", pid, err)
			}
			if err := unix.Chroot("."); err != nil {
				return fmt.Errorf("chroot to root of pid %d: %w", pid, err)
			}
			return fn()
		}()
	}()
	return <-errc
}

// openInRoot opens p (absolute, inside the current root) without following
// any symlink and without crossing into magic links.
func openInRoot(p string, flags uint64) (int, error) {
	return unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// isMountRoot reports whether fd is the root of a mount.
func isMountRoot(fd int) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, fmt.Errorf("statx: kernel does not report STATX_ATTR_MOUNT_ROOT")
	}
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}
