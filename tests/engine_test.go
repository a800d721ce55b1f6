package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCR_FdKinds: memfd, eventfd and epoll fds rebuilt from the image;
// ctr-cr show names each fd's key facts.
func TestCR_FdKinds(t *testing.T) {
	runCase(t, Case{Name: "FdKinds", Src: "e_fdkinds.c", Verify: func(t *testing.T, r *Run) {
		if noCR {
			return
		}
		out, stderr, err := ctrcr(t, "show", r.Images[0])
		if err != nil {
			t.Fatalf("show: %v\n%s", err, stderr)
		}
		for _, re := range []string{
			`\b3 memfd .* memfd "[^"]+", \d+ bytes`,
			`\b4 eventfd .* count 5\b`,
			`\b5 eventfd .* count 3 semaphore`,
			`\b7 pipe .* pipe \d+`,
			`\b9 epoll .* 2 target\(s\) \[fd 4 events 0x\w+ data 0x\w+, fd 7 `,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("ctr-cr show has no line matching %q:\n%s", re, out)
			}
		}
	}})
}

// TestCR_NsLastPid: the ns_last_pid fallback gives the same pid and tids (a
// multi-threaded case), both cycles.
func TestCR_NsLastPid(t *testing.T) {
	runCase(t, Case{Name: "NsLastPid", Src: "a_tls_threads.c", RestoreArgs: []string{"--pid-method", "ns_last_pid"}})
}

func readNsLastPid(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNsLastPidCursorPutBack: the host-global ns_last_pid cursor is not left
// rewound to the restored pid (other forks on the host would then collide
// with the pids and tids being restored).
func TestNsLastPidCursorPutBack(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "NsLastPidCursor", Src: "b_brk.c"})
	img := filepath.Join(t.TempDir(), "img")
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img); err != nil {
		r.fatalf(stderr, "dump: %v", err)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	before := readNsLastPid(t)
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d", "--pid-method", "ns_last_pid"); err != nil {
		r.fatalf(stderr, "restore: %v", err)
	}
	after := readNsLastPid(t)
	// Left rewound, the cursor would sit just above the restored pid; it
	// may also have wrapped around pid_max meanwhile (a busy host), which
	// is fine.
	if before > r.Pid+16 && after >= r.Pid && after < r.Pid+16 {
		t.Errorf("ns_last_pid is %d after restoring pid %d, was %d before: the cursor was not put back", after, r.Pid, before)
	}
	finishChild(t, r)
}

// TestLeaveRunning: dumps with --leave-running leave the case running and
// untraced; the image taken that way restores once the original is gone.
func TestLeaveRunning(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "LeaveRunning", Src: "a_signals.c"})
	var img string
	for i := 0; i < 2; i++ {
		img = filepath.Join(t.TempDir(), "img")
		if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running"); err != nil {
			r.fatalf(stderr, "dump --leave-running %d: %v", i, err)
		}
		requireRunningUntraced(t, r.Pid)
	}
	killAndReap(r.Pid)
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
		r.fatalf(stderr, "restore: %v", err)
	}
	finishChild(t, r)
}

// TestGhostLimit: a deleted open file larger than --ghost-limit fails the
// dump with a message naming the limit; the process keeps running and works.
func TestGhostLimit(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "GhostLimit", Src: "b_deleted.c"})
	img := filepath.Join(t.TempDir(), "img")
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--ghost-limit", "4K")
	if err == nil {
		t.Fatalf("dump with --ghost-limit 4K of a 64 KiB deleted file succeeded")
	}
	if !strings.Contains(stderr, "ghost-limit") || !strings.Contains(stderr, "deleted") {
		t.Errorf("dump error does not explain the ghost limit:\n%s", stderr)
	}
	requireNoPanic(t, stderr)
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}

// TestInterruptedDump: SIGINT during the memory phase of a dump stops it;
// the process runs on exactly as before (its code, registers, signal mask
// and memory intact: it still verifies), no image is left looking complete.
func TestInterruptedDump(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "InterruptedDump", Src: "e_bigmem.c", Cmd: nil, ReadyTimeout: 60 * time.Second})
	img := filepath.Join(t.TempDir(), "img")
	cmd := exec.Command(r.Bin, "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// interrupt once the dumper has seized the target
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, tracer, _ := taskStatus(r.Pid, r.Pid)
		if tracer != "" && tracer != "0" {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("dumper never seized the target")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("dump finished despite SIGINT (512 MiB dumped too fast?); stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("dump error does not say it was interrupted:\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("interrupted dump left %s/inventory.img", img)
	}
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}

// TestShowAndCheck: every file of an image decodes as JSON with show -f, the
// summary names the process, and check reports no required feature missing.
func TestShowAndCheck(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "Show", Src: "b_vmas.c"})
	img := filepath.Join(t.TempDir(), "img")
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running"); err != nil {
		r.fatalf(stderr, "dump: %v", err)
	}
	ents, err := os.ReadDir(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		out, stderr, err := ctrcr(t, "show", "-f", filepath.Join(img, e.Name()))
		if err != nil {
			t.Errorf("show -f %s: %v\n%s", e.Name(), err, stderr)
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("show -f %s: not JSON: %v", e.Name(), err)
		}
	}
	out, stderr, err := ctrcr(t, "show", img)
	if err != nil {
		t.Fatalf("show: %v\n%s", err, stderr)
	}
	for _, want := range []string{"process " + strconv.Itoa(r.Pid), "[stack]", "[heap]", "memfd", "/dev/zero", "files:"} {
		if !strings.Contains(out, want) {
			t.Errorf("show summary lacks %q:\n%s", want, out)
		}
	}
	out, stderr, err = ctrcr(t, "check")
	if err != nil {
		t.Errorf("check: %v\n%s\n%s", err, out, stderr)
	}
	for _, want := range []string{"ptrace-seize", "pidfd-getfd", "clone3-set-tid", "prctl-mm-map"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q", want)
		}
	}
	finishChild(t, r)
}

// statField returns field n (1-based, proc(5)) of /proc/PID/stat.
func statField(t *testing.T, pid, n int) string {
	t.Helper()
	f, err := testutil.StatFields(pid)
	if err != nil {
		t.Fatal(err)
	}
	return f[n-3]
}

// TestCR_SessionLeader: a process that leads its session and group (cases
// run under setsid) still does after restore.
func TestCR_SessionLeader(t *testing.T) {
	runCase(t, Case{Name: "SessionLeader", Src: "b_brk.c", Verify: func(t *testing.T, r *Run) {
		pgrp, sid := statField(t, r.Pid, 5), statField(t, r.Pid, 6)
		if pgrp != strconv.Itoa(r.Pid) || sid != strconv.Itoa(r.Pid) {
			t.Errorf("after restore pgrp %s sid %s, want both %d", pgrp, sid, r.Pid)
		}
	}})
}

// TestFileChangedSinceDump: a file the process has open that changed size
// after the dump makes restore fail, naming the file, with nothing left
// running; put back as it was, the image restores.
func TestFileChangedSinceDump(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "FileChanged", Src: "b_brk.c"})
	img := filepath.Join(t.TempDir(), "img")
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img); err != nil {
		r.fatalf(stderr, "dump: %v", err)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(r.Out)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(r.Out, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("appended after the dump\n")
	f.Close()
	_, stderr, err := ctrcr(t, "restore", "-D", img, "-d")
	if err == nil {
		t.Fatal("restore succeeded although the case's out file changed size")
	}
	if !strings.Contains(stderr, r.Out) || !strings.Contains(stderr, "size") {
		t.Errorf("restore error does not name %s and its size:\n%s", r.Out, stderr)
	}
	requireNoPanic(t, stderr)
	requireNothingLeft(t, r)
	if err := os.Truncate(r.Out, st.Size()); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
		r.fatalf(stderr, "restore after putting the file back: %v", err)
	}
	finishChild(t, r)
}

// TestCR_Child: a process with a child is dumped with it; after restore the
// child is still the parent's (same pid), alive, and reaped with its status.
func TestCR_Child(t *testing.T) {
	runCase(t, Case{Name: "Child", Src: "e_child.c"})
}

// openPty returns a pty master and the path of its slave.
func openPty(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// startOnTerminal starts argv as a session leader whose stdio and
// controlling terminal is the pty slave.
func startOnTerminal(t *testing.T, slave string, argv ...string) *exec.Cmd {
	t.Helper()
	s, err := os.OpenFile(slave, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = s, s, s
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// expectOutput reads the pty master until want appears.
func expectOutput(t *testing.T, m *os.File, want string) {
	t.Helper()
	var got strings.Builder
	buf := make([]byte, 512)
	m.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !strings.Contains(got.String(), want) {
		n, err := m.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("terminal: waiting for %q: %v; got %q", want, err, got.String())
		}
	}
}

// startShellJobCase starts case src as a job on a new pty (master m,
// slave), in a work directory of its own, waits for it to be ready and
// checks that it answers on the terminal ("one" -> "echo:one").
func startShellJobCase(t *testing.T, src string) (m *os.File, slave string, job *exec.Cmd, dir string) {
	t.Helper()
	prog := buildCase(t, src, nil)
	dir = t.TempDir()
	os.Chmod(dir, 0o755)
	m, slave = openPty(t)
	job = startOnTerminal(t, slave, prog, dir)
	pid := job.Process.Pid
	t.Cleanup(func() { killAndReap(pid) })
	if err := waitReady(t, pid, filepath.Join(dir, "out"), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	m.Write([]byte("one\n"))
	expectOutput(t, m, "echo:one")
	return m, slave, job, dir
}

// TestShellJob: a job on a terminal is refused without --shell-job; with it
// the job is dumped and restored onto the restorer's terminal, where it
// still reads and answers.
func TestShellJob(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := testutil.BuildCtrCr(t)
	m, slave, job, dir := startShellJobCase(t, "e_shelljob.c")
	pid := job.Process.Pid
	out := filepath.Join(dir, "out")

	img := filepath.Join(t.TempDir(), "img")
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(pid), "-D", img)
	if err == nil || !strings.Contains(stderr, "terminal") || !strings.Contains(stderr, "--shell-job") {
		t.Fatalf("dump of a job on a terminal without --shell-job: err %v, stderr:\n%s", err, stderr)
	}
	requireRunningUntraced(t, pid)
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(pid), "-D", img, "--shell-job"); err != nil {
		t.Fatalf("dump --shell-job: %v\n%s", err, stderr)
	}
	job.Wait()
	if err := waitGone(pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err == nil || !strings.Contains(stderr, "--shell-job") {
		t.Fatalf("restore of a shell job without --shell-job: err %v\n%s", err, stderr)
	}
	pidFile := filepath.Join(dir, "restored.pid")
	restorer := startOnTerminal(t, slave, bin, "restore", "-D", img, "--shell-job", "--pid-file", pidFile)
	t.Cleanup(func() { killAndReap(restorer.Process.Pid) })
	if err := waitFile(pidFile, 20*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	m.Write([]byte("two\n"))
	expectOutput(t, m, "echo:two")
	m.Write([]byte("verify\n"))
	expectOutput(t, m, "bye")
	if err := restorer.Wait(); err != nil {
		t.Fatalf("ctr-cr restore --shell-job: %v; log:\n%s", err, tail(out, 10))
	}
	if l := lastLine(out); l != "PASS" {
		t.Fatalf("job ended with %q; log:\n%s", l, tail(out, 10))
	}
}

// TestCR_ChildNsLastPid: with --pid-method ns_last_pid the children of the
// tree get their pids through the cursor too.
func TestCR_ChildNsLastPid(t *testing.T) {
	runCase(t, Case{Name: "ChildNsLastPid", Src: "e_child.c", RestoreArgs: []string{"--pid-method", "ns_last_pid"}})
}

// TestCR_OrphanGroup: a process group whose leader has exited is recreated
// (through a helper task with the leader's pid) and its member is in it.
func TestCR_OrphanGroup(t *testing.T) {
	runCase(t, Case{Name: "OrphanGroup", Src: "e_orphan_group.c"})
}

// TestCR_EpollMovedTargets: epoll registrations whose target fd was closed,
// dup'd or reused after registration come back with their own files (see
// tests/cases/e_epoll.c); show lists the targets.
func TestCR_EpollMovedTargets(t *testing.T) {
	runCase(t, Case{Name: "Epoll", Src: "e_epoll.c", Verify: func(t *testing.T, r *Run) {
		if noCR {
			return
		}
		out, stderr, err := ctrcr(t, "show", r.Images[0])
		if err != nil {
			t.Fatalf("show: %v\n%s", err, stderr)
		}
		if !regexp.MustCompile(`\b30 epoll .* 4 target\(s\) \[fd 20 events 0x19 data 0xa, fd 22 events 0x19 data 0xb, fd 22 events 0x19 data 0xd, fd 25 `).MatchString(out) {
			t.Errorf("ctr-cr show does not list the epoll targets:\n%s", out)
		}
	}})
}

// TestCR_RestoreRetried: a restore that starts over after a pid race (made
// once per restore with CTRCR_FAULT_ONCE=restore:pid-race, right before
// the tasks' file locks: memory, files and unix sockets already restored
// once) restores the same state the second time: the pages are read and
// checksummed afresh, the files and sockets opened anew. Cases with
// threads, with every kind of unix socket, with deleted files.
func TestCR_RestoreRetried(t *testing.T) {
	t.Setenv("CTRCR_FAULT_ONCE", "restore:pid-race")
	for _, c := range []Case{
		{Name: "retry_threads", Src: "a_tls_threads.c", RestoreArgs: []string{"--pid-method", "ns_last_pid"}},
		{Name: "retry_unix", Src: "e_unix.c"},
		{Name: "retry_deleted", Src: "b_deleted.c"},
	} {
		t.Run(c.Name, func(t *testing.T) { runCase(t, c) })
	}
}
