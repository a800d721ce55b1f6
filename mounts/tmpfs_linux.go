package mounts

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/extents"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
)

// SaveTmpfs writes to w a tar (PAX) of the tmpfs mounted at mountPoint in
// the mount namespace of pid, mountPoint being relative to pid's root (as in
// Tree). The mount is cloned alone (open_tree OPEN_TREE_CLONE, not recursive)
// from inside pid's mount namespace, so mounts on top of its directories are
// not seen and the directories under them are saved as they are. It is then
// walked with SaveDir: symlinks are saved as symlinks and never followed.
// An unbindable mount cannot be cloned; it is walked in place, without the
// directories covered by other mounts.
// The mount point itself must not be reached through a symlink.
func SaveTmpfs(pid int, mountPoint string, w io.Writer) error {
	if err := checkPath(mountPoint); err != nil {
		return fmt.Errorf("save tmpfs %s of pid %d: %w", mountPoint, pid, err)
	}
	mfd := -1
	err := threadns.RunInRoot(pid, nil, func() error {
		fd, err := openInRoot(mountPoint, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		defer unix.Close(fd)
		if root, err := isMountRoot(fd); err != nil {
			return err
		} else if !root {
			return fmt.Errorf("not a mount point")
		}
		mfd, err = unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
		if errors.Is(err, unix.EINVAL) {
			// An unbindable mount cannot be cloned: walk it in place
			// (SaveDir does not enter the mounts on top of it, but cannot
			// see what they cover).
			mfd, err = unix.Dup(fd)
		}
		if err != nil {
			return fmt.Errorf("open_tree(OPEN_TREE_CLONE): %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save tmpfs %s of pid %d: %w", mountPoint, pid, err)
	}
	defer unix.Close(mfd)
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(mfd, &sfs); err != nil {
		return fmt.Errorf("save tmpfs %s of pid %d: fstatfs: %w", mountPoint, pid, err)
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("save tmpfs %s of pid %d: %w: filesystem magic %#x is not tmpfs", mountPoint, pid, ErrUnsupportedFS, sfs.Type)
	}
	if err := SaveDir(mfd, w); err != nil {
		return fmt.Errorf("save tmpfs %s of pid %d: %w", mountPoint, pid, err)
	}
	return nil
}

// SaveDir writes to w a tar (PAX) of the directory dirfd (any fd of a
// directory, O_PATH included): directories, regular files (with hard links
// as TypeLink entries), symlinks, fifos and device nodes, with their mode,
// owner and mtime (nanoseconds), and for files and directories the extended
// attributes user.*, trusted.*, security.capability and POSIX ACLs (PAX
// SCHILY.xattr records). Sockets are skipped. Every entry is reached
// by fd with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW: no symlink is ever followed.
// A directory on another filesystem (a mount point) is saved but not entered.
// The root is the entry "./"; names are relative and clean.
func SaveDir(dirfd int, w io.Writer) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("fstat: %w", err)
	}
	s := &saver{tw: tar.NewWriter(w), dev: st.Dev, links: map[[2]uint64]string{}}
	if err := s.dir(fd, "", &st); err != nil {
		return err
	}
	return s.tw.Close()
}

type saver struct {
	tw    *tar.Writer
	dev   uint64
	links map[[2]uint64]string
}

func header(name string, st *unix.Stat_t) *tar.Header {
	return &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 07777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:  tar.FormatPAX,
	}
}

// dir saves the directory open as fd (closed on return) under name.
func (s *saver) dir(fd int, name string, st *unix.Stat_t) error {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	h := header(name+"/", st)
	if name == "" {
		h.Name = "./"
	}
	h.Typeflag = tar.TypeDir
	if err := addXattrs(h, fd); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if err := s.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if st.Dev != s.dev {
		return nil // a mount point: not entered
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read directory %s: %w", h.Name, err)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := s.entry(int(f.Fd()), path.Join(name, n), n); err != nil {
			return err
		}
	}
	return nil
}

func (s *saver) entry(dirfd int, name, leaf string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("lstat %s: %w", name, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fd, err := unix.Openat(dirfd, leaf, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open directory %s: %w", name, err)
		}
		var st2 unix.Stat_t
		if err := unix.Fstat(fd, &st2); err != nil || st2.Ino != st.Ino || st2.Dev != st.Dev {
			unix.Close(fd)
			return fmt.Errorf("directory %s changed while saving", name)
		}
		return s.dir(fd, name, &st)
	case unix.S_IFREG:
		h := header(name, &st)
		key := [2]uint64{st.Dev, st.Ino}
		if st.Nlink > 1 {
			if first, ok := s.links[key]; ok {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				return s.write(h)
			}
			s.links[key] = name
		}
		fd, err := unix.Openat(dirfd, leaf, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOATIME|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		var st2 unix.Stat_t
		if err := unix.Fstat(fd, &st2); err != nil || st2.Ino != st.Ino || st2.Dev != st.Dev {
			return fmt.Errorf("file %s changed while saving", name)
		}
		h.Typeflag, h.Size = tar.TypeReg, st2.Size
		if err := addXattrs(h, fd); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		// a file with holes is saved by its data (a `truncate -s 2G`
		// file holds nothing): the entry holds the data extents one
		// after the other, and the PAX records say where they go
		exts, data, err := extents.Data(fd, st2.Size)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		sparse := data < st2.Size
		if sparse {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[sparseMapKey] = extents.Format(exts)
			h.PAXRecords[sparseSizeKey] = strconv.FormatInt(st2.Size, 10)
			h.Size = data
		} else {
			exts = []extents.Extent{{Off: 0, Len: st2.Size}}
		}
		if err := s.write(h); err != nil {
			return err
		}
		for _, e := range exts {
			if n, err := io.Copy(s.tw, io.NewSectionReader(f, e.Off, e.Len)); err != nil || n != e.Len {
				return fmt.Errorf("copy %s (%d of %d bytes at %d): %v", name, n, e.Len, e.Off, err)
			}
		}
		return nil
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, leaf)
		if err != nil {
			return fmt.Errorf("readlink %s: %w", name, err)
		}
		h := header(name, &st)
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
		return s.write(h)
	case unix.S_IFIFO:
		h := header(name, &st)
		h.Typeflag = tar.TypeFifo
		return s.write(h)
	case unix.S_IFCHR, unix.S_IFBLK:
		h := header(name, &st)
		h.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		return s.write(h)
	default: // sockets: no contents to archive
		return nil
	}
}

// PAX records of a file saved by its data extents (see saver.entry).
const (
	sparseMapKey  = "CTRCR.sparse.map"  // extents.Format of the data extents
	sparseSizeKey = "CTRCR.sparse.size" // the file's size
	maxExtents    = 1 << 20
)

// writeRegular writes the contents of entry h, read from r, into f: the
// data as it is, or the data extents of a sparse entry at their offsets
// over a file truncated to its size (holes stay holes). Sparse records are
// checked first: they come from an image.
func writeRegular(f *os.File, h *tar.Header, r io.Reader) error {
	m, ok := h.PAXRecords[sparseMapKey]
	if !ok {
		if n, err := io.Copy(f, r); err != nil {
			return fmt.Errorf("write (%d of %d bytes): %w", n, h.Size, err)
		}
		return nil
	}
	size, err := strconv.ParseInt(h.PAXRecords[sparseSizeKey], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: sparse size %q", ErrUnsafeEntry, h.PAXRecords[sparseSizeKey])
	}
	exts, err := extents.Parse(m, maxExtents)
	if err == nil {
		err = extents.Check(exts, size, h.Size)
	}
	if err != nil {
		return fmt.Errorf("%w: sparse map: %v", ErrUnsafeEntry, err)
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate to %d: %w", size, err)
	}
	for _, e := range exts {
		if n, err := io.CopyN(io.NewOffsetWriter(f, e.Off), r, e.Len); err != nil {
			return fmt.Errorf("write (%d of %d bytes at %d): %w", n, e.Len, e.Off, err)
		}
	}
	return nil
}

func (s *saver) write(h *tar.Header) error {
	if err := s.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
	return "", unix.ENAMETOOLONG
}

// xattrPrefix is the PAX record prefix for extended attributes.
const xattrPrefix = "SCHILY.xattr."

// xattrAllowed says which extended attributes are saved and restored: user
// and trusted ones, file capabilities and POSIX ACLs (not LSM labels, which
// the target's mount options decide).
func xattrAllowed(name string) bool {
	return len(name) <= 255 && (strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.") ||
		name == "security.capability" || name == "system.posix_acl_access" || name == "system.posix_acl_default")
}

const maxXattrValue = 64 << 10

// addXattrs records the allowed extended attributes of fd (a regular file or
// a directory) in h. Filesystems without xattrs give none.
func addXattrs(h *tar.Header, fd int) error {
	buf := make([]byte, 4096)
	var n int
	var err error
	for {
		n, err = unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 1<<20 {
			buf = make([]byte, len(buf)*4)
			continue
		}
		break
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listxattr: %w", err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || !xattrAllowed(name) {
			continue
		}
		val := make([]byte, maxXattrValue)
		vn, err := unix.Fgetxattr(fd, name, val)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return fmt.Errorf("getxattr %s: %w", name, err)
		}
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords[xattrPrefix+name] = string(val[:vn])
	}
	return nil
}

// setXattrs applies the allowed extended attributes of h to fd; any other
// one is refused.
func setXattrs(h *tar.Header, fd int) error {
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		if !xattrAllowed(name) || len(v) > maxXattrValue {
			return fmt.Errorf("%w: extended attribute %q", ErrUnsafeEntry, name)
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	return nil
}

// ErrUnsafeEntry is returned (wrapped, naming the entry) by RestoreTmpfs for an
// archive entry that would escape the target or go through a symlink.
var ErrUnsafeEntry = errors.New("unsafe archive entry")

// RestoreTmpfs extracts the tar r (as written by SaveTmpfs / SaveDir) into
// the directory dirfd (any fd of a directory, e.g. the fd of a new detached
// tmpfs from fsmount). Entry names must be relative, clean and free of ".."
// (ErrUnsafeEntry otherwise); parents are resolved with openat2
// RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV, so a symlink in the
// archive is created as data but never followed, and nothing is written
// outside dirfd's directory on its filesystem. Entries are created anew
// (O_EXCL): an existing file of the same name is an error, an existing
// directory is reused; an existing entry that is a mount point (something
// mounted on the target's tree) is left as it is, whatever the archive says
// of it. GNU
// sparse entries, which SaveDir never writes, are refused (ErrUnsafeEntry):
// the tar reader would expand them to their stated size in zeros. Mode
// (with setuid/setgid/sticky), owner and mtime are
// applied (directory mtimes last), and the extended attributes SaveDir keeps
// (user.*, trusted.*, security.capability, POSIX ACLs; any other is refused).
// Hard links must point to an earlier entry.
func RestoreTmpfs(dirfd int, r io.Reader) error {
	return restoreArchive(dirfd, r, false)
}

// MergeTmpfs is RestoreTmpfs into a directory that already holds files (a
// tmpfs the runtime made again from config.json, such as /dev or /dev/shm):
// an existing entry of the same type is updated in place (a regular file is
// truncated and rewritten, never unlinked, so that a file used as a mount
// point keeps its mounts; a symlink with another target is replaced; a fifo
// or device with the same number is kept), then gets the saved owner, mode
// and times; an existing entry of another type is an error. Files present
// but not in the archive are left alone.
func MergeTmpfs(dirfd int, r io.Reader) error {
	return restoreArchive(dirfd, r, true)
}

func restoreArchive(dirfd int, r io.Reader, merge bool) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		name string
		ts   []unix.Timespec
	}
	var dirs []dirTime
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("restore tmpfs: read archive: %w", err)
		}
		name, err := entryName(h.Name)
		if err == nil {
			err = checkHeader(h)
		}
		if err != nil {
			return fmt.Errorf("restore tmpfs: entry %q: %w", h.Name, err)
		}
		if err := restoreEntry(dirfd, name, h, tr, merge); err != nil {
			return fmt.Errorf("restore tmpfs: entry %q: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{name, times(h)})
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		pfd, leaf, err := openParent(dirfd, d.name)
		if err != nil {
			return fmt.Errorf("restore tmpfs: directory %q: %w", d.name, err)
		}
		mp := false
		if leaf != "." {
			mp, err = isMountPoint(pfd, leaf) // left alone (restoreEntry)
		}
		if err == nil && !mp {
			err = unix.UtimesNanoAt(pfd, leaf, d.ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.Close(pfd)
		if err != nil {
			return fmt.Errorf("restore tmpfs: directory %q: utimensat: %w", d.name, err)
		}
	}
	return nil
}

// entryName checks an archive name and returns it clean, "." for the root.
func entryName(n string) (string, error) {
	if strings.ContainsRune(n, 0) || len(n) > 1<<16 {
		return "", ErrUnsafeEntry
	}
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("%w: absolute name", ErrUnsafeEntry)
	}
	for _, e := range strings.Split(n, "/") {
		if e == ".." {
			return "", fmt.Errorf("%w: \"..\" in name", ErrUnsafeEntry)
		}
	}
	c := path.Clean(n)
	if c == "" {
		c = "."
	}
	return c, nil
}

// checkHeader refuses what SaveDir never writes and the restore must not
// act on: GNU sparse records, which archive/tar's reader expands into the
// entry's "real size" of zero bytes (a few hundred bytes of archive would
// write terabytes), and owners outside the uid_t range (the kernel would
// take them modulo 2^32, or -1 as "leave unchanged").
func checkHeader(h *tar.Header) error {
	if h.Typeflag == tar.TypeGNUSparse {
		return fmt.Errorf("%w: GNU sparse entry", ErrUnsafeEntry)
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return fmt.Errorf("%w: GNU sparse record %s", ErrUnsafeEntry, k)
		}
	}
	if h.Uid < 0 || h.Gid < 0 || int64(h.Uid) >= 1<<32-1 || int64(h.Gid) >= 1<<32-1 {
		return fmt.Errorf("%w: owner %d:%d", ErrUnsafeEntry, h.Uid, h.Gid)
	}
	return nil
}

// isMountPoint reports whether the existing leaf under pfd is the root of
// a mount (false when it does not exist). Where statx does not report mount
// roots (before Linux 5.8), a leaf on another device counts as one.
func isMountPoint(pfd int, leaf string) (bool, error) {
	var stx unix.Statx_t
	err := unix.Statx(pfd, leaf, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_BASIC_STATS, &stx)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("statx: %w", err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	var pst unix.Stat_t
	if err := unix.Fstat(pfd, &pst); err != nil {
		return false, fmt.Errorf("fstat: %w", err)
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor) != pst.Dev, nil
}

// openParent opens the parent directory of name (clean, relative) under
// dirfd without following symlinks, and returns it with the last element
// ("." for the root itself).
func openParent(dirfd int, name string) (int, string, error) {
	parent, leaf := path.Split(name)
	if name == "." {
		parent, leaf = ".", "."
	}
	if parent == "" {
		parent = "."
	}
	fd, err := unix.Openat2(dirfd, parent, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			return -1, "", fmt.Errorf("%w: parent %q goes through a symlink or a mount: %w", ErrUnsafeEntry, parent, err)
		}
		return -1, "", fmt.Errorf("open parent %q: %w", parent, err)
	}
	return fd, leaf, nil
}

func times(h *tar.Header) []unix.Timespec {
	mt := unix.NsecToTimespec(h.ModTime.UnixNano())
	at := mt
	if !h.AccessTime.IsZero() {
		at = unix.NsecToTimespec(h.AccessTime.UnixNano())
	}
	return []unix.Timespec{at, mt}
}

func restoreEntry(dirfd int, name string, h *tar.Header, r io.Reader, merge bool) error {
	pfd, leaf, err := openParent(dirfd, name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	// An entry that is a mount point in the target (a present tmpfs
	// walked in place) is left alone: what SaveDir saved there was the
	// mounted file or directory, which belongs to that mount (a host path
	// bound into the container), not to this tmpfs; changing it would
	// chown, chmod or rewrite the mounted object.
	if leaf != "." {
		if mp, err := isMountPoint(pfd, leaf); err != nil {
			return err
		} else if mp {
			return nil
		}
	}
	mode := uint32(h.Mode & 07777)
	owner := func() error {
		if err := unix.Fchownat(pfd, leaf, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		return nil
	}
	// chmodNoFollow sets the mode after checking that leaf is not a symlink
	// (fchmodat follows them).
	chmodNoFollow := func() error {
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("lstat: %w", err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return fmt.Errorf("%w: became a symlink", ErrUnsafeEntry)
		}
		if err := unix.Fchmodat(pfd, leaf, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		return nil
	}
	setTimes := func() error {
		if err := unix.UtimesNanoAt(pfd, leaf, times(h), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("utimensat: %w", err)
		}
		return nil
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if leaf != "." {
			if err := unix.Mkdirat(pfd, leaf, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("mkdir: %w", err)
			}
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("lstat: %w", err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%w: exists and is not a directory", ErrUnsafeEntry)
		}
		if err := owner(); err != nil {
			return err
		}
		if hasXattrs(h) {
			dfd, err := unix.Openat(pfd, leaf, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open: %w", err)
			}
			err = setXattrs(h, dfd)
			unix.Close(dfd)
			if err != nil {
				return err
			}
		}
		return chmodNoFollow()
	case tar.TypeReg:
		fd, err := unix.Openat(pfd, leaf, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if merge && errors.Is(err, unix.EEXIST) {
			if err := sameType(pfd, leaf, unix.S_IFREG, 0); err != nil {
				return err
			}
			fd, err = unix.Openat(pfd, leaf, unix.O_WRONLY|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			var st unix.Stat_t
			if err == nil {
				if err = unix.Fstat(fd, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
					unix.Close(fd)
					return fmt.Errorf("%w: changed type while restoring", ErrUnsafeEntry)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		if err := writeRegular(f, h, r); err != nil {
			return err
		}
		if err := f.Chown(h.Uid, h.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		if err := setXattrs(h, fd); err != nil { // after chown, which drops file capabilities
			return err
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		if err := unix.UtimesNanoAt(fd, "", times(h), unix.AT_EMPTY_PATH); err != nil {
			return setTimes()
		}
		return nil
	case tar.TypeSymlink:
		if h.Linkname == "" || len(h.Linkname) >= unix.PathMax || strings.ContainsRune(h.Linkname, 0) {
			return fmt.Errorf("%w: symlink target length %d", ErrUnsafeEntry, len(h.Linkname))
		}
		err := unix.Symlinkat(h.Linkname, pfd, leaf)
		if merge && errors.Is(err, unix.EEXIST) {
			if err := sameType(pfd, leaf, unix.S_IFLNK, 0); err != nil {
				return err
			}
			if cur, rerr := readlinkat(pfd, leaf); rerr == nil && cur == h.Linkname {
				err = nil
			} else if err = unix.Unlinkat(pfd, leaf, 0); err == nil {
				err = unix.Symlinkat(h.Linkname, pfd, leaf)
			}
		}
		if err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		if err := owner(); err != nil {
			return err
		}
		return setTimes()
	case tar.TypeLink:
		old, err := entryName(h.Linkname)
		if err != nil || old == "." {
			return fmt.Errorf("%w: hard link to %q", ErrUnsafeEntry, h.Linkname)
		}
		ofd, oleaf, err := openParent(dirfd, old)
		if err != nil {
			return fmt.Errorf("hard link to %q: %w", h.Linkname, err)
		}
		defer unix.Close(ofd)
		err = unix.Linkat(ofd, oleaf, pfd, leaf, 0)
		if merge && errors.Is(err, unix.EEXIST) {
			var a, b unix.Stat_t
			if unix.Fstatat(ofd, oleaf, &a, unix.AT_SYMLINK_NOFOLLOW) == nil && unix.Fstatat(pfd, leaf, &b, unix.AT_SYMLINK_NOFOLLOW) == nil &&
				a.Dev == b.Dev && a.Ino == b.Ino {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("hard link to %q: %w", h.Linkname, err)
		}
		return nil
	case tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
		typ, dev := uint32(unix.S_IFIFO), 0
		switch h.Typeflag {
		case tar.TypeChar:
			typ, dev = unix.S_IFCHR, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))
		case tar.TypeBlock:
			typ, dev = unix.S_IFBLK, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))
		}
		err := unix.Mknodat(pfd, leaf, typ|0o600, dev)
		if merge && errors.Is(err, unix.EEXIST) {
			err = sameType(pfd, leaf, typ, uint64(dev))
		}
		if err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		if err := owner(); err != nil {
			return err
		}
		if err := chmodNoFollow(); err != nil {
			return err
		}
		return setTimes()
	default:
		return fmt.Errorf("%w: entry type %q not supported", ErrUnsafeEntry, h.Typeflag)
	}
}

func hasXattrs(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			return true
		}
	}
	return false
}

// sameType checks that the existing leaf has file type typ (and device
// number rdev for devices); merging never replaces a file by one of another
// type.
func sameType(pfd int, leaf string, typ uint32, rdev uint64) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("lstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != typ {
		return fmt.Errorf("exists with another file type (%#o, want %#o)", st.Mode&unix.S_IFMT, typ)
	}
	if (typ == unix.S_IFCHR || typ == unix.S_IFBLK) && st.Rdev != rdev {
		return fmt.Errorf("exists as another device (%d:%d)", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return nil
}
