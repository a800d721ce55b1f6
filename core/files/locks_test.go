package files

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func TestParseLockLine(t *testing.T) {
	for _, c := range []struct {
		line    string
		blocked bool
		want    lockLine
		name    string
	}{
		{"1: POSIX  ADVISORY  WRITE 23800 fe:00:9980945 10 29", false,
			lockLine{"POSIX", "ADVISORY", "WRITE", 23800, "fe:00:9980945", 10, 29}, "POSIX write lock on bytes 10-29"},
		{"4: FLOCK  ADVISORY  READ 23800 fe:00:9980945 0 EOF", false,
			lockLine{"FLOCK", "ADVISORY", "READ", 23800, "fe:00:9980945", 0, -1}, "shared flock"},
		{"1: OFDLCK ADVISORY  WRITE -1 fe:00:9980945 50 59", false,
			lockLine{"OFDLCK", "ADVISORY", "WRITE", -1, "fe:00:9980945", 50, 59}, "OFD write lock on bytes 50-59"},
		{"2: -> POSIX  ADVISORY  WRITE 77 fe:00:1 0 99", true,
			lockLine{"POSIX", "ADVISORY", "WRITE", 77, "fe:00:1", 0, 99}, "POSIX write lock on bytes 0-99"},
	} {
		l, blocked, err := parseLockLine(c.line)
		if err != nil || blocked != c.blocked || l != c.want {
			t.Errorf("parseLockLine(%q) = %+v, %v, %v; want %+v, %v", c.line, l, blocked, err, c.want, c.blocked)
			continue
		}
		fl, err := lockEntry(&l)
		if err != nil {
			t.Errorf("lockEntry(%q): %v", c.line, err)
			continue
		}
		if got := LockName(fl); got != c.name {
			t.Errorf("LockName(%q) = %q, want %q", c.line, got, c.name)
		}
	}
	for _, bad := range []string{"", "1: POSIX", "1: POSIX ADVISORY WRITE x fe:00:1 0 1", "1: POSIX ADVISORY WRITE 1 fe:00:1 9 3", "1: POSIX ADVISORY WRITE 1 fe:00:1 a EOF"} {
		if _, _, err := parseLockLine(bad); err == nil {
			t.Errorf("parseLockLine(%q): no error", bad)
		}
	}
	for line, want := range map[string]string{
		"1: LEASE  ACTIVE    READ 5 fe:00:1 0 EOF":  "file lease",
		"1: POSIX  MANDATORY WRITE 5 fe:00:1 0 EOF": "mandatory",
		"1: LEASE  BREAKING  UNLCK 5 fe:00:1 0 EOF": "file lease",
		"1: FLOCK  ADVISORY  UNLCK 5 fe:00:1 0 EOF": "in state UNLCK",
		"1: ACCESS ADVISORY  READ 5 fe:00:1 0 EOF":  "kind ACCESS",
	} {
		l, _, err := parseLockLine(line)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lockEntry(&l); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("lockEntry(%q) = %v, want an error with %q", line, err, want)
		}
	}
}

func TestFlockStruct(t *testing.T) {
	b, err := FlockStruct(&imagepb.FileLock{Kind: imagepb.FileLockKind_FILE_LOCK_POSIX, Write: true, Start: 10, Len: 20})
	if err != nil || len(b) != 32 || b[0] != 1 /* F_WRLCK */ || b[8] != 10 || b[16] != 20 {
		t.Errorf("FlockStruct = % x, %v", b, err)
	}
	for _, fl := range []*imagepb.FileLock{
		{Kind: 9}, {Kind: imagepb.FileLockKind_FILE_LOCK_POSIX, Start: -1},
		{Kind: imagepb.FileLockKind_FILE_LOCK_POSIX, Start: 1 << 62, Len: 1 << 62},
	} {
		if _, err := FlockStruct(fl); err == nil {
			t.Errorf("FlockStruct(%v): no error", fl)
		}
	}
}

// TestReadLockListingLarge: a /proc/locks listing larger than the first
// read's buffer is read whole (the read that fills the buffer is followed
// by more, never taken for the end).
func TestReadLockListingLarge(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "locked"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const n = 3000 // ~60 bytes a line: well past 64 KiB
	for i := 0; i < n; i++ {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: int64(2 * i), Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatalf("lock %d: %v", i, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// device and inode ("08:02:1234"): an inode number alone may be
	// another file system's file, locked by someone else
	ino := fmt.Sprintf(" %02x:%02x:%d ", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	// /proc/locks is the whole system's and read a page at a time by
	// position: a lock that someone else drops between two reads shifts
	// the list under the reader, so one line may be skipped. Three tries.
	var ls lockListing
	got := 0
	for try := 0; try < 3 && got != n; try++ {
		if ls = readLockListing(); ls.err != nil {
			t.Fatal(ls.err)
		}
		got = strings.Count(string(ls.data), ino)
	}
	if len(ls.data) < 64<<10 || got != n {
		t.Fatalf("listing of %d bytes holds %d of our %d locks", len(ls.data), got, n)
	}
}
