package files

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// mapUse is one file-backed VMA of the dump, as CheckLocks needs it to
// give a lock held through no fd to the mapping that holds it.
type mapUse struct {
	pid        int
	start, end uint64
	fileID     uint32
	shared     bool
	mayWrite   bool // VM_MAYWRITE ("mw"): made through a writable file
}

// NoteMapping records that pid maps file id (entry of AddMapped) with VMA
// v, under the "maj:min:ino" /proc/locks prints for the mapped inode (the
// same device and inode smaps prints). Call it for every file-backed VMA.
func (t *Table) NoteMapping(pid int, v *procfs.SmapsEntry, id uint32) {
	if t.locks.maps == nil {
		t.locks.maps = map[string][]mapUse{}
	}
	key := inodeKey(v.DevMajor, v.DevMinor, v.Inode)
	t.locks.maps[key] = append(t.locks.maps[key], mapUse{pid: pid, start: v.Start, end: v.End, fileID: id, shared: v.Shared, mayWrite: v.HasFlag("mw")})
}

// noteInFlight records the inode of a file in flight in a socket queue
// (received by ctr-cr, not read through any fd of the dump): a lock on
// that inode may be that file's, so none is given to a mapping of it.
// (By inode number only: fstat's device may not be the one /proc/locks
// prints, e.g. on btrfs.)
func (t *Table) noteInFlight(ino uint64) {
	if t.locks.inFlight == nil {
		t.locks.inFlight = map[uint64]bool{}
	}
	t.locks.inFlight[ino] = true
}

// lockOnMapping gives flock or OFD lock l, which the fdinfo of no fd of the
// dump shows, to the open file description of the mapping that holds it,
// recording it in the mapping's entry (map_locks). It reports false when
// no mapping of the dump can hold it (the inode is not mapped, or an fd
// outside the dump shows the lock); it refuses, naming the lock, a lock
// whose holder cannot be told or taken again exactly: the inode mapped by
// several VMAs (one file description or several: unknown), a flock taken
// by another process than the one mapping the file, a file also in flight
// in a socket, a memory object, an OFD write lock on a mapping made
// through a read-only file (restore maps it through a read-only one).
func (t *Table) lockOnMapping(l *lockLine, fl *imagepb.FileLock) (bool, error) {
	uses := t.locks.maps[l.file]
	if len(uses) == 0 || (l.kind != "FLOCK" && l.kind != "OFDLCK") {
		return false, nil
	}
	if outside, err := lockShownByFd(l); err != nil || outside {
		return false, err
	}
	what := fmt.Sprintf("inode %s: file lock (%s) held through a mapping", l.file, l.String())
	if l.pid > 0 {
		what = fmt.Sprintf("pid %d: %s", l.pid, what)
	}
	if len(uses) > 1 {
		more := ""
		if len(uses) > 2 {
			more = ", ..."
		}
		return false, fmt.Errorf("%s of a file mapped %d times in the dump (VMAs %#x-%#x of pid %d and %#x-%#x of pid %d%s: which one's open file holds the lock is unknown): not supported",
			what, len(uses), uses[0].start, uses[0].end, uses[0].pid, uses[1].start, uses[1].end, uses[1].pid, more)
	}
	u := uses[0]
	what = fmt.Sprintf("%s (VMA %#x-%#x of pid %d)", what, u.start, u.end, u.pid)
	if t.locks.inFlight[lockIno(l)] {
		return false, fmt.Errorf("%s: the file is also in flight in a socket (which one holds the lock is unknown): not supported", what)
	}
	if fl.Kind == imagepb.FileLockKind_FILE_LOCK_FLOCK && u.pid != l.pid {
		return false, fmt.Errorf("%s: taken by another process than the one mapping the file: not supported", what)
	}
	f := t.fileByID(u.fileID)
	if f == nil || f.Kind != imagepb.FileKind_FILE_REG {
		return false, fmt.Errorf("%s: a lock on a memory object's mapping: not supported", what)
	}
	if fl.Kind == imagepb.FileLockKind_FILE_LOCK_OFD && fl.Write && !(u.shared && u.mayWrite) {
		return false, fmt.Errorf("%s: an OFD write lock on a mapping restored through a read-only file (private or read-only shared mapping): not supported", what)
	}
	f.MapLocks = append(f.MapLocks, fl)
	return true, nil
}

// lockShownByFd reports whether the fdinfo of some fd of the system shows
// lock l: then an fd (outside the dump: those of the dump were read) holds
// it, not a mapping. Read only for a lock left over on a mapped inode; only
// the fds of that inode number (stat of the fd link) have their fdinfo
// read.
func lockShownByFd(l *lockLine) (bool, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*/fd")
	if err != nil {
		return false, err
	}
	key := l.key()
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue // exited, or not ours to read
		}
		for _, e := range ents {
			var st unix.Stat_t
			// the inode number only: stat's device may not be the one
			// /proc/locks prints (btrfs); the fdinfo line is exact
			if unix.Stat(filepath.Join(d, e.Name()), &st) != nil || !strings.HasSuffix(l.file, fmt.Sprintf(":%d", st.Ino)) {
				continue
			}
			if fdinfoShowsLock(filepath.Join(filepath.Dir(d), "fdinfo", e.Name()), key) {
				return true, nil
			}
		}
	}
	return false, nil
}

// fdinfoShowsLock reports whether fdinfo file path has a "lock:" line of
// the lock with key.
func fdinfoShowsLock(path, key string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, s := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(s, "lock:"); ok {
			if fl, _, err := parseLockLine(rest); err == nil && fl.key() == key {
				return true
			}
		}
	}
	return false
}

// lockIno is the inode number of the file of l.
func lockIno(l *lockLine) uint64 {
	n, _ := strconv.ParseUint(l.file[strings.LastIndexByte(l.file, ':')+1:], 10, 64)
	return n
}

// inodeKey is an inode as /proc/locks and smaps print it: "maj:min:ino"
// (device numbers in hex).
func inodeKey(major, minor uint32, ino uint64) string {
	return fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
}
