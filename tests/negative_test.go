package tests

// Negative tests: ctr-cr must fail cleanly, with a message that says what is
// wrong, and leave the system as it found it: the dumped process running
// untouched after a failed dump, nothing running after a failed restore.
//
// Under CTRCR_NOCR=1 only the case programs are exercised (start, go, PASS);
// the ctr-cr parts are skipped.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// Fds of the unix socketpair in b_unsupfd.c.
const unsupFdA, unsupFdB = 42, 43

// TestNegative_UnsupportedFD: dumping a process with a unix socketpair fails
// with exit 1 naming the fd and "socket", with and without --leave-running,
// and leaves the process running, not stopped, not traced and working.
func TestNegative_UnsupportedFD(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, Case{Name: "b_unsupfd", Src: "b_unsupfd.c"})
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	for _, leave := range []bool{false, true} {
		name := "kill"
		if leave {
			name = "leave-running"
		}
		t.Run(name, func(t *testing.T) {
			r := startCase(t, Case{Name: "b_unsupfd", Src: "b_unsupfd.c"})
			start := procStartTime(t, r.Pid)
			img := filepath.Join(t.TempDir(), "img")
			if err := os.Mkdir(img, 0o755); err != nil {
				t.Fatal(err)
			}
			args := []string{"dump", "-t", strconv.Itoa(r.Pid), "-D", img}
			if leave {
				args = append(args, "--leave-running")
			}
			_, stderr, err := ctrcr(t, args...)
			requireExitCode(t, err, stderr, 1)
			requireNoPanic(t, stderr)
			fdRe := regexp.MustCompile(fmt.Sprintf(`\bfd\W{0,3}(%d|%d)\b`, unsupFdA, unsupFdB))
			if !fdRe.MatchString(stderr) || !strings.Contains(stderr, "socket") {
				t.Errorf("dump error does not name fd %d/%d and \"socket\":\n%s", unsupFdA, unsupFdB, stderr)
			}
			if !strings.Contains(stderr, strconv.Itoa(r.Pid)) {
				t.Errorf("dump error does not name pid %d:\n%s", r.Pid, stderr)
			}
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
				t.Errorf("failed dump left a complete-looking image (%s/inventory.img)", img)
			}

			requireRunningUntraced(t, r.Pid)
			if st := procStartTime(t, r.Pid); st != start {
				t.Fatalf("pid %d is another process now (start time %s, was %s)", r.Pid, st, start)
			}
			finishChild(t, r)
		})
	}
}

// TestNegative_PidTaken: restoring an image while its pid is still in use
// fails, naming the pid, and leaves the original alone and nothing new.
func TestNegative_PidTaken(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	r := startCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
	comm := procComm(t, r.Pid)
	start := procStartTime(t, r.Pid)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running"); err != nil {
		t.Fatalf("dump --leave-running: %v\n%s", err, stderr)
	}
	requireRunningUntraced(t, r.Pid)
	before := pidsWithComm(comm)

	_, stderr, err := ctrcr(t, "restore", "-D", img, "-d")
	requireFailed(t, err, stderr)
	requireNoPanic(t, stderr)
	pidRe := regexp.MustCompile(`\b` + strconv.Itoa(r.Pid) + `\b`)
	if !pidRe.MatchString(stderr) || !(strings.Contains(stderr, "in use") || strings.Contains(stderr, "taken")) {
		t.Errorf("restore error does not say pid %d is in use/taken:\n%s", r.Pid, stderr)
	}

	// Nothing new: no second process of the case (give a wrongly
	// started one a moment to show up).
	time.Sleep(200 * time.Millisecond)
	for pid := range pidsWithComm(comm) {
		if before[pid] {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil &&
			cwd != r.Dir && !strings.HasPrefix(cwd, r.Dir+"/") {
			continue // someone else's process that happens to share the name
		}
		t.Errorf("a new %q process (pid %d) is running after the failed restore", comm, pid)
		if isCase(pid, r.Dir) {
			killAndReap(pid)
		}
	}

	// The original is untouched and still passes.
	if st := procStartTime(t, r.Pid); st != start {
		t.Fatalf("pid %d is another process now (start time %s, was %s)", r.Pid, st, start)
	}
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}

// TestNegative_CorruptImage: restoring a damaged image fails with a clear
// message and leaves nothing running; the intact image still restores.
func TestNegative_CorruptImage(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	r := startCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
	tids, err := listTids(r.Pid)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img); err != nil {
		t.Fatalf("dump: %v\n%s", err, stderr)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatalf("after dump: %v", err)
	}
	pid := strconv.Itoa(r.Pid)
	pages := pagesFile(t, img, r.Pid)

	corruptions := []struct {
		name   string
		file   string // image file damaged, named in the error unless noName
		noName bool
		damage func(path string) error
	}{
		{"flip-bit-core", "core-" + pid + ".img", false, flipBit},
		// found while the pages are copied into the new task (their
		// checksum is verified in that single read), before it runs
		{"flip-bit-pages", pages, false, flipBit},
		// in the last page (the stack's: one the task reads from the
		// image itself, caught by the checksum computed beside it)
		{"flip-bit-pages-last", pages, false, flipLastPage},
		{"truncate-pages", pages, false, func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			if fi.Size() < 4096 {
				return fmt.Errorf("%s has only %d bytes", p, fi.Size())
			}
			return os.Truncate(p, fi.Size()-4096)
		}},
		{"delete-inventory", "inventory.img", false, os.Remove},
		{"garbage-mm", "mm-" + pid + ".img", true, func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			garbage := make([]byte, fi.Size())
			for i := range garbage {
				garbage[i] = byte(i*167 + 13)
			}
			return os.WriteFile(p, garbage, 0o644)
		}},
	}
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "img")
			if err := copyDir(img, dir); err != nil {
				t.Fatal(err)
			}
			if err := c.damage(filepath.Join(dir, c.file)); err != nil {
				t.Fatalf("damaging %s: %v", c.file, err)
			}
			// -d: should the restore wrongly succeed, it returns instead of
			// waiting for a case that waits for "go".
			_, stderr, err := ctrcr(t, "restore", "-D", dir, "-d")
			requireFailed(t, err, stderr)
			requireNoPanic(t, stderr)
			if strings.TrimSpace(stderr) == "" {
				t.Errorf("restore failed without a message")
			}
			if !c.noName && !strings.Contains(stderr, c.file) {
				t.Errorf("restore error does not name %s:\n%s", c.file, stderr)
			}
			requireNothingLeft(t, r)
		})
	}

	// The intact image still restores and the case passes.
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
		t.Fatalf("restore of the intact image: %v\n%s", err, stderr)
	}
	if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
		t.Fatalf("after restore -d: %v", err)
	}
	finishChild(t, r)
}

// TestNegative_DumpNoSuchPid: dumping a pid that does not exist fails with
// exit 1 and names the pid.
func TestNegative_DumpNoSuchPid(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: needs ctr-cr")
	}
	pid := freePid(t)
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(pid), "-D", t.TempDir())
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	if !regexp.MustCompile(`\b` + strconv.Itoa(pid) + `\b`).MatchString(stderr) {
		t.Errorf("dump error does not name pid %d:\n%s", pid, stderr)
	}
}

// ---------------------------------------------------------------------------
// Helpers.

// requireExitCode requires that ctr-cr ran and exited with code.
func requireExitCode(t *testing.T, err error, stderr string, code int) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("ctr-cr: want exit status %d, got %v\nstderr:\n%s", code, err, stderr)
	}
	if ee.ExitCode() != code {
		t.Fatalf("ctr-cr: exit status %d (%v), want %d\nstderr:\n%s", ee.ExitCode(), err, code, stderr)
	}
	t.Logf("ctr-cr failed as expected: %s", strings.TrimSpace(stderr))
}

// requireFailed requires that ctr-cr ran and exited non-zero (not by a
// signal or a timeout).
func requireFailed(t *testing.T, err error, stderr string) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
		t.Fatalf("ctr-cr: want a non-zero exit status, got %v\nstderr:\n%s", err, stderr)
	}
	t.Logf("ctr-cr failed as expected (%v): %s", err, strings.TrimSpace(stderr))
}

// requireNoPanic fails when stderr shows a Go panic or a goroutine dump.
func requireNoPanic(t *testing.T, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("ctr-cr panicked:\n%s", stderr)
	}
}

// requireRunningUntraced requires every thread of pid to be running or
// sleeping (not stopped, not a zombie) and not traced. A short grace period
// covers the target being woken while ctr-cr exits.
func requireRunningUntraced(t *testing.T, pid int) {
	t.Helper()
	var bad string
	deadline := time.Now().Add(2 * time.Second)
	for {
		bad = ""
		tids, err := listTids(pid)
		if err != nil {
			t.Fatalf("pid %d is gone: %v", pid, err)
		}
		for _, tid := range tids {
			state, tracer, err := taskStatus(pid, tid)
			if err != nil {
				bad = err.Error()
			} else if (state != "S" && state != "R") || tracer != "0" {
				bad = fmt.Sprintf("thread %d: State %s, TracerPid %s", tid, state, tracer)
			}
			if bad != "" {
				break
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not left running: %s", pid, bad)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// taskStatus returns the State letter and TracerPid of /proc/pid/task/tid.
func taskStatus(pid, tid int) (state, tracer string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return "", "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch {
		case k == "State" && len(f) > 0:
			state = f[0]
		case k == "TracerPid" && len(f) > 0:
			tracer = f[0]
		}
	}
	if state == "" || tracer == "" {
		return "", "", fmt.Errorf("task %d: no State/TracerPid in status", tid)
	}
	return state, tracer, nil
}

// procStartTime returns field 22 (starttime) of /proc/pid/stat, which tells
// a process from a later one with the same pid.
func procStartTime(t *testing.T, pid int) string {
	t.Helper()
	f, err := testutil.StatFields(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	if len(f) < 20 {
		t.Fatalf("pid %d: short stat %q", pid, f)
	}
	return f[19] // field 3 is f[0]
}

func procComm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return strings.TrimSpace(string(b))
}

// pidsWithComm returns the live processes whose comm is comm.
func pidsWithComm(comm string) map[int]bool {
	pids := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(b)) == comm {
			if st := procState(pid); st != "" && st != "Z" && st != "X" {
				pids[pid] = true
			}
		}
	}
	return pids
}

// finishChild creates "go" and requires the case (our child, or reparented
// to us as the subreaper) to exit 0 with a last line PASS.
func finishChild(t *testing.T, r *Run) {
	t.Helper()
	r.requestGo()
	status, err := waitChild(r.Pid, goTimeout)
	if err != nil {
		// Not our child after all: wait for it to go away and judge by
		// its output alone.
		if err := waitGone(r.Pid, goTimeout); err != nil {
			r.fatalf("", "after go: %v", err)
		}
		r.requirePass("")
		return
	}
	if !status.Exited() || status.ExitStatus() != 0 {
		r.fatalf("", "case ended with %s", describeStatus(status))
	}
	r.requirePass("")
}

// requireNothingLeft requires that the dumped case's pid is not running
// (after a failed restore); a wrongly restored case is killed. A zombie
// (killed by ctr-cr, reparented to us unreaped) is only reaped and logged.
func requireNothingLeft(t *testing.T, r *Run) {
	t.Helper()
	time.Sleep(100 * time.Millisecond)
	st := procState(r.Pid)
	switch st {
	case "":
		return
	case "Z", "X":
		var ws unix.WaitStatus
		if wpid, _ := unix.Wait4(r.Pid, &ws, unix.WNOHANG, nil); wpid == r.Pid {
			t.Logf("reaped a zombie pid %d left by the failed restore", r.Pid)
			return
		}
	}
	if isCase(r.Pid, r.Dir) {
		killAndReap(r.Pid)
	}
	t.Errorf("pid %d exists after the failed restore (state %s)", r.Pid, st)
}

// pagesFile names the page data file of pid in img: pages-<pid>.img, or
// else the largest pages-*.img.
func pagesFile(t *testing.T, img string, pid int) string {
	t.Helper()
	name := fmt.Sprintf("pages-%d.img", pid)
	if _, err := os.Stat(filepath.Join(img, name)); err == nil {
		return name
	}
	matches, _ := filepath.Glob(filepath.Join(img, "pages-*.img"))
	var best string
	var bestSize int64 = -1
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.Size() > bestSize {
			best, bestSize = filepath.Base(m), fi.Size()
		}
	}
	if best == "" {
		ents, _ := os.ReadDir(img)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("no pages-*.img in %s: %v", img, names)
	}
	return best
}

// flipBit inverts one bit in the middle of the file.
func flipBit(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	b[len(b)/2] ^= 0x10
	return os.WriteFile(path, b, 0o644)
}

// flipLastPage flips a bit in the last page of the file at path.
func flipLastPage(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) < 4096 {
		return fmt.Errorf("%s has only %d bytes", path, len(b))
	}
	b[len(b)-4096+123] ^= 0x01
	return os.WriteFile(path, b, 0o644)
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(src, dst string) error { return testutil.CopyDir(src, dst) }

// freePid returns a pid with no process (nor thread) behind it, from the
// top of the pid range, where reuse is least likely.
func freePid(t *testing.T) int {
	t.Helper()
	max := 32768
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			max = n
		}
	}
	for pid := max - 1; pid > 300; pid-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no free pid")
	return 0
}

// requireRefusedDump starts case c, dumps it and requires the dump to fail
// with exit status 1 (no panic), stderr passing check, no complete-looking
// image, and the case still the same process, running, untraced; then lets
// it finish. Under
// CTRCR_NOCR=1 it runs the case program alone and skips.
func requireRefusedDump(t *testing.T, c Case, check func(t *testing.T, stderr string, pid int)) {
	t.Helper()
	testutil.RequiresRoot(t)
	if noCR {
		runCase(t, c)
		t.Skip("CTRCR_NOCR=1: case program checked, ctr-cr part skipped")
	}
	r := startCase(t, c)
	start := procStartTime(t, r.Pid)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	check(t, stderr, r.Pid)
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("the failed dump left a complete-looking image")
	}
	requireRunningUntraced(t, r.Pid)
	if st := procStartTime(t, r.Pid); st != start {
		t.Fatalf("pid %d is another process now (start time %s, was %s)", r.Pid, st, start)
	}
	finishChild(t, r)
}

// TestNegative_ForeignNamespaces: `dump -t` of a process living in a
// mount namespace other than ctr-cr's (without its own pid namespace) or
// a time namespace, a tree whose tasks do not
// share the root's UTS or IPC namespace, or a root in another pid
// namespace without being its init, is refused naming the namespace: a
// process restore would move it into the restorer's (the host's /etc for a
// container's process, another hostname, other pids), silently. The
// process runs on untouched.
func TestNegative_ForeignNamespaces(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "unshare")
	bin := buildCase(t, "b_brk.c", nil)
	for _, c := range []struct {
		name string
		argv []string
		want string
	}{
		{"mnt", []string{"unshare", "--mount", "--", bin, "{WORKDIR}"}, "another mnt namespace"},
		{"time", []string{"unshare", "--time", "--", bin, "{WORKDIR}"}, "another time namespace"},
		// carried kinds (ipc, uts) are refused when the tree does not share
		// the root's: one namespace of each kind per restored tree
		{"uts-child", []string{"unshare", "--uts", "--", "sh", "-c", "unshare --uts -- " + bin + " {WORKDIR} & wait"}, "another uts namespace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			requireRefusedDump(t, Case{Name: "ns_" + c.name, Cmd: c.argv}, func(t *testing.T, stderr string, pid int) {
				if !strings.Contains(stderr, c.want) || !strings.Contains(stderr, strconv.Itoa(pid)) {
					t.Errorf("dump error does not name pid %d and %q:\n%s", pid, c.want, stderr)
				}
			})
		})
	}
}
