package tests

// Pseudo-terminals: a pty pair with its state, queued data, controlling
// terminal and foreground group (tests/cases/t_pty.c), also dumped with
// --leave-running first; and tmux, a real terminal multiplexer, dumped and
// restored with its pane running.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// statTty returns tty_nr and tpgid of pid from /proc/pid/stat.
func statTty(t *testing.T, pid int) (ttyNr, tpgid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
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
