package files

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Files opened by path: regular files, directories and character devices
// (FILE_REG, FILE_DIR, FILE_CHR), recorded by regularFile and charDevice
// from the fd's file type; a deleted one is a ghost file (ghost.go,
// ghost_restore.go).
func init() {
	for _, k := range []imagepb.FileKind{imagepb.FileKind_FILE_REG, imagepb.FileKind_FILE_DIR, imagepb.FileKind_FILE_CHR} {
		registerKind(&kindDriver{kind: k, check: (*Opener).checkOnDisk, open: (*Opener).openByPath})
	}
}

// regularFile records an fd of a regular file, directory or symlink (an
// O_PATH one): a memfd, a deleted file (its contents saved, see ghost), or
// a file reopened by path. Files without a path and linked O_TMPFILE files
// are refused.
func (t *Table) regularFile(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fd, cp, link, st := d.fd, d.cp, d.link, d.st
	if strings.HasPrefix(link, "/memfd:") {
		return t.memfd(f, fd, cp, link, st)
	}
	f.Kind = imagepb.FileKind_FILE_REG
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		f.Kind = imagepb.FileKind_FILE_DIR
	}
	if st.Nlink == 0 && strings.HasSuffix(link, " (deleted)") {
		if err := t.ghost(f, cp, link, d.opts); errors.Is(err, errLinkedTmpfile) {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: err.Error()}
		} else if err != nil {
			return 0, fmt.Errorf("fd %d: %w", fd, err)
		}
	} else if !strings.HasPrefix(link, "/") {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "file without a path"}
	} else if f.Flags&oTmpfile != 0 {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: errLinkedTmpfile.Error()}
	}
	return t.add("", f), nil
}

// charDevice records an fd of a character device, trying in turn: a pty
// end (pty.go), /dev/tty or a container's console (console.go), a shell
// job's virtual console (devtty.go), another terminal (only with
// --shell-job), and last any other device, reopened by path.
func (t *Table) charDevice(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	pid, fd, cp, link, st, opts := d.pid, d.fd, d.cp, d.link, d.st, d.opts
	if _, slave := PtySlaveIndex(st.Rdev); slave || IsPtyMaster(st.Rdev) {
		return t.pty(f, pid, fd, cp, link, st)
	}
	if id, ok, err := t.devTty(f, pid, fd, cp, link, st, opts); ok || err != nil {
		return id, err
	}
	if id, ok, err := t.jobTty(f, pid, fd, cp, link, st, opts); ok || err != nil {
		return id, err
	}
	if IsTerminal(st.Rdev) {
		if !opts.ShellJob {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "terminal (dump with --shell-job to restore the job onto the restorer's terminal)"}
		}
		f.Kind = imagepb.FileKind_FILE_TTY
		return t.add("tty", f), nil
	}
	f.Kind = imagepb.FileKind_FILE_CHR
	if !strings.HasPrefix(link, "/") {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "character device without a path"}
	}
	return t.add("", f), nil
}

// checkOnDisk verifies that a file the image refers to by path (a regular
// file, directory, device or FIFO) still exists as a file of the same type,
// a regular file of the same size, a device of the same number.
func (o *Opener) checkOnDisk(f *imagepb.FileEntry) error {
	if IsProcPidPath(f.Path) {
		return nil // a task's /proc files exist once the task does
	}
	var st unix.Stat_t
	if err := o.statPath(f.Path, &st); err != nil {
		return fmt.Errorf("file %s: %w", f.Path, err)
	}
	if st.Mode&unix.S_IFMT != f.Mode&unix.S_IFMT {
		return fmt.Errorf("file %s: type changed since the dump (mode %#o, was %#o)", f.Path, st.Mode&unix.S_IFMT, f.Mode&unix.S_IFMT)
	}
	if f.Kind == imagepb.FileKind_FILE_REG && st.Size != f.Size {
		return fmt.Errorf("file %s: size changed since the dump (%d bytes, was %d)", f.Path, st.Size, f.Size)
	}
	if f.Kind == imagepb.FileKind_FILE_CHR && st.Rdev != f.Rdev {
		return fmt.Errorf("device %s: device number changed since the dump", f.Path)
	}
	return nil
}

// openByPath reopens a file by its path with its flags and offset (a
// device keeps none), or recreates it when it was deleted.
func (o *Opener) openByPath(f *imagepb.FileEntry) (int, error) {
	if f.Deleted {
		return o.ghost(f)
	}
	fd, err := o.openPath(f.Path, openFlags(f), 0)
	if err != nil {
		return -1, err
	}
	if err := checkVtDev(f, fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if f.Kind != imagepb.FileKind_FILE_CHR && f.Flags&unix.O_PATH == 0 {
		if err := seekOrClose(fd, f.Pos); err != nil {
			return -1, fmt.Errorf("seek to %d: %w", f.Pos, err)
		}
	}
	return fd, nil
}

// seekOrClose moves a reopened fd to its entry's offset pos (nothing to do
// for 0); on failure it closes fd.
func seekOrClose(fd int, pos int64) error {
	if pos == 0 {
		return nil
	}
	if _, err := unix.Seek(fd, pos, 0); err != nil {
		unix.Close(fd)
		return err
	}
	return nil
}
