package files

import (
	"errors"
	"fmt"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// ghostInode is a recreated ghost file: one per dumped inode, shared by
// every fd and mapping of it.
type ghostInode struct {
	path  string // named ghost: where it was recreated (unlinked by FinishGhosts); "" for an O_TMPFILE
	hold  int    // our read-only fd of the inode (the O_TMPFILE's only name is /proc/self/fd/hold)
	flags uint32 // inode flags to set once every fd is open (FS_IOC_SETFLAGS)
	done  bool   // unlinked and flags set
	dir   bool   // a deleted directory (GhostDir): removed with rmdir
}

// reopen opens the recreated inode again with flags (no creation).
func (g *ghostInode) reopen(o *Opener, flags int) (int, error) {
	if g.path == "" {
		return unix.Open(fmt.Sprintf("/proc/self/fd/%d", g.hold), flags&^(oTmpfile|unix.O_DIRECTORY), 0)
	}
	return o.openPath(g.path, flags, 0)
}

// remove takes the recreated name away again.
func (g *ghostInode) remove(o *Opener) error {
	if g.dir {
		return o.rmdirPath(g.path)
	}
	return o.removePath(g.path)
}

// ghost recreates a file that was deleted while open (once per inode) and
// opens it for f. A named ghost is created at its old path when free (so
// /proc/PID/fd shows the same name) and unlinked again by FinishGhosts; an
// O_TMPFILE one is made again with O_TMPFILE in its directory, by the
// entry that opened it with its very flags (the kernel names it
// "<dir>/#<new ino>"). Contents go back extent by extent (holes stay
// holes), then mode and owner.
func (o *Opener) ghost(f *imagepb.FileEntry) (int, error) {
	if f.Mode&unix.S_IFMT == unix.S_IFDIR {
		return o.ghostDirEntry(f)
	}
	key := [2]uint64{f.Dev, f.Ino}
	if g, ok := o.ghostBy[key]; ok {
		return o.openGhost(f, g)
	}
	g := &ghostInode{hold: -1, flags: f.InodeFlags}
	var err error
	var creator *imagepb.FileEntry // the O_TMPFILE open, whose fd is the one created
	if f.GhostTmpfile {
		creator = o.tmpfileCreator(f)
		err = o.makeTmpfile(g, f, creator)
	} else {
		err = o.makeNamedGhost(g, f)
	}
	if err != nil {
		if g.hold >= 0 {
			unix.Close(g.hold)
		}
		return -1, err
	}
	o.ghostBy[key] = g
	if err := fillGhost(g.hold, f); err != nil {
		return -1, err
	}
	// owner first: chown clears set-user/group-id bits
	if err := unix.Fchown(g.hold, int(f.Uid), int(f.Gid)); err != nil {
		return -1, fmt.Errorf("deleted file: chown: %w", err)
	}
	if err := unix.Fchmod(g.hold, f.Mode&0o7777); err != nil {
		return -1, fmt.Errorf("deleted file: chmod: %w", err)
	}
	if err := g.holdReadOnly(); err != nil {
		return -1, err
	}
	if creator != nil {
		cfd := o.open[creator.Id]
		if creator.Pos != 0 {
			if _, err := unix.Seek(cfd, creator.Pos, 0); err != nil {
				return -1, err
			}
		}
		if creator.Id == f.Id {
			delete(o.open, f.Id) // Open records it
			return cfd, nil
		}
	}
	return o.openGhost(f, g)
}

// holdReadOnly trades our writable fd of the filled inode for a read-only
// one: a file open for writing cannot become a task's exe (PR_SET_MM_MAP
// denies write access to it, EACCES).
func (g *ghostInode) holdReadOnly() error {
	ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", g.hold), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("deleted file: reopen read-only: %w", err)
	}
	unix.Close(g.hold)
	g.hold = ro
	return nil
}

// tmpfileCreator returns the entry of the inode of f that was opened with
// O_TMPFILE (its open made the inode), or nil when no fd of it is left.
func (o *Opener) tmpfileCreator(f *imagepb.FileEntry) *imagepb.FileEntry {
	if f.Flags&oTmpfile != 0 {
		return f
	}
	for _, e := range o.files {
		if e.Deleted && e.Dev == f.Dev && e.Ino == f.Ino && e.Flags&oTmpfile != 0 {
			return e
		}
	}
	return nil
}

// makeTmpfile creates the O_TMPFILE in f's directory, with creator's open
// flags when there is one (its fd becomes creator's), and holds it O_RDWR.
// It is made without O_EXCL (the kernel does not keep O_EXCL in the file's
// flags, so the dump cannot tell): it stays linkable.
func (o *Opener) makeTmpfile(g *ghostInode, f, creator *imagepb.FileEntry) error {
	dir := filepath.Dir(f.Path)
	flags := unix.O_TMPFILE | unix.O_RDWR | unix.O_CLOEXEC
	if creator != nil {
		flags = openFlags(creator) | unix.O_TMPFILE
	}
	fd, err := o.openPath(dir, flags, f.Mode&0o7777)
	if err != nil {
		return fmt.Errorf("recreate O_TMPFILE in %s: %w", dir, err)
	}
	if creator == nil {
		g.hold = fd
		return nil
	}
	o.open[creator.Id] = fd
	g.hold, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("reopen O_TMPFILE: %w", err)
	}
	return nil
}

// makeNamedGhost creates the ghost at its old path, or beside it when the
// name is taken again.
func (o *Opener) makeNamedGhost(g *ghostInode, f *imagepb.FileEntry) error {
	path := f.Path
	fd, err := o.openPath(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, f.Mode&0o7777)
	for i := 0; err == unix.EEXIST && i < 100; i++ {
		path = fmt.Sprintf("%s.ctr-cr-ghost.%d", f.Path, i)
		fd, err = o.openPath(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, f.Mode&0o7777)
	}
	if err != nil {
		return fmt.Errorf("recreate deleted file: %w", err)
	}
	g.path, g.hold = path, fd
	return nil
}

// fillGhost writes the saved contents: only the data extents of a sparse
// image (the size set first, so the rest stays holes).
func fillGhost(fd int, f *imagepb.FileEntry) error {
	if !f.GhostSparse {
		return pwriteFull(fd, f.GhostData, 0)
	}
	if err := unix.Ftruncate(fd, f.Size); err != nil {
		return fmt.Errorf("deleted file: truncate to %d: %w", f.Size, err)
	}
	pos := int64(0)
	for _, e := range f.GhostExtents {
		if err := pwriteFull(fd, f.GhostData[pos:pos+e.Len], e.Off); err != nil {
			return err
		}
		pos += e.Len
	}
	return nil
}

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write deleted file contents at %d: %w", off, err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// openGhost opens a recreated ghost file with the entry's flags and offset.
func (o *Opener) openGhost(f *imagepb.FileEntry, g *ghostInode) (int, error) {
	rfd, err := g.reopen(o, openFlags(f))
	if err != nil {
		return -1, err
	}
	if err := seekOrClose(rfd, f.Pos); err != nil {
		return -1, err
	}
	return rfd, nil
}

// FinishGhosts unlinks the named ghost files again and gives every ghost
// its inode flags (append-only, immutable, ... which would forbid the
// unlink and further opens). Call it once every fd is in its task.
func (o *Opener) FinishGhosts() error {
	var errs []error
	for _, g := range o.ghostBy {
		if g.done {
			continue
		}
		g.done = true
		if g.path != "" {
			if err := g.remove(o); err != nil {
				errs = append(errs, fmt.Errorf("unlink recreated deleted file %s: %w", g.path, err))
			}
		}
		if err := setInodeFlags(g.hold, g.flags); err != nil {
			errs = append(errs, fmt.Errorf("deleted file %s: %w", g.path, err))
		}
	}
	return errors.Join(errs...)
}

// closeGhosts unlinks the ghost files not yet unlinked (a failed restore)
// and closes the fds held on them.
func (o *Opener) closeGhosts() {
	for _, g := range o.ghostBy {
		if !g.done && g.path != "" {
			g.remove(o)
		}
		if g.hold >= 0 {
			unix.Close(g.hold)
		}
	}
	o.ghostBy = map[[2]uint64]*ghostInode{}
}

// setInodeFlags gives the inode of fd the flags want when they differ from
// its own (a file system without inode flags had none at dump either).
func setInodeFlags(fd int, want uint32) error {
	var cur uint32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetflags, uintptr(unsafe.Pointer(&cur))); e != 0 {
		if want == 0 {
			return nil
		}
		return fmt.Errorf("get inode flags: %w", e)
	}
	if cur == want {
		return nil
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocSetflags, uintptr(unsafe.Pointer(&want))); e != 0 {
		return fmt.Errorf("set inode flags %#x: %w", want, e)
	}
	return nil
}
