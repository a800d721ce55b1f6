package files

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// lockLine is one lock as /proc/locks and the fdinfo "lock:" lines print
// it: "1: POSIX  ADVISORY  WRITE 23800 fe:00:9980945 10 29" (kind, mode,
// type, pid, maj:min:ino, first and last byte or EOF).
type lockLine struct {
	kind, mode, typ string
	pid             int
	file            string // maj:min:ino
	start, end      int64  // end -1: EOF
}

// key identifies the lock among the locks of the system (without the
// per-listing ordinal).
func (l *lockLine) key() string {
	return fmt.Sprintf("%s %s %d %s %d %d", l.kind, l.typ, l.pid, l.file, l.start, l.end)
}

// String names the lock for errors: "POSIX WRITE lock on bytes 10-29".
func (l *lockLine) String() string {
	what := fmt.Sprintf("%s %s lock", l.kind, l.typ)
	if l.kind == "FLOCK" {
		return what
	}
	if l.end < 0 {
		return fmt.Sprintf("%s on bytes %d-EOF", what, l.start)
	}
	return fmt.Sprintf("%s on bytes %d-%d", what, l.start, l.end)
}

// parseLockLine parses a lock line without its "lock:" prefix. blocked
// reports a waiter line ("1: -> POSIX ..." in /proc/locks).
func parseLockLine(s string) (l lockLine, blocked bool, err error) {
	f := strings.Fields(s)
	if len(f) > 0 && strings.HasSuffix(f[0], ":") {
		f = f[1:]
	}
	if len(f) > 0 && f[0] == "->" {
		blocked = true
		f = f[1:]
	}
	if len(f) != 7 {
		return l, blocked, fmt.Errorf("lock line %q: %d fields, want 7", s, len(f))
	}
	l.kind, l.mode, l.typ, l.file = f[0], f[1], f[2], f[4]
	if l.pid, err = strconv.Atoi(f[3]); err != nil {
		return l, blocked, fmt.Errorf("lock line %q: pid: %w", s, err)
	}
	if l.start, err = strconv.ParseInt(f[5], 10, 64); err != nil {
		return l, blocked, fmt.Errorf("lock line %q: start: %w", s, err)
	}
	l.end = -1
	if f[6] != "EOF" {
		if l.end, err = strconv.ParseInt(f[6], 10, 64); err != nil || l.end < l.start {
			return l, blocked, fmt.Errorf("lock line %q: bad end", s)
		}
	}
	return l, blocked, nil
}

// lockState is what the dump learnt about file locks: the locks recorded
// (by key, for CheckLocks) and which (pid, file) and file were read.
type lockState struct {
	listing  chan lockListing    // /proc/locks read ahead (PrefetchLocks), or nil
	recorded map[string]int      // how many of each lock (identical ones may be held through several files)
	posixOf  map[[2]int]bool     // (pid, file id) whose POSIX locks are read
	fileOf   map[uint32]bool     // file ids whose flock/OFD locks are read
	maps     map[string][]mapUse // file VMAs of the dump by inode (NoteMapping)
	inFlight map[uint64]bool     // inode numbers of files in flight (noteInFlight)
	unwarm   func()              // ends WarmLocks (nil: not warming)
}

// fdLocks records the locks fdinfo shows for fd of pid (entry e, file
// id): POSIX locks of pid on e, flock and OFD locks on the file (once per
// open file description). Without opts.FileLocks any lock is refused,
// naming it; leases and other kinds are always refused.
func (t *Table) fdLocks(pid, fd int, link string, fi *procfs.FdInfo, e *imagepb.FdEntry, opts Options) error {
	lines := fi.Fields["lock"]
	if len(lines) == 0 {
		return nil
	}
	ls := &t.locks
	if ls.recorded == nil {
		ls.recorded, ls.posixOf, ls.fileOf = map[string]int{}, map[[2]int]bool{}, map[uint32]bool{}
	}
	f := t.fileByID(e.FileId)
	doPosix, doFile := !ls.posixOf[[2]int{pid, int(e.FileId)}], !ls.fileOf[e.FileId]
	ls.posixOf[[2]int{pid, int(e.FileId)}], ls.fileOf[e.FileId] = true, true
	for _, s := range lines {
		l, _, err := parseLockLine(s)
		if err != nil {
			return fmt.Errorf("fd %d (%s): fdinfo: %w", fd, link, err)
		}
		fl, err := lockEntry(&l)
		if err != nil {
			return fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		if !opts.FileLocks {
			return fmt.Errorf("fd %d (%s): file lock (%s): not supported without --file-locks (dump with --file-locks to carry file locks)", fd, link, l.String())
		}
		switch fl.Kind {
		case imagepb.FileLockKind_FILE_LOCK_POSIX:
			// shown in every process sharing the owner's fd table: the
			// owner records it
			if !doPosix || l.pid != pid {
				continue
			}
			e.PosixLocks = append(e.PosixLocks, fl)
		default:
			if !doFile || f == nil {
				continue
			}
			f.FileLocks = append(f.FileLocks, fl)
		}
		ls.recorded[l.key()]++
	}
	return nil
}

// lockEntry converts a lock line of a supported kind; the error names an
// unsupported one.
func lockEntry(l *lockLine) (*imagepb.FileLock, error) {
	fl := &imagepb.FileLock{Start: l.start, Pid: int32(l.pid)}
	switch l.kind {
	case "FLOCK":
		fl.Kind = imagepb.FileLockKind_FILE_LOCK_FLOCK
	case "POSIX":
		fl.Kind = imagepb.FileLockKind_FILE_LOCK_POSIX
	case "OFDLCK":
		fl.Kind, fl.Pid = imagepb.FileLockKind_FILE_LOCK_OFD, -1
	case "LEASE", "DELEG":
		return nil, fmt.Errorf("file lease (%s %s %s): not supported (a lease cannot be taken again on restore)", l.kind, l.mode, l.typ)
	default:
		return nil, fmt.Errorf("file lock of kind %s (%s): not supported", l.kind, l.String())
	}
	if l.mode != "ADVISORY" {
		return nil, fmt.Errorf("%s file lock (%s): not supported", strings.ToLower(l.mode), l.String())
	}
	switch l.typ {
	case "READ":
	case "WRITE":
		fl.Write = true
	default:
		return nil, fmt.Errorf("file lock (%s) in state %s: not supported", l.String(), l.typ)
	}
	if l.end >= 0 {
		fl.Len = l.end - l.start + 1
	}
	return fl, nil
}

// fileByID returns the entry with id (ids are handed out in order).
func (t *Table) fileByID(id uint32) *imagepb.FileEntry {
	if i := int(id) - 1; i >= 0 && i < len(t.Files) && t.Files[i].Id == id {
		return t.Files[i]
	}
	for _, f := range t.Files {
		if f.Id == id {
			return f
		}
	}
	return nil
}

// CheckLocks verifies, once every fd and mapping of the dump is read, that
// every lock /proc/locks lists for a process of the dump was recorded: a
// flock or OFD lock the fdinfo of no fd shows is given to the mapping that
// holds it (lockOnMapping); any other (a flock on a file in flight in a
// socket, any lock without --file-locks) is refused, naming it, instead of
// being lost. OFD locks print no pid: one counts as the dump's only on an
// inode the dump maps and no fd outside it shows the lock.
func (t *Table) CheckLocks(inDump func(pid int) bool, opts Options) error {
	var ls lockListing
	if t.locks.listing != nil {
		ls = <-t.locks.listing
	} else {
		ls = readLockListing()
	}
	if ls.err != nil {
		return fmt.Errorf("file locks: %w", ls.err)
	}
	sc := bufio.NewScanner(bytes.NewReader(ls.data))
	for sc.Scan() {
		l, blocked, err := parseLockLine(sc.Text())
		if err != nil {
			return fmt.Errorf("/proc/locks: %w", err)
		}
		if blocked {
			continue
		}
		if k := l.key(); t.locks.recorded[k] > 0 {
			t.locks.recorded[k]-- // this line is one of those recorded
			continue
		}
		if err := t.checkUnrecorded(&l, inDump, opts); err != nil {
			return err
		}
	}
	return sc.Err()
}

// lockListing is /proc/locks as read once.
type lockListing struct {
	data []byte
	err  error
}

// readLockListing reads /proc/locks. Every read(2) of it takes the
// kernel's file_rwsem for writing, which waits for an RCU grace period:
// 10-30 ms on this machine kind, whatever the listing holds. So it is read
// in as few calls as possible. seq_file hands out at most one page of
// whole lines a call, stopping only at a line that no longer fits: a read
// that leaves more than a line's room free (lock lines are well under
// 256 bytes) has reached the end, and the usual extra read that returns 0
// is skipped. (The rest of the latency is hidden by PrefetchLocks.)
func readLockListing() lockListing {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return lockListing{err: err}
	}
	defer f.Close()
	var data []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		data = append(data, buf[:n]...)
		if err == io.EOF || n == 0 {
			return lockListing{data: data}
		}
		if err != nil {
			return lockListing{err: err}
		}
		if n < os.Getpagesize()-512 {
			return lockListing{data: data}
		}
	}
}

// PrefetchLocks starts reading /proc/locks on another goroutine, for
// CheckLocks. Called once the tree can no longer change its locks (seized
// or frozen), it takes that read's fixed latency (see readLockListing)
// off the frozen time: the rest of the dump's reading overlaps it; with
// WarmLocks called earlier, the read itself is short too.
func (t *Table) PrefetchLocks() {
	ch := make(chan lockListing, 1)
	t.locks.listing = ch
	unwarm := t.locks.unwarm
	go func() {
		ch <- readLockListing()
		if unwarm != nil {
			unwarm() // the listing is in: no more warming needed
		}
	}()
}

// checkUnrecorded records lock l, which no fd of the dump showed, on the
// mapping that holds it, skips it if it is not the dump's, or refuses it.
func (t *Table) checkUnrecorded(l *lockLine, inDump func(pid int) bool, opts Options) error {
	ofd := l.kind == "OFDLCK" && l.pid <= 0
	switch {
	case ofd && len(t.locks.maps[l.file]) == 0:
		return nil // on no inode of the dump's mappings: not the dump's
	case ofd:
		if outside, err := lockShownByFd(l); err != nil || outside {
			return err
		}
	case l.pid <= 0 || !inDump(l.pid):
		return nil
	}
	name := fmt.Sprintf("inode %s", l.file)
	if !ofd {
		name = fmt.Sprintf("pid %d: %s", l.pid, name)
	}
	fl, err := lockEntry(l)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if !opts.FileLocks {
		return fmt.Errorf("%s: file lock (%s): not supported without --file-locks (dump with --file-locks to carry file locks)", name, l.String())
	}
	ok, err := t.lockOnMapping(l, fl)
	if err != nil || ok || ofd {
		return err
	}
	return fmt.Errorf("%s: file lock (%s) held through no fd of the dump (the file is in flight in a socket, or mapped by a process outside the dump): not supported", name, l.String())
}
