package tests

// Pseudo-terminals: a pty pair with its state, queued data, controlling
// terminal and foreground group (tests/cases/t_pty.c), also dumped with
// --leave-running first; and tmux, a real terminal multiplexer, dumped and
// restored with its pane running.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// statTty returns tty_nr and tpgid of pid from /proc/pid/stat.
func statTty(t *testing.T, pid int) (ttyNr, tpgid int) {
	t.Helper()
	f, err := testutil.StatFields(pid)
	if err != nil {
		t.Fatal(err)
	}
	ttyNr, _ = strconv.Atoi(f[4])
	tpgid, _ = strconv.Atoi(f[5])
	return ttyNr, tpgid
}

// verifyPtyCase checks t_pty from outside after the last restore: C and G
// have the pty as controlling terminal with G's group in the foreground,
// and ctr-cr show describes the pair.
func verifyPtyCase(t *testing.T, w *Run) {
	c, g := treeMember(t, w, 0), treeMember(t, w, 1)
	cTty, cFg := statTty(t, c)
	gTty, _ := statTty(t, g)
	if cTty == 0 || cTty != gTty || cFg != g {
		t.Errorf("after restore: C tty_nr %#x tpgid %d, G tty_nr %#x; want the same terminal, foreground %d", cTty, cFg, gTty, g)
	}
	out, stderr, err := ctrcr(t, "show", w.Images[len(w.Images)-1])
	if err != nil {
		t.Fatalf("show: %v\n%s", err, stderr)
	}
	for _, want := range []string{"pty ", "master of /dev/pts/", "raw (VMIN 1 VTIME 5)", "101x37", "packet",
		"queued 20B in (to the slave) 20B out (to the master)", fmt.Sprintf("controlling terminal of session %d, foreground group %d", c, g),
		"slave of /dev/pts/", ", controlling terminal /dev/pts/"} {
		if !strings.Contains(out, want) {
			t.Errorf("show does not say %q:\n%s", want, out)
		}
	}
}

// TestCR_Pty: a pty pair (index, raw termios with VMIN/VTIME and speed,
// window size, packet mode), queued data both ways, a session whose
// controlling terminal it is, a foreground group; checked from inside
// after two C/R cycles (data exactly once, in order; echo in canonical
// mode) and from outside.
func TestCR_Pty(t *testing.T) {
	runTree(t, Case{Name: "t_pty", Src: "t_pty.c", Verify: verifyPtyCase})
}

// TestCR_PtyLeaveRunning: t_pty dumped twice with --leave-running first
// (the queued data read out at dump is written back, in order, and the
// tree runs on untouched), then through the usual two C/R cycles: the data
// still arrives exactly once.
func TestCR_PtyLeaveRunning(t *testing.T) {
	tr := startTree(t, Case{Name: "t_pty_leave", Src: "t_pty.c", Verify: verifyPtyCase}, treeOpts{treeFile: true, exact: true})
	if !noCR {
		for i := 0; i < 2; i++ {
			img := fmt.Sprintf("%s/leave%d", tr.imgBase, i)
			if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(tr.root), "-D", img, "--leave-running"); err != nil {
				tr.fatalf(stderr, "dump --leave-running: %v", err)
			}
			tr.checkTree(t, fmt.Sprintf("after dump %d --leave-running", i), false)
			for _, p := range tr.before {
				requireRunningUntraced(t, p.Pid)
			}
		}
	}
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, goTimeout)
	tr.requirePass(tr.fgStderrText())
}

// tmuxScript runs in the tmux pane: a counter printed every 2 s and after
// every line typed into the pane, which is run as a command.
// (bash reads a terminal line a byte at a time: a timeout that fires in
// the middle of a line, when a loaded host keeps the shell off the CPU,
// loses its start; 2 s make that vanishingly rare)
const tmuxScript = `i=0; while :; do i=$((i+1)); echo "count $i"; if read -r -t 2 line; then eval "$line"; fi; done`

// tmuxRun is a tmux server on its own socket, started by the test.
type tmuxRun struct {
	t      *testing.T
	sock   string
	server int // pid of the tmux server
	pane   int // pid of the shell in the pane
}

// tmux runs a tmux command against the test's server and returns stdout.
func (x *tmuxRun) tmux(args ...string) (string, error) {
	cmd := exec.Command("tmux", append([]string{"-S", x.sock, "-f", "/dev/null"}, args...)...)
	cmd.Env = tmuxEnv()
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("%v: %s", err, ee.Stderr)
	}
	return string(out), err
}

// tmuxEnv is our environment without TMUX (the test may itself run in a
// tmux pane: the commands must go to the test's server only).
func tmuxEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "TMUX=") && !strings.HasPrefix(e, "TMUX_PANE=") {
			env = append(env, e)
		}
	}
	return env
}

// lastCount returns the highest "count N" line of the pane, or -1.
func (x *tmuxRun) lastCount() int {
	out, err := x.tmux("capture-pane", "-p", "-t", "ctrcr")
	if err != nil {
		return -1
	}
	n := -1
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "count "); ok {
			if c, err := strconv.Atoi(v); err == nil && c > n {
				n = c
			}
		}
	}
	return n
}

// waitPane waits until the pane shows a line equal to want, or a counter
// above count when want is "".
func (x *tmuxRun) waitPane(want string, count int) {
	x.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := x.tmux("capture-pane", "-p", "-t", "ctrcr")
		if err == nil {
			if want == "" && x.lastCount() > count {
				return
			}
			for _, l := range strings.Split(out, "\n") {
				if want != "" && strings.TrimSpace(l) == want {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("tmux pane: no line %q / counter above %d after 15s (%v); pane:\n%s", want, count, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isOurs reports whether pid still runs the test's tmux server or pane
// shell (so that a recycled pid is never killed).
func (x *tmuxRun) isOurs(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && (strings.Contains(string(b), "tmux") || strings.Contains(string(b), "count $i"))
}

// cleanup kills the server and the pane shell by pid (when still ours),
// reaps them (they are reparented to us, the subreaper) and removes the
// socket file.
func (x *tmuxRun) cleanup() {
	for _, pid := range []int{x.server, x.pane} {
		if pid > 0 && x.isOurs(pid) {
			killAndReap(pid)
		}
	}
	os.Remove(x.sock)
}

// TestReal_Tmux: a detached tmux session (server on its own socket, a
// shell loop printing a counter in its pane) whose server tree is dumped,
// killed and restored with -d, twice; after each restore the counter goes
// on and keys sent to the pane run a command whose output appears. Checked
// from outside with tmux commands (no client is attached: the dumped tree
// is the server and the pane). Nothing is left behind: no process, no
// socket file.
func TestReal_Tmux(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "tmux", "bash")
	x := &tmuxRun{t: t, sock: filepath.Join(os.TempDir(), fmt.Sprintf("ctrcr-tmux-%d-%d.sock", os.Getpid(), time.Now().UnixNano()%1e9))}
	t.Cleanup(x.cleanup)
	if _, err := x.tmux("new-session", "-d", "-s", "ctrcr", "-x", "80", "-y", "24", "bash --norc --noprofile -c '"+tmuxScript+"'"); err != nil {
		t.Fatalf("tmux new-session: %v", err)
	}
	out, err := x.tmux("display", "-p", "-t", "ctrcr", "#{pid} #{pane_pid}")
	if err != nil {
		t.Fatalf("tmux display: %v", err)
	}
	if _, err := fmt.Sscan(out, &x.server, &x.pane); err != nil || x.server <= 0 || x.pane <= 0 {
		t.Fatalf("tmux display: %q: %v", out, err)
	}
	t.Logf("tmux server %d, pane shell %d, socket %s", x.server, x.pane, x.sock)
	x.waitPane("", 2)
	for cycle := 0; cycle < 2; cycle++ {
		img := filepath.Join(t.TempDir(), "img")
		before := x.lastCount()
		_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(x.server), "-D", img)
		if err != nil {
			t.Fatalf("cycle %d: dump: %v\n%s", cycle, err, stderr)
		}
		for _, pid := range []int{x.server, x.pane} {
			if err := waitGone(pid, goneTimeout); err != nil {
				t.Fatalf("cycle %d: after dump: %v", cycle, err)
			}
		}
		if out, stderr, err := ctrcr(t, "show", img); err != nil || !strings.Contains(out, "master of /dev/pts/") {
			t.Fatalf("cycle %d: show: %v\n%s%s", cycle, err, stderr, out)
		}
		if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
			t.Fatalf("cycle %d: restore -d: %v\n%s", cycle, err, stderr)
		}
		x.waitPane("", before)
		// keys sent to the pane run a command
		word := fmt.Sprintf("tmux-%d", 42+10*cycle)
		if _, err := x.tmux("send-keys", "-t", "ctrcr", fmt.Sprintf("echo tmux-$((%d+%d))", 42, 10*cycle), "Enter"); err != nil {
			t.Fatalf("cycle %d: send-keys: %v", cycle, err)
		}
		x.waitPane(word, 0)
		x.waitPane("", x.lastCount())
		t.Logf("cycle %d: counter %d before the dump, %d now; the pane ran %q", cycle, before, x.lastCount(), word)
	}
	if _, err := x.tmux("kill-server"); err != nil {
		t.Fatalf("tmux kill-server: %v", err)
	}
	for _, pid := range []int{x.server, x.pane} {
		if err := waitGone(pid, goneTimeout); err != nil {
			t.Fatalf("after kill-server: %v", err)
		}
	}
	os.Remove(x.sock)
	if _, err := os.Stat(x.sock); !os.IsNotExist(err) {
		t.Fatalf("socket %s left behind: %v", x.sock, err)
	}
}

// takePtyIndex opens /dev/ptmx until it holds pty index n (a just-killed
// pair is released asynchronously) and returns that master.
func takePtyIndex(t *testing.T, n int) *os.File {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var extra []*os.File
		for {
			m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
			if err != nil {
				t.Fatal(err)
			}
			if got == n {
				for _, e := range extra {
					e.Close()
				}
				return m
			}
			if got > n {
				m.Close()
				break
			}
			extra = append(extra, m)
		}
		for _, e := range extra {
			e.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("pty index %d stays taken", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNegative_PtyIndexTaken: restoring t_pty while its pty index is held
// by another pair fails naming the index and leaves no process; once the
// index is free the same image restores and the case passes.
func TestNegative_PtyIndexTaken(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without C/R")
	}
	tr := startTree(t, Case{Name: "t_pty_taken", Src: "t_pty.c"}, treeOpts{treeFile: true, exact: true})
	idx := ptyIndexOf(t, tr.Out)
	img := filepath.Join(tr.imgBase, "img")
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(tr.root), "-D", img); err != nil {
		tr.fatalf(stderr, "dump: %v", err)
	}
	if err := tr.waitTreeGone(tr.before); err != nil {
		t.Fatal(err)
	}
	m := takePtyIndex(t, idx)
	_, stderr, err := ctrcr(t, "restore", "-D", img, "-d")
	requireFailed(t, err, stderr)
	requireNoPanic(t, stderr)
	if want := fmt.Sprintf("pty index %d is in use: its master is open in pid %d", idx, os.Getpid()); !strings.Contains(stderr, want) {
		t.Errorf("restore error does not say %q:\n%s", want, stderr)
	}
	time.Sleep(100 * time.Millisecond)
	for _, p := range tr.before {
		// a zombie reparented to us (the subreaper) is only reaped
		if st := procState(p.Pid); st != "" {
			waitGone(p.Pid, time.Second)
			if st != "Z" {
				t.Errorf("pid %d exists after the failed restore (state %s)", p.Pid, st)
			}
		}
	}
	m.Close()
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
		t.Fatalf("restore -d once the index is free: %v\n%s", err, stderr)
	}
	finishChild(t, tr.Run)
}

// ptyIndexOf reads the index t_pty logged before ready.
func ptyIndexOf(t *testing.T, out string) int {
	t.Helper()
	for _, l := range strings.Split(tail(out, 10), "\n") {
		var idx int
		if _, err := fmt.Sscanf(l, "log: pty /dev/pts/%d", &idx); err == nil {
			return idx
		}
	}
	t.Fatalf("no pty index in %s", out)
	return -1
}

// TestNegative_PtyDumpFails: a dump of t_pty fails (1) when a process
// outside the dump holds the pty's slave: refused naming it, before
// anything is read; (2) when the image cannot be written (a full file
// system), after the queued data was read out: it is written back. Each
// time the tree runs on untouched; the usual C/R cycles then show the
// queued data arrives exactly once.
func TestNegative_PtyDumpFails(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without C/R")
	}
	tr := startTree(t, Case{Name: "t_pty_fails", Src: "t_pty.c", Verify: verifyPtyCase}, treeOpts{treeFile: true, exact: true})
	idx := ptyIndexOf(t, tr.Out)
	requireUntouched := func(when string) {
		tr.checkTree(t, when, false)
		for _, p := range tr.before {
			requireRunningUntraced(t, p.Pid)
		}
	}

	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", idx), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(tr.root), "-D", filepath.Join(tr.imgBase, "outside"))
	s.Close()
	requireFailed(t, err, stderr)
	requireNoPanic(t, stderr)
	if want := fmt.Sprintf("slave is also held by pid %d", os.Getpid()); !strings.Contains(stderr, want) {
		t.Errorf("dump error does not say %q:\n%s", want, stderr)
	}
	requireUntouched("after the refused dump")

	full := filepath.Join(tr.imgBase, "full")
	if err := os.Mkdir(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(full, unix.MNT_DETACH) })
	_, stderr, err = ctrcr(t, "dump", "-t", strconv.Itoa(tr.root), "-D", filepath.Join(full, "img"))
	requireFailed(t, err, stderr)
	requireNoPanic(t, stderr)
	if !strings.Contains(stderr, "no space left") {
		t.Errorf("dump onto a full file system: %s", stderr)
	}
	requireUntouched("after the failed dump")
	if err := unix.Unmount(full, 0); err != nil {
		t.Fatal(err)
	}

	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, goTimeout)
	tr.requirePass(tr.fgStderrText())
}
