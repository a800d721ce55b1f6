package files

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Files opened by path: regular files, directories and character devices
// (FILE_REG, FILE_DIR, FILE_CHR). Table.describe records them from the
// fd's file type; a deleted one is a ghost file (ghost.go,
// ghost_restore.go).
func init() {
	for _, k := range []imagepb.FileKind{imagepb.FileKind_FILE_REG, imagepb.FileKind_FILE_DIR, imagepb.FileKind_FILE_CHR} {
		registerKind(&kindDriver{kind: k, check: (*Opener).checkOnDisk, open: (*Opener).openByPath})
	}
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
	if f.Kind != imagepb.FileKind_FILE_CHR && f.Flags&unix.O_PATH == 0 && f.Pos != 0 {
		if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("seek to %d: %w", f.Pos, err)
		}
	}
	return fd, nil
}
