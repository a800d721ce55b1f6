package files

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/extents"
)

// oTmpfile is __O_TMPFILE without O_DIRECTORY: the kernel keeps it in the
// f_flags of a file opened with O_TMPFILE (fdinfo, F_GETFL).
const oTmpfile = 0o20000000

// Inode flag ioctls (FS_IOC_GETFLAGS/SETFLAGS, int argument).
const (
	fsIocGetflags = 0x80086601
	fsIocSetflags = 0x40086602
)

// errLinkedTmpfile names an fd opened with O_TMPFILE whose file was linked
// since: its open flags keep O_TMPFILE (F_GETFL shows it), which no open of
// an existing file can give.
var errLinkedTmpfile = errors.New("file opened with O_TMPFILE and linked since (its O_TMPFILE open flag cannot be given to a reopened file)")

// ghost saves a file deleted while open (or mapped): its data extents
// (holes stay holes; --ghost-limit bounds the data present, not the
// apparent size), whether it was made by O_TMPFILE, and its inode flags.
// cp is our copy of the task's fd: it shares the task's offset, so the file
// is read through a fresh open of it.
func (t *Table) ghost(f *imagepb.FileEntry, cp int, link string, opts Options) error {
	f.Path = strings.TrimSuffix(link, " (deleted)")
	f.Deleted = true
	if f.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil // removed, so empty: GhostDir makes it again
	}
	// the kernel names an O_TMPFILE "#<ino>"; one linked and removed
	// since has another name, which a new O_TMPFILE cannot take
	f.GhostTmpfile = filepath.Base(f.Path) == "#"+strconv.FormatUint(f.Ino, 10)
	if f.Flags&oTmpfile != 0 && !f.GhostTmpfile {
		return errLinkedTmpfile
	}
	rfd, err := reopenNoatime(cp)
	if err != nil {
		return fmt.Errorf("read deleted file %s: %w", f.Path, err)
	}
	defer unix.Close(rfd)
	exts, total, err := dataExtents(rfd, f.Size)
	if err != nil {
		return fmt.Errorf("deleted file %s: %w", f.Path, err)
	}
	if total > opts.GhostLimit {
		return fmt.Errorf("deleted file %s holds %d bytes of data (size %d), more than --ghost-limit %d", f.Path, total, f.Size, opts.GhostLimit)
	}
	data := make([]byte, total)
	pos := int64(0)
	for _, e := range exts {
		if err := preadFull(rfd, data[pos:pos+e.Len], e.Off); err != nil {
			return fmt.Errorf("read deleted file %s at %d: %w", f.Path, e.Off, err)
		}
		pos += e.Len
	}
	f.GhostData, f.GhostExtents, f.GhostSparse = data, exts, true
	var fl uint32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(rfd), fsIocGetflags, uintptr(unsafe.Pointer(&fl))); e == 0 {
		f.InodeFlags = fl
	}
	return nil
}

// reopenNoatime opens a file we hold an fd of again, read-only, without
// updating its access time when the file system allows.
func reopenNoatime(fd int) (int, error) {
	p := fmt.Sprintf("/proc/self/fd/%d", fd)
	rfd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if err != nil {
		rfd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	return rfd, err
}

// dataExtents lists the data extents of the first size bytes of fd
// (internal/extents), as image entries, and their total length.
func dataExtents(fd int, size int64) ([]*imagepb.GhostExtent, int64, error) {
	exts, total, err := extents.Data(fd, size)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*imagepb.GhostExtent, len(exts))
	for i, e := range exts {
		out[i] = &imagepb.GhostExtent{Off: e.Off, Len: e.Len}
	}
	return out, total, nil
}

// preadFull reads len(b) bytes at off; the file ending early is an error.
func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("file ends %d bytes early", len(b))
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// checkGhost validates the saved contents of a ghost file entry (image
// data is untrusted).
func checkGhost(f *imagepb.FileEntry) error {
	if f.Mode&unix.S_IFMT == unix.S_IFDIR {
		if len(f.GhostData) != 0 || len(f.GhostExtents) != 0 {
			return fmt.Errorf("deleted directory %s: image holds contents", f.Path)
		}
		return nil
	}
	if f.Size < 0 {
		return fmt.Errorf("deleted file %s: size %d", f.Path, f.Size)
	}
	if !f.GhostSparse {
		if len(f.GhostExtents) != 0 || int64(len(f.GhostData)) != f.Size {
			return fmt.Errorf("deleted file %s: image holds %d bytes, size was %d", f.Path, len(f.GhostData), f.Size)
		}
		return nil
	}
	exts := make([]extents.Extent, len(f.GhostExtents))
	for i, e := range f.GhostExtents {
		exts[i] = extents.Extent{Off: e.Off, Len: e.Len}
	}
	if err := extents.Check(exts, f.Size, int64(len(f.GhostData))); err != nil {
		return fmt.Errorf("deleted file %s: %w", f.Path, err)
	}
	return nil
}
