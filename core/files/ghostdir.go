package files

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// StatGhostDir describes the deleted directory /proc/PID/<which> ("cwd",
// "root") leads to, for GhostDir.
func StatGhostDir(pid int, which string) (*imagepb.GhostDir, error) {
	var st unix.Stat_t
	p := procfs.PidPath(pid, which)
	if err := unix.Stat(p, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("%s: not a directory", p)
	}
	return &imagepb.GhostDir{Dev: st.Dev, Ino: st.Ino, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid}, nil
}

// GhostDir recreates, once per dumped inode, a deleted directory (a task's
// cwd or root, or an open directory fd) at path, its old name without
// " (deleted)", or beside it when the name is taken: an empty directory
// with the same mode and owner, removed again by FinishGhosts once the
// tasks are in it. It returns where it was made.
func (o *Opener) GhostDir(g *imagepb.GhostDir, path string) (string, error) {
	key := [2]uint64{g.Dev, g.Ino}
	if gi, ok := o.ghostBy[key]; ok {
		return gi.path, nil
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("deleted directory %q: not an absolute path", path)
	}
	made := path
	err := o.mkdirPath(made, g.Mode&0o7777)
	for i := 0; err == unix.EEXIST && i < 100; i++ {
		made = fmt.Sprintf("%s.ctr-cr-ghost.%d", path, i)
		err = o.mkdirPath(made, g.Mode&0o7777)
	}
	if err != nil {
		return "", fmt.Errorf("recreate deleted directory %s: %w", path, err)
	}
	o.ghostBy[key] = &ghostInode{path: made, hold: -1, dir: true}
	fd, err := o.openPath(made, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Fchown(fd, int(g.Uid), int(g.Gid))
		if err == nil {
			err = unix.Fchmod(fd, g.Mode&0o7777)
		}
		unix.Close(fd)
	}
	if err != nil {
		return "", fmt.Errorf("deleted directory %s: mode and owner: %w", path, err)
	}
	return made, nil
}

// mkdirPath makes directory path of the image (in the root set by
// SetRoot, if any).
func (o *Opener) mkdirPath(path string, mode uint32) error {
	if o.rootFd <= 0 {
		return unix.Mkdir(path, mode)
	}
	dir, name := filepath.Split(filepath.Clean(path))
	dfd, err := o.openPath(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return unix.Mkdirat(dfd, name, mode)
}

// rmdirPath removes directory path of the image (in the root, if any).
func (o *Opener) rmdirPath(path string) error {
	if o.rootFd <= 0 {
		return unix.Rmdir(path)
	}
	dir, name := filepath.Split(filepath.Clean(path))
	dfd, err := o.openPath(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
}

// ghostDirEntry opens a deleted directory fd: the directory is recreated
// (GhostDir) and opened with the entry's flags.
func (o *Opener) ghostDirEntry(f *imagepb.FileEntry) (int, error) {
	path, err := o.GhostDir(&imagepb.GhostDir{Dev: f.Dev, Ino: f.Ino, Mode: f.Mode, Uid: f.Uid, Gid: f.Gid}, f.Path)
	if err != nil {
		return -1, err
	}
	return o.openPath(path, openFlags(f), 0)
}
