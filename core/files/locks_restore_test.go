package files

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestTakeFileLocks: the opener takes a file's flock and OFD locks on its
// open file description; a fresh open of the file sees them.
func TestTakeFileLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener([]*imagepb.FileEntry{{Id: 1, Kind: imagepb.FileKind_FILE_REG, Path: path, Flags: unix.O_RDWR, Mode: st.Mode, Size: st.Size,
		FileLocks: []*imagepb.FileLock{
			{Kind: imagepb.FileLockKind_FILE_LOCK_FLOCK, Pid: 1},
			{Kind: imagepb.FileLockKind_FILE_LOCK_OFD, Write: true, Start: 10, Len: 5, Pid: -1},
		}}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Finish()
	if err := o.TakeFileLocks(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		t.Errorf("flock LOCK_EX from a fresh open: %v, want EWOULDBLOCK", err)
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 14, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil || lk.Type != unix.F_WRLCK || lk.Start != 10 || lk.Len != 5 {
		t.Errorf("F_OFD_GETLK: %+v, %v; want the write lock on 10-14", lk, err)
	}
	bad, _ := NewOpener([]*imagepb.FileEntry{{Id: 1, Kind: imagepb.FileKind_FILE_REG, Path: path, Flags: unix.O_RDWR,
		FileLocks: []*imagepb.FileLock{{Kind: imagepb.FileLockKind_FILE_LOCK_POSIX}}}})
	defer bad.Finish()
	if err := bad.TakeFileLocks(); err == nil {
		t.Error("a POSIX lock among a file's locks: no error")
	}
}
