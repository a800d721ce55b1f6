package tests

// End-to-end checkpoint/restore harness.
//
// A case is a C program under tests/cases (or any command) that sets up some
// state, prints "ready", waits for WORKDIR/go, checks its state from inside
// and ends with "PASS" or "FAIL: ...". runCase dumps and restores it a few
// times between "ready" and "go". With CTRCR_NOCR=1 no dump/restore is done,
// which validates the case programs alone.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

const (
	defaultCycles       = 2
	defaultReadyTimeout = 20 * time.Second
	goTimeout           = 30 * time.Second // from "go" to the case's exit
	ctrcrTimeout        = 60 * time.Second // any single ctr-cr command
	goneTimeout         = 10 * time.Second // dumped process disappears
	backTimeout         = 10 * time.Second // restored process shows up
	tailLines           = 30
)

// noCR is set by CTRCR_NOCR=1: run the cases without dump/restore.
var noCR = os.Getenv("CTRCR_NOCR") == "1"

// Case describes one end-to-end C/R test.
type Case struct {
	Name         string                     // test name
	Src          string                     // C source under tests/cases (e.g. "a_regs.c"); or empty when Cmd is set
	CFlags       []string                   // extra gcc flags (appended after the source)
	Cmd          []string                   // a command to run instead of a built C case; "{WORKDIR}" in args is replaced
	Cycles       int                        // dump/restore cycles before verification, default 2 (never less than 2)
	Uid          int                        // if non-zero, the case drops to this uid itself (the work dir is chowned to it)
	ReadyTimeout time.Duration              // default 20s
	Verify       func(t *testing.T, w *Run) // optional extra checks from outside after the last restore, before "go"
	DumpArgs     []string                   // extra ctr-cr dump arguments (e.g. --ghost-limit)
	RestoreArgs  []string                   // extra ctr-cr restore arguments (e.g. --pid-method ns_last_pid)
	// BeforeDump, if set, runs before each dump (e.g. to move the tree
	// into a cgroup).
	BeforeDump func(t *testing.T, r *Run)
	// NetNS runs the case in a network namespace of its own, restores
	// into it (ctr-cr restore under nsenter) and dumps from the host's.
	NetNS bool
	// AfterDump and AfterRestore, if set, get the standard output of each
	// dump and of each detached restore (e.g. --print-stats JSON).
	AfterDump    func(t *testing.T, cycle int, stdout string)
	AfterRestore func(t *testing.T, cycle int, stdout string)
	// ExtPipe gives the case, as fd 3, the write end of a pipe whose read
	// end the test holds (Run.ExtPipes); each restore hands a fresh pipe's
	// write end to ctr-cr as its fd 3 with --inherit-fd fd[3]:pipe:[INO].
	ExtPipe bool
	// ExtSock gives the case, as fd 3, one end of a stream socketpair
	// whose other end the test holds (Run.ExtSocks): a unix peer outside
	// the dump without a name. Each dump passes --ext-unix-sk, each
	// restore hands a fresh pair's end to ctr-cr as its fd 3 with
	// --inherit-fd fd[3]:socket:[INO].
	ExtSock bool
}

// Run is a started case.
type Run struct {
	Pid    int      // pid of the case (the same across restores)
	Dir    string   // work directory (argv[1] and cwd of the case)
	Images []string // image directories used, in order
	Bin    string   // ctr-cr binary ("" under CTRCR_NOCR)
	Out    string   // Dir/out: stdout+stderr of the case
	Tids   []int    // thread ids recorded right before the last dump
	NetNS  string   // path of the case's network namespace (Case.NetNS), or ""

	t       *testing.T
	c       Case
	imgBase string // parent of the image directories
	reaped  bool   // the case process is known to be gone

	fg        *exec.Cmd     // foreground "ctr-cr restore" of the last cycle
	fgDone    chan struct{} // closed when fg has been waited for
	fgErr     error
	fgStderr  string // path of the foreground ctr-cr's stderr
	fgPidFile string // written by the foreground ctr-cr when the restore is done

	ExtPipes []int  // Case.ExtPipe: read ends of the pipes, in the order used
	extIno   uint64 // Case.ExtPipe: the pipe the case writes to now; Case.ExtSock: the case's socket
	ExtSocks []int  // Case.ExtSock: the test's ends of the socketpairs, in the order used
}

func TestMain(m *testing.M) {
	// Cases must hold only the fds they open themselves: fds this test
	// binary inherited (e.g. a pipe of the calling shell) must not leak
	// into them (os/exec passes on every fd without close-on-exec).
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "close_range: %v\n", err)
		os.Exit(1)
	}
	// Restored processes whose restoring ctr-cr exits (restore -d) are
	// reparented to us, so that they can be reaped with wait4.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "PR_SET_CHILD_SUBREAPER: %v\n", err)
		os.Exit(1)
	}
	// The splice mover (core/dump/pagemover.go) is used by default only
	// for processes with 64 MiB of pages or more; the cases hold a few
	// MiB: every ctr-cr the tests run takes it from 1 MiB on, so that the
	// cases (and the crash sweeps) go through it too. Small ones still
	// take the copy path.
	if os.Getenv("CTRCR_SPLICE_MIN_PAGES") == "" {
		os.Setenv("CTRCR_SPLICE_MIN_PAGES", "256")
	}
	code := m.Run()
	testutil.Cleanup()
	cleanupCaseBins()
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// Building cases.

var (
	caseMu   sync.Mutex
	caseDir  string
	caseBins = map[string]string{}
)

// buildCase compiles tests/cases/src with gcc -O1 -g -pthread and the extra
// flags, once per test binary, and returns the binary path.
func buildCase(t *testing.T, src string, cflags []string) string {
	t.Helper()
	caseMu.Lock()
	defer caseMu.Unlock()
	key := src + "\x00" + strings.Join(cflags, "\x00")
	if bin, ok := caseBins[key]; ok {
		return bin
	}
	if caseDir == "" {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("ctrcr-cases-%d", os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("case build dir: %v", err)
		}
		// MkdirAll honours the umask; cases that drop root must still be
		// able to reach their executable.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatalf("case build dir: %v", err)
		}
		caseDir = dir
	}
	srcPath := filepath.Join(testutil.RepoRoot(), "tests", "cases", src)
	bin := filepath.Join(caseDir, fmt.Sprintf("%s.%d", strings.TrimSuffix(filepath.Base(src), ".c"), len(caseBins)))
	args := append([]string{"-O1", "-g", "-pthread", "-o", bin, srcPath}, cflags...)
	out, err := exec.Command("gcc", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if len(out) > 0 {
		t.Logf("gcc %s:\n%s", src, out)
	}
	caseBins[key] = bin
	return bin
}

func cleanupCaseBins() {
	caseMu.Lock()
	defer caseMu.Unlock()
	if caseDir != "" {
		os.RemoveAll(caseDir)
	}
}

// ---------------------------------------------------------------------------
// Running ctr-cr.

// ctrcr runs the ctr-cr binary with args and a 60 s timeout. err is non-nil
// when it cannot be run, times out or exits non-zero.
func ctrcr(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return ctrcrIn(t, "", args...)
}

// ctrcrIn is ctrcr run in the network namespace at netns ("": ours).
func ctrcrIn(t *testing.T, netns string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return ctrcrFiles(t, netns, nil, args...)
}

// ctrcrFiles is ctrcrIn with extra files, ctr-cr's fds 3 and up.
func ctrcrFiles(t *testing.T, netns string, extra []*os.File, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return testutil.RunCtrCr(t, testutil.CtrCrRun{Netns: netns, Extra: extra, Timeout: ctrcrTimeout}, args...)
}

// ---------------------------------------------------------------------------
// Starting and running cases.

// startCase builds and starts c as a child of the test process, registers
// its cleanup and waits for "ready". Under CTRCR_NOCR the ctr-cr binary is
// not built.
func startCase(t *testing.T, c Case) *Run {
	t.Helper()
	testutil.RequiresRoot(t)
	if c.Cycles < defaultCycles {
		c.Cycles = defaultCycles
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = defaultReadyTimeout
	}

	var argv []string
	switch {
	case c.Src != "":
		argv = []string{buildCase(t, c.Src, c.CFlags), "{WORKDIR}"}
	case len(c.Cmd) > 0:
		argv = slices.Clone(c.Cmd)
		path, err := exec.LookPath(argv[0])
		if err != nil {
			t.Fatalf("case command: %v", err)
		}
		if path, err = filepath.Abs(path); err != nil {
			t.Fatalf("case command: %v", err)
		}
		argv[0] = path
	default:
		t.Fatalf("case %q has neither Src nor Cmd", c.Name)
	}

	r := &Run{t: t, c: c}
	if c.NetNS {
		r.NetNS = testutil.NewNetns(t)
		argv = testutil.InNetns(r.NetNS, argv...)
		if p, err := exec.LookPath(argv[0]); err == nil {
			argv[0] = p
		}
	}
	if !noCR {
		r.Bin = testutil.BuildCtrCr(t)
	}

	// The work dir is short, traversable (0755 below the sticky temp dir)
	// so that cases dropping root can still poll WORKDIR/go.
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dir, err := os.MkdirTemp("", "ctrcr-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if c.Uid != 0 {
		if err := os.Chown(dir, c.Uid, -1); err != nil {
			t.Fatal(err)
		}
	}
	r.Dir = dir
	r.Out = filepath.Join(dir, "out")
	if !noCR {
		// Created before the kill cleanup is registered, so removed after.
		r.imgBase = t.TempDir()
	}
	for i := range argv {
		argv[i] = strings.ReplaceAll(argv[i], "{WORKDIR}", dir)
	}

	outF, err := os.OpenFile(r.Out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		outF.Close()
		t.Fatal(err)
	}
	files := []uintptr{devnull.Fd(), outF.Fd(), outF.Fd()}
	if c.ExtPipe {
		w := r.newExtPipe()
		defer w.Close()
		files = append(files, w.Fd())
	}
	if c.ExtSock {
		w := r.newExtSock()
		defer w.Close()
		files = append(files, w.Fd())
	}
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   os.Environ(),
		Files: files,
		// Own session and process group: the dumped tree is self-contained.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	outF.Close()
	devnull.Close()
	if err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	r.Pid = pid
	t.Cleanup(r.cleanup)
	t.Logf("case %s: pid %d, workdir %s", c.Name, pid, dir)

	if err := waitReady(t, pid, r.Out, c.ReadyTimeout); err != nil {
		r.fatalf("", "%v", err)
	}
	return r
}

// runCase runs c: start, wait for "ready", dump/restore c.Cycles times
// (restore -d for all but the last cycle, the last restore in the foreground),
// run c.Verify, create "go" and require exit status 0 and a last line "PASS".
func runCase(t *testing.T, c Case) *Run {
	t.Helper()
	r := startCase(t, c)
	c = r.c

	if noCR {
		if c.Verify != nil {
			c.Verify(t, r)
		}
		r.requestGo()
		status, err := waitChild(r.Pid, goTimeout)
		if err != nil {
			r.fatalf("", "after go: %v", err)
		}
		r.reaped = true
		if !status.Exited() || status.ExitStatus() != 0 {
			r.fatalf("", "case ended with %s", describeStatus(status))
		}
		r.requirePass("")
		return r
	}

	for i := 0; i < c.Cycles; i++ {
		last := i == c.Cycles-1
		tids, err := listTids(r.Pid)
		if err != nil {
			r.fatalf("", "cycle %d: before dump: %v", i, err)
		}
		r.Tids = tids
		img := filepath.Join(r.imgBase, fmt.Sprintf("img%d", i))
		if err := os.MkdirAll(img, 0o755); err != nil {
			t.Fatal(err)
		}
		r.Images = append(r.Images, img)

		if c.BeforeDump != nil {
			c.BeforeDump(t, r)
		}
		desc := descendants(r.Pid)
		stdout, stderr, err := ctrcr(t, append([]string{"dump", "-t", strconv.Itoa(r.Pid), "-D", img}, c.DumpArgs...)...)
		if err != nil {
			r.fatalf(stderr, "cycle %d: dump: %v", i, err)
		}
		if c.AfterDump != nil {
			c.AfterDump(t, i, stdout)
		}
		if err := waitGone(r.Pid, goneTimeout); err != nil {
			r.fatalf(stderr, "cycle %d: after dump: %v", i, err)
		}
		if err := reapTree(desc, goneTimeout); err != nil {
			r.fatalf(stderr, "cycle %d: after dump: %v", i, err)
		}
		if _, stderr, err := ctrcr(t, "show", img); err != nil {
			r.fatalf(stderr, "cycle %d: show %s: %v", i, img, err)
		}

		if !last {
			args, extra := r.extPipeArgs(c.RestoreArgs)
			stdout, stderr, err := ctrcrFiles(t, r.NetNS, extra, append([]string{"restore", "-D", img, "-d"}, args...)...)
			for _, f := range extra {
				f.Close()
			}
			if err != nil {
				r.fatalf(stderr, "cycle %d: restore -d: %v", i, err)
			}
			if c.AfterRestore != nil {
				c.AfterRestore(t, i, stdout)
			}
			if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
				r.fatalf(stderr, "cycle %d: after restore -d: %v", i, err)
			}
			continue
		}
		r.startForeground(img)
		if err := waitBack(r.Pid, tids, backTimeout, r.fgDone); err != nil {
			r.fatalf(r.fgStderrText(), "cycle %d: after restore: %v", i, err)
		}
		if err := waitFile(r.fgPidFile, backTimeout, r.fgDone); err != nil {
			r.fatalf(r.fgStderrText(), "cycle %d: restore did not complete: %v", i, err)
		}
	}

	if c.Verify != nil {
		c.Verify(t, r)
	}
	r.finishForeground()
	return r
}

// finishForeground asks the case restored by startForeground for go,
// waits for the foreground ctr-cr (its parent, which reaps it and exits
// with its status) and requires the case's PASS.
func (r *Run) finishForeground() {
	r.t.Helper()
	r.requestGo()
	select {
	case <-r.fgDone:
	case <-time.After(goTimeout):
		r.fatalf(r.fgStderrText(), "ctr-cr restore did not exit within %v after go", goTimeout)
	}
	r.reaped = true // ctr-cr is the parent of the case and has reaped it
	if r.fgErr != nil {
		r.fatalf(r.fgStderrText(), "ctr-cr restore (foreground): %v", r.fgErr)
	}
	r.requirePass(r.fgStderrText())
}

// startForeground starts "ctr-cr restore -D img" as our child; ctr-cr stays
// the parent of the restored case and exits with its status.
func (r *Run) startForeground(img string) {
	r.t.Helper()
	stdout, err := os.Create(filepath.Join(r.imgBase, "restore-fg.stdout"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer stdout.Close()
	r.fgStderr = filepath.Join(r.imgBase, "restore-fg.stderr")
	stderr, err := os.Create(r.fgStderr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer stderr.Close()
	// the pid file is written once the restore is complete
	r.fgPidFile = filepath.Join(r.imgBase, "restore-fg.pid")
	args, extra := r.extPipeArgs(r.c.RestoreArgs)
	argv := testutil.InNetns(r.NetNS, append([]string{r.Bin, "restore", "-D", img, "--pid-file", r.fgPidFile}, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.ExtraFiles = extra
	err = cmd.Start()
	for _, f := range extra {
		f.Close()
	}
	if err != nil {
		r.fatalf("", "start ctr-cr restore: %v", err)
	}
	r.t.Logf("ctr-cr restore -D %s: started in the foreground (pid %d)", img, cmd.Process.Pid)
	r.fg = cmd
	r.fgDone = make(chan struct{})
	go func() {
		r.fgErr = cmd.Wait()
		close(r.fgDone)
	}()
}

func (r *Run) fgStderrText() string {
	if r.fgStderr == "" {
		return ""
	}
	b, _ := os.ReadFile(r.fgStderr)
	return string(b)
}

func (r *Run) requestGo() {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.Dir, "go"), nil, 0o644); err != nil {
		r.fatalf("", "create go: %v", err)
	}
}

func (r *Run) requirePass(stderr string) {
	r.t.Helper()
	if l := lastLine(r.Out); l != "PASS" {
		r.fatalf(stderr, "last line of out is %q, want PASS", l)
	}
	if testing.Verbose() {
		r.t.Logf("case output (last %d lines):\n%s", tailLines, tail(r.Out, tailLines))
	}
}

// fatalf fails the test with the tail of the case output and ctr-cr's stderr.
func (r *Run) fatalf(ctrcrStderr, format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf(format, args...)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n--- last %d lines of %s ---\n%s", r.c.Name, msg, tailLines, r.Out, tail(r.Out, tailLines))
	if ctrcrStderr != "" {
		fmt.Fprintf(&b, "\n--- ctr-cr stderr ---\n%s", strings.TrimRight(ctrcrStderr, "\n"))
	}
	r.t.Fatal(b.String())
}

// cleanup kills and reaps what this run started: the case (only if /proc
// shows it is still ours), processes it left in its session (same checks)
// and the foreground ctr-cr.
func (r *Run) cleanup() {
	if r.Pid > 0 && !r.reaped && isCase(r.Pid, r.Dir) {
		syscall.Kill(r.Pid, syscall.SIGKILL)
	}
	var leftovers []int
	if r.Pid > 0 {
		for _, pid := range sessionProcs(r.Pid) {
			if pid != r.Pid && isCase(pid, r.Dir) {
				syscall.Kill(pid, syscall.SIGKILL)
				leftovers = append(leftovers, pid)
			}
		}
	}
	if r.fg != nil {
		select {
		case <-r.fgDone:
		default:
			r.fg.Process.Kill()
			<-r.fgDone
		}
	}
	if r.Pid > 0 && !r.reaped {
		// Reap it if it is (or became) our child; otherwise wait a little
		// for it to disappear.
		waitGone(r.Pid, 5*time.Second)
		r.reaped = true
	}
	for _, pid := range leftovers {
		waitGone(pid, time.Second) // reaped if reparented to us
	}
}
