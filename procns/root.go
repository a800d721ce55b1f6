package procns

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/threadns"
	"github.com/ctr-cr/ctr-cr/nsdump"
)

// MountNS returns core/restore's Options.MountNS for the saved tree: given
// the restored root (pid 1 of a new pid namespace, alone in a new mount
// namespace, a copy of the restorer's), it makes that namespace's root a
// bind of root (the restore's --root; the restorer's mounts are detached
// from it, so nothing of the host shows) and recreates the saved mounts on
// it, the external ones bound from the host paths of ext (KEY -> PATH).
func (st *State) MountNS(root string, ext map[string]string) func(pid int) error {
	return func(pid int) error {
		if err := pivotInto(pid, root); err != nil {
			return err
		}
		return st.ApplyMounts(pid, ext)
	}
}

// pivotInto makes a bind of root the root of pid's mount namespace (new,
// checked) with pivot_root, on a thread of ours that joins it and dies
// after: the bind is cloned here (open_tree) and attached there on a
// temporary directory, pid's namespace is made private, and the old root
// is detached.
func pivotInto(pid int, root string) error {
	root, err := absDir(root)
	if err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	ours, err1 := os.Readlink("/proc/self/ns/mnt")
	theirs, err2 := os.Readlink(nsdump.NSPath(pid, "mnt"))
	if err1 != nil || err2 != nil || ours == theirs {
		return fmt.Errorf("pid %d is not in a mount namespace of its own", pid)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, root, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("--root %s: open_tree: %w", root, err)
	}
	defer unix.Close(tree)
	ns, err := unix.Open(nsdump.NSPath(pid, "mnt"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ns)
	tmp, err := os.MkdirTemp("", "ctr-cr-root-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // on the restorer's side: the same directory
	// the thread, in pid's namespace, dies with the call
	return threadns.Locked(func() error { return pivotOnThread(tree, ns, tmp) })
}

func pivotOnThread(tree, ns int, tmp string) error {
	steps := []struct {
		what string
		fn   func() error
	}{
		{"unshare(CLONE_FS)", func() error { return unix.Unshare(unix.CLONE_FS) }},
		{"setns", func() error { return unix.Setns(ns, unix.CLONE_NEWNS) }},
		{"make / private", func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		{"attach the root", func() error {
			return unix.MoveMount(tree, "", unix.AT_FDCWD, tmp, unix.MOVE_MOUNT_F_EMPTY_PATH)
		}},
		{"chdir", func() error { return unix.Chdir(tmp) }},
		{"pivot_root", func() error { return unix.PivotRoot(".", ".") }},
		{"detach the old root", func() error { return unix.Unmount(".", unix.MNT_DETACH) }},
		{"chdir /", func() error { return unix.Chdir("/") }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return fmt.Errorf("root: %s: %w", s.what, err)
		}
	}
	return nil
}

// absDir returns dir made absolute and checks it is a directory.
func absDir(dir string) (string, error) {
	a, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(a)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s: not a directory", a)
	}
	return a, nil
}
