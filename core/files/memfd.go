package files

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Memory objects: memfds (FILE_MEMFD, open as fds or mapped) and shared
// anonymous memory (FILE_SHMEM, mapped only, never an fd of its own). The
// restore creates each object first (CreateMemfd, core/restore), fills it
// from pagemap-shmem-<ino>.img, then reopens its fds from it.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_MEMFD, open: (*Opener).openMemfd,
		describe: func(f *imagepb.FileEntry) string { return fmt.Sprintf(" memfd %q, %d bytes", f.Path, f.Size) }})
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_SHMEM})
}

// memfd records an fd of a memfd: its name, seals (F_GET_SEALS: a memfd
// made without MFD_ALLOW_SEALING has F_SEAL_SEAL, one made with
// MFD_NOEXEC_SEAL F_SEAL_EXEC), mode and owner (on f). Its contents are
// one object per inode, dumped once however many open file descriptions
// and mappings (in any process) it has. hugetlbfs memfds are refused.
func (t *Table) memfd(f *imagepb.FileEntry, fd, cp int, link string, st *unix.Stat_t) (uint32, error) {
	f.Kind = imagepb.FileKind_FILE_MEMFD
	f.Path = strings.TrimSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)")
	if err := memfdState(f, cp); err != nil {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: err.Error()}
	}
	id := t.add("", f)
	if !t.hasObject(st.Ino) {
		t.Objects = append(t.Objects, Object{FileID: id, Ino: st.Ino, Size: st.Size, Fd: cp})
	}
	return id, nil
}

// memfdState fills the seals of a memfd and refuses a hugetlbfs one; the
// error text names the unsupported kind.
func memfdState(f *imagepb.FileEntry, fd int) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err == nil && sfs.Type == unix.HUGETLBFS_MAGIC {
		return errors.New("memfd with MFD_HUGETLB")
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("memfd: F_GET_SEALS: %v", err)
	}
	f.MemfdSeals = uint32(seals)
	return nil
}

// hasObject reports whether the memory object of inode ino is already to
// be dumped.
func (t *Table) hasObject(ino uint64) bool {
	for _, o := range t.Objects {
		if o.Ino == ino {
			return true
		}
	}
	return false
}

// CreateMemfd makes the memfd of entry f for restore: named as before,
// able to take every seal, executable unless the kernel forbids it (the
// mode is set next), with its owner and mode; F_SEAL_WRITE is added by
// SealMemfdEarly once its contents are in, the rest by SealObjects.
func CreateMemfd(f *imagepb.FileEntry) (int, error) {
	fd, err := unix.MemfdCreate(MemfdName(f), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EACCES) {
		// before 6.3 no MFD_EXEC (every memfd is executable); with
		// vm.memfd_noexec=2 none may be executable
		fd, err = unix.MemfdCreate(MemfdName(f), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return -1, err
	}
	if f.Mode != 0 {
		err = unix.Fchown(fd, int(f.Uid), int(f.Gid))
		if err == nil {
			err = unix.Fchmod(fd, f.Mode&0o7777)
		}
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("memfd %s: mode/owner: %w", f.Path, err)
		}
	}
	return fd, nil
}

// SealMemfdEarly adds F_SEAL_WRITE to a memfd whose contents are written,
// before it is mapped: the kernel then maps it shared without VM_MAYWRITE,
// as it did for the original (a write seal cannot be added while a shared
// mapping may write). F_SEAL_FUTURE_WRITE too when no shared mapping of
// the image may write (futureEarly): those made before that seal keep
// VM_MAYWRITE ("mw" in VmFlags), so it is added only after they are made.
func SealMemfdEarly(fd int, f *imagepb.FileEntry, futureEarly bool) error {
	seals := f.MemfdSeals & unix.F_SEAL_WRITE
	if futureEarly {
		seals |= f.MemfdSeals & unix.F_SEAL_FUTURE_WRITE
	}
	if seals == 0 {
		return nil
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, int(seals)); err != nil {
		return fmt.Errorf("memfd %s: F_ADD_SEALS %#x: %w", f.Path, seals, err)
	}
	return nil
}

// SealObjects gives every memfd its seals once every mapping of the tree
// is made (F_SEAL_FUTURE_WRITE would forbid restoring a writable shared
// mapping the original made before sealing), and checks F_GET_SEALS.
func (o *Opener) SealObjects() error {
	done := map[int]bool{}
	for id, fd := range o.objects {
		f := o.files[id]
		if f == nil || f.Kind != imagepb.FileKind_FILE_MEMFD || done[fd] {
			continue
		}
		done[fd] = true
		if f.MemfdSeals != 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, int(f.MemfdSeals)); err != nil {
				return fmt.Errorf("memfd %s: F_ADD_SEALS %#x: %w", f.Path, f.MemfdSeals, err)
			}
		}
		got, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil {
			return fmt.Errorf("memfd %s: F_GET_SEALS: %w", f.Path, err)
		}
		if uint32(got) != f.MemfdSeals {
			return fmt.Errorf("memfd %s: seals %#x after restore, were %#x", f.Path, got, f.MemfdSeals)
		}
	}
	return nil
}

// ObjectOf returns the memory object already made for another entry of
// the same inode as f (dumped once, shared by all its entries).
func (o *Opener) ObjectOf(f *imagepb.FileEntry) (int, bool) {
	for id, fd := range o.objects {
		e := o.files[id]
		if e != nil && e.Kind == f.Kind && e.Dev == f.Dev && e.Ino == f.Ino {
			return fd, true
		}
	}
	return -1, false
}

// openMemfd opens a memfd's object again with the entry's flags and
// offset: an open file description of its own on the shared object.
func (o *Opener) openMemfd(f *imagepb.FileEntry) (int, error) {
	obj, ok := o.objects[f.Id]
	if !ok {
		return -1, errors.New("memfd object not created")
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", obj), openFlags(f), 0)
	if err != nil {
		return -1, err
	}
	if err := seekOrClose(fd, f.Pos); err != nil {
		return -1, err
	}
	return fd, nil
}
