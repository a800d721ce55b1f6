package tests

// Unix sockets whose peer was closed, in a real server: a tmux server
// right after a client went away (issue 11).

import (
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

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestReal_TmuxClientGone: a tmux server whose client has just gone away
// (its connection still in the server, the client end closed with its
// request unread: the server was stopped meanwhile) is dumped, killed and
// restored -d, twice; once continued, the server reads the dead client's
// request, sees it gone, and goes on serving: the pane's counter runs and
// keys sent to it run a command.
func TestReal_TmuxClientGone(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "tmux", "bash")
	x := &tmuxRun{t: t, sock: filepath.Join(os.TempDir(), fmt.Sprintf("ctrcr-tmuxg-%d-%d.sock", os.Getpid(), time.Now().UnixNano()%1e9))}
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
	x.waitPane("", 2)
	for cycle := 0; cycle < 2; cycle++ {
		x.clientGone(cycle)
		img := filepath.Join(t.TempDir(), "img")
		before := x.lastCountStopped()
		_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(x.server), "-D", img)
		if err != nil {
			syscall.Kill(x.server, syscall.SIGCONT)
			t.Fatalf("cycle %d: dump: %v\n%s", cycle, err, stderr)
		}
		for _, pid := range []int{x.server, x.pane} {
			if err := waitGone(pid, goneTimeout); err != nil {
				t.Fatalf("cycle %d: after dump: %v", cycle, err)
			}
		}
		show, stderr, err := ctrcr(t, "show", img)
		if err != nil || !strings.Contains(show, "peer gone") && !strings.Contains(show, "closed)") {
			t.Fatalf("cycle %d: show has no socket whose peer is gone: %v\n%s%s", cycle, err, stderr, show)
		}
		if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
			t.Fatalf("cycle %d: restore -d: %v\n%s\nimage:\n%s", cycle, err, stderr, show)
		}
		if err := syscall.Kill(x.server, syscall.SIGCONT); err != nil {
			t.Fatalf("cycle %d: SIGCONT the server: %v", cycle, err)
		}
		x.waitPane("", before)
		word := fmt.Sprintf("tmux-%d", 42+10*cycle)
		if _, err := x.tmux("send-keys", "-t", "ctrcr", fmt.Sprintf("echo tmux-$((%d+%d))", 42, 10*cycle), "Enter"); err != nil {
			t.Fatalf("cycle %d: send-keys: %v", cycle, err)
		}
		x.waitPane(word, 0)
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
}

// clientGone stops the server, lets a client connect and send its request,
// and kills the client: the server is left stopped with a connection whose
// peer is gone and whose request is unread.
func (x *tmuxRun) clientGone(cycle int) {
	x.t.Helper()
	// (tmux briefly holds /proc/PID/... open when it looks at its pane's
	// process: a file the restore cannot open again; stop it elsewhere)
	for try := 0; ; try++ {
		if err := syscall.Kill(x.server, syscall.SIGSTOP); err != nil {
			x.t.Fatalf("cycle %d: SIGSTOP the server: %v", cycle, err)
		}
		waitState(x.t, x.server, 'T')
		if !holdsProc(x.server) || try == 50 {
			break
		}
		syscall.Kill(x.server, syscall.SIGCONT)
		time.Sleep(20 * time.Millisecond)
	}
	cmd := exec.Command("tmux", "-S", x.sock, "-f", "/dev/null", "list-sessions")
	cmd.Env = tmuxEnv()
	if err := cmd.Start(); err != nil {
		x.t.Fatalf("cycle %d: tmux client: %v", cycle, err)
	}
	time.Sleep(300 * time.Millisecond) // connected, request sent, waiting for the answer
	cmd.Process.Kill()
	cmd.Wait()
}

// holdsProc reports an fd of pid open on a /proc file.
func holdsProc(pid int) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "/proc/") {
			return true
		}
	}
	return false
}

// lastCountStopped is lastCount while the server is stopped (tmux cannot
// answer): the counter is read from the pane's process instead, which is
// not needed exactly; 0 lets waitPane accept any count.
func (x *tmuxRun) lastCountStopped() int { return 0 }

// waitState waits until /proc/PID/stat shows state st.
func waitState(t *testing.T, pid int, st byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if testutil.ProcState(pid) == string(st) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d never reached state %c", pid, st)
}

// TestNegative_UnixSeqpacketReset: a seqpacket socket whose peer was closed
// with data unread (ECONNRESET pending) is refused by name, with and
// without --leave-running, and the case still finds the error and its
// queued record (see tests/cases/b_unix_reset.c).
func TestNegative_UnixSeqpacketReset(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	for _, leave := range []bool{false, true} {
		t.Run(fmt.Sprintf("leave-running=%v", leave), func(t *testing.T) {
			r := startCase(t, Case{Name: "b_unix_reset", Src: "b_unix_reset.c"})
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
			for _, re := range []string{`pid \d+: fd 45\b`, `seqpacket`, `ECONNRESET`} {
				if !regexp.MustCompile(re).MatchString(stderr) {
					t.Errorf("dump error does not match %q:\n%s", re, stderr)
				}
			}
			requireRunningUntraced(t, r.Pid)
			finishChild(t, r)
		})
	}
}
