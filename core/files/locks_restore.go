package files

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// LockName names a lock of the image for errors: "POSIX write lock on
// bytes 10-29".
func LockName(fl *imagepb.FileLock) string {
	typ := "read"
	if fl.Write {
		typ = "write"
	}
	switch fl.Kind {
	case imagepb.FileLockKind_FILE_LOCK_FLOCK:
		if fl.Write {
			return "exclusive flock"
		}
		return "shared flock"
	case imagepb.FileLockKind_FILE_LOCK_POSIX, imagepb.FileLockKind_FILE_LOCK_OFD:
		kind := "POSIX"
		if fl.Kind == imagepb.FileLockKind_FILE_LOCK_OFD {
			kind = "OFD"
		}
		if fl.Len == 0 {
			return fmt.Sprintf("%s %s lock on bytes %d-EOF", kind, typ, fl.Start)
		}
		return fmt.Sprintf("%s %s lock on bytes %d-%d", kind, typ, fl.Start, fl.Start+fl.Len-1)
	}
	return fmt.Sprintf("file lock of unknown kind %d", fl.Kind)
}

// checkLock refuses a lock the image cannot mean: an unknown kind or a
// range outside the file offsets.
func checkLock(fl *imagepb.FileLock) error {
	switch fl.Kind {
	case imagepb.FileLockKind_FILE_LOCK_FLOCK, imagepb.FileLockKind_FILE_LOCK_POSIX, imagepb.FileLockKind_FILE_LOCK_OFD:
	default:
		return fmt.Errorf("file lock of unknown kind %d", fl.Kind)
	}
	if fl.Start < 0 || fl.Len < 0 || fl.Len > math.MaxInt64-fl.Start {
		return fmt.Errorf("%s: bad range (start %d, length %d)", LockName(fl), fl.Start, fl.Len)
	}
	return nil
}

// FlockOp is the flock(2) operation that takes fl again without waiting.
func FlockOp(fl *imagepb.FileLock) int {
	if fl.Write {
		return unix.LOCK_EX | unix.LOCK_NB
	}
	return unix.LOCK_SH | unix.LOCK_NB
}

// FlockStruct encodes the struct flock (x86-64 layout: l_type, l_whence,
// l_start, l_len, l_pid; 32 bytes) that sets record lock fl.
func FlockStruct(fl *imagepb.FileLock) ([]byte, error) {
	if err := checkLock(fl); err != nil {
		return nil, err
	}
	b := make([]byte, 32)
	typ := uint16(unix.F_RDLCK)
	if fl.Write {
		typ = unix.F_WRLCK
	}
	binary.LittleEndian.PutUint16(b[0:], typ)
	binary.LittleEndian.PutUint16(b[2:], 0) // SEEK_SET
	binary.LittleEndian.PutUint64(b[8:], uint64(fl.Start))
	binary.LittleEndian.PutUint64(b[16:], uint64(fl.Len))
	return b, nil
}

// TakeFileLocks takes again, on the restored open file descriptions, the
// locks that belong to them: OFD locks, and flock locks not yet taken by
// the task that took them at dump time (the restorer does that for a
// taker outside the image; retaking a held flock is a no-op). Call it
// once every task's fds are installed, before the tree runs. A lock held
// meanwhile by another process fails the restore, naming it.
func (o *Opener) TakeFileLocks() error {
	ids := make([]uint32, 0, len(o.files))
	for id, f := range o.files {
		if len(f.FileLocks) > 0 {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		f := o.files[id]
		fd, err := o.Open(id)
		if err != nil {
			return err
		}
		for _, fl := range f.FileLocks {
			if err := takeFileLock(fd, fl); err != nil {
				return fmt.Errorf("file %d (%s): %s: %w", id, f.Path, LockName(fl), err)
			}
		}
	}
	return nil
}

// takeFileLock takes a flock or OFD lock on our fd of its file.
func takeFileLock(fd int, fl *imagepb.FileLock) error {
	if err := checkLock(fl); err != nil {
		return err
	}
	switch fl.Kind {
	case imagepb.FileLockKind_FILE_LOCK_FLOCK:
		return unix.Flock(fd, FlockOp(fl))
	case imagepb.FileLockKind_FILE_LOCK_OFD:
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: fl.Start, Len: fl.Len}
		if fl.Write {
			lk.Type = unix.F_WRLCK
		}
		return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
	}
	return fmt.Errorf("a %s is not a lock of an open file description", LockName(fl))
}

// TakeOFDLock takes OFD lock fl on our fd of its open file description
// (the file of a mapping: its map_locks).
func TakeOFDLock(fd int, fl *imagepb.FileLock) error {
	if fl.Kind != imagepb.FileLockKind_FILE_LOCK_OFD {
		return fmt.Errorf("a %s is not an OFD lock", LockName(fl))
	}
	return takeFileLock(fd, fl)
}
