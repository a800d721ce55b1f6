package tests

// File locks (flock, POSIX record locks, OFD locks, leases) and the owner
// and mode of pty slaves.

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCR_PtyOwner: a pty slave chown'ed/chmod'ed while open, and one
// never opened chown'ed by path, keep their owner and mode (l_ptyowner.c).
func TestCR_PtyOwner(t *testing.T) {
	runCase(t, Case{Name: "l_ptyowner", Src: "l_ptyowner.c"})
}

// TestCR_FileLocks: flock, POSIX record locks (two processes) and an OFD
// lock, and a task waiting in F_SETLKW, dumped with --file-locks; checked
// from inside and from a checker forked after restore (l_locks.c).
func TestCR_FileLocks(t *testing.T) {
	var before []string
	var ino uint64
	runCase(t, Case{Name: "l_locks", Src: "l_locks.c", DumpArgs: []string{"--file-locks"}, RestoreArgs: []string{"--file-locks"},
		BeforeDump: func(t *testing.T, r *Run) {
			if before != nil {
				return
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(r.Dir, "locks.dat"), &st); err != nil {
				t.Fatal(err)
			}
			ino, before = st.Ino, locksOn(t, st.Ino)
		},
		Verify: func(t *testing.T, w *Run) {
			// the same locks, owners and waiters (pids included) as
			// before the first dump; the waiters queue again once they run
			var after []string
			for i := 0; i < 100; i++ {
				if after = locksOn(t, ino); strings.Join(after, "\n") == strings.Join(before, "\n") {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("/proc/locks after restore:\n%s\nbefore the dumps:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
			}
			out, stderr, err := ctrcr(t, "show", w.Images[len(w.Images)-1])
			if err != nil {
				t.Fatalf("show: %v\n%s", err, stderr)
			}
			for _, want := range []string{"locks: POSIX write lock on bytes 0-99, POSIX read lock on bytes 200-299",
				"locks: shared flock", "locks: OFD write lock on bytes 1000-1099", "locks: POSIX write lock on bytes 500-599"} {
				if !strings.Contains(out, want) {
					t.Errorf("show does not say %q:\n%s", want, out)
				}
			}
		}})
}

// refusedLockDump dumps the case (with --leave-running too) with args and
// requires a refusal whose message has every one of want, the case still
// running untraced, and its own check passing.
func refusedLockDump(t *testing.T, c Case, args []string, want ...string) {
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, c)
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	r := startCase(t, c)
	start := procStartTime(t, r.Pid)
	for _, leave := range []bool{false, true} {
		img := filepath.Join(t.TempDir(), "img")
		a := append([]string{"dump", "-t", strconv.Itoa(r.Pid), "-D", img}, args...)
		if leave {
			a = append(a, "--leave-running")
		}
		_, stderr, err := ctrcr(t, a...)
		requireExitCode(t, err, stderr, 1)
		requireNoPanic(t, stderr)
		for _, w := range append(want, strconv.Itoa(r.Pid)) {
			if !strings.Contains(stderr, w) {
				t.Errorf("dump %v: the error does not say %q:\n%s", a[5:], w, stderr)
			}
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("failed dump left a complete-looking image (%s/inventory.img)", img)
		}
		requireRunningUntraced(t, r.Pid)
		if st := procStartTime(t, r.Pid); st != start {
			t.Fatalf("pid %d is another process now (start time %s, was %s)", r.Pid, st, start)
		}
	}
	finishChild(t, r)
}

// TestNegative_FileLocksWithoutFlag: a tree holding file locks (l_locks.c)
// dumped without --file-locks is refused, naming a lock and the flag; the
// tree runs on and its locks (checked from inside) are intact.
func TestNegative_FileLocksWithoutFlag(t *testing.T) {
	refusedLockDump(t, Case{Name: "l_locks_noflag", Src: "l_locks.c"}, nil, "file lock (FLOCK READ lock)", "--file-locks")
}

// TestNegative_FileLease: a read lease is refused by name, even with
// --file-locks; the lease is still held afterwards.
func TestNegative_FileLease(t *testing.T) {
	refusedLockDump(t, Case{Name: "l_lease", Src: "l_lockrefused.c"}, []string{"--file-locks"}, "file lease (LEASE", "not supported")
}

// TestNegative_FileLockInFlight: an flock whose open file is in flight in
// a unix socket's queue (no fd shows it), on a file the process also maps
// through another open file, is refused, naming it, not lost nor given to
// the mapping.
func TestNegative_FileLockInFlight(t *testing.T) {
	refusedLockDump(t, Case{Name: "l_lockinflight", Src: "l_lockrefused.c", CFlags: []string{"-DLOCK_VARIANT=1"}},
		[]string{"--file-locks"}, "file lock (FLOCK WRITE lock)", "in flight")
}

// TestNegative_FileLockMappedTwice: an flock held only through mappings,
// on a file mapped twice (which one's open file holds it is unknown), is
// refused, naming it and the two mappings.
func TestNegative_FileLockMappedTwice(t *testing.T) {
	refusedLockDump(t, Case{Name: "l_lockmaptwice", Src: "l_lockrefused.c", CFlags: []string{"-DLOCK_VARIANT=2"}},
		[]string{"--file-locks"}, "file lock (FLOCK WRITE lock) held through a mapping", "mapped 2 times")
}

// TestCR_FileLockMapped: an flock and an OFD write lock each held only
// through a mapping (the fd closed after mmap, as a JVM's hsperfdata
// file), dumped with --file-locks: /proc/locks shows the same locks (kind,
// type, pid, inode) after each restore, and from inside the locks hold
// and go with the munmap (l_lockmap.c).
func TestCR_FileLockMapped(t *testing.T) {
	var before []string
	var inos []uint64
	runCase(t, Case{Name: "l_lockmap", Src: "l_lockmap.c", DumpArgs: []string{"--file-locks"}, RestoreArgs: []string{"--file-locks"},
		BeforeDump: func(t *testing.T, r *Run) {
			if before != nil {
				return
			}
			for _, n := range []string{"lockmap.dat", "lockmap_ofd.dat"} {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(r.Dir, n), &st); err != nil {
					t.Fatal(err)
				}
				inos = append(inos, st.Ino)
				before = append(before, locksOn(t, st.Ino)...)
			}
			if len(before) != 2 || !strings.HasPrefix(before[0], "FLOCK ADVISORY WRITE "+strconv.Itoa(r.Pid)+" ") || !strings.HasPrefix(before[1], "OFDLCK ADVISORY WRITE -1 ") {
				t.Fatalf("locks before the dumps:\n%s", strings.Join(before, "\n"))
			}
		},
		Verify: func(t *testing.T, w *Run) {
			var after []string
			for _, ino := range inos {
				after = append(after, locksOn(t, ino)...)
			}
			if strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("/proc/locks after restore:\n%s\nbefore the dumps:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
			}
			out, stderr, err := ctrcr(t, "show", w.Images[len(w.Images)-1])
			if err != nil {
				t.Fatalf("show: %v\n%s", err, stderr)
			}
			for _, want := range []string{"lockmap.dat locks of its file: exclusive flock", "lockmap_ofd.dat locks of its file: OFD write lock on bytes 0-99"} {
				if !strings.Contains(out, want) {
					t.Errorf("show does not say %q:\n%s", want, out)
				}
			}
		}})
}

// TestCR_DeadPidfd: pidfds of processes that exited and were reaped
// before the dump (an exit code, a signal death) come back dead with the
// same exit status (l_deadpidfd.c).
func TestCR_DeadPidfd(t *testing.T) {
	runCase(t, Case{Name: "l_deadpidfd", Src: "l_deadpidfd.c", Verify: func(t *testing.T, w *Run) {
		out, stderr, err := ctrcr(t, "show", w.Images[len(w.Images)-1])
		if err != nil {
			t.Fatalf("show: %v\n%s", err, stderr)
		}
		for _, want := range []string{"of an exited process (exit code 7)", "of an exited process (killed by signal 15)"} {
			if !strings.Contains(out, want) {
				t.Errorf("show does not say %q:\n%s", want, out)
			}
		}
	}})
}

// locksOn returns the /proc/locks lines on inode ino (without their
// ordinals, sorted): the locks held and waited for.
func locksOn(t *testing.T, ino uint64) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		f = f[1:]
		for _, x := range f {
			if strings.HasSuffix(x, ":"+strconv.FormatUint(ino, 10)) {
				out = append(out, strings.Join(f, " "))
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestCR_FileLocksLeaveRunning: dumps of l_locks with --file-locks
// --leave-running leave every lock and waiter as it was (/proc/locks),
// and the tree then passes its own checks.
func TestCR_FileLocksLeaveRunning(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, Case{Name: "l_locks_leave", Src: "l_locks.c"})
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(r.Dir, "locks.dat"), &st); err != nil {
		t.Fatal(err)
	}
	before := locksOn(t, st.Ino)
	if len(before) < 7 {
		t.Fatalf("l_locks holds/waits for %d locks, want 7:\n%s", len(before), strings.Join(before, "\n"))
	}
	for i := 0; i < 2; i++ {
		img := filepath.Join(t.TempDir(), "img")
		if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--file-locks", "--leave-running"); err != nil {
			t.Fatalf("dump --leave-running: %v\n%s", err, stderr)
		}
		requireRunningUntraced(t, r.Pid)
		time.Sleep(50 * time.Millisecond) // the waiters queue again
		if after := locksOn(t, st.Ino); strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Errorf("locks after dump %d --leave-running:\n%s\nwere:\n%s", i, strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
	}
	finishChild(t, r)
}
