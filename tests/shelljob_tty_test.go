package tests

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestShellJobDevTty: a shell job holding its terminal through /dev/tty
// (two open file descriptions with their own flags) and virtual consoles
// that are not its terminal (/dev/tty1, /dev/tty0) is dumped with
// --shell-job and restored twice onto the restorer's terminal: /dev/tty
// is /dev/tty again (the restorer's terminal), the consoles are reopened
// by path; the job checks them from inside and writes through /dev/tty.
// Without --shell-job the dump is refused, naming /dev/tty.
func TestShellJobDevTty(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := testutil.BuildCtrCr(t)
	m, slave, job, dir := startShellJobCase(t, "e_shelljob_tty.c")
	pid := job.Process.Pid
	out := filepath.Join(dir, "out")
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(pid), "-D", filepath.Join(t.TempDir(), "img"))
	if err == nil || !strings.Contains(stderr, "/dev/tty") || !strings.Contains(stderr, "--shell-job") {
		t.Fatalf("dump of a job holding /dev/tty without --shell-job: err %v, stderr:\n%s", err, stderr)
	}
	requireRunningUntraced(t, pid)
	var restorer interface{ Wait() error }
	waitJob := job.Wait
	for cycle := 0; cycle < 2; cycle++ {
		img := filepath.Join(t.TempDir(), "img")
		if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(pid), "-D", img, "--shell-job"); err != nil {
			t.Fatalf("cycle %d: dump --shell-job: %v\n%s", cycle, err, stderr)
		}
		waitJob() // the first job, then the restorer that ran the job
		if err := waitGone(pid, goneTimeout); err != nil {
			t.Fatal(err)
		}
		out, _, _ := ctrcr(t, "show", img)
		if !strings.Contains(out, "/dev/tty") {
			t.Errorf("show %s does not name /dev/tty:\n%s", img, out)
		}
		pidFile := filepath.Join(dir, "restored"+strconv.Itoa(cycle)+".pid")
		r := startOnTerminal(t, slave, bin, "restore", "-D", img, "--shell-job", "--pid-file", pidFile)
		t.Cleanup(func() { killAndReap(r.Process.Pid) })
		if err := waitFile(pidFile, 20*time.Second, nil); err != nil {
			t.Fatal(err)
		}
		restorer, waitJob = r, r.Wait
		line := "cycle" + strconv.Itoa(cycle)
		m.Write([]byte(line + "\n"))
		expectOutput(t, m, "echo:"+line)
	}
	m.Write([]byte("verify\n"))
	expectOutput(t, m, "via-devtty bye") // fd 11 (/dev/tty), then stdout
	if err := restorer.Wait(); err != nil {
		t.Fatalf("ctr-cr restore --shell-job: %v; log:\n%s", err, tail(out, 10))
	}
	if l := lastLine(out); l != "PASS" {
		t.Fatalf("job ended with %q; log:\n%s", l, tail(out, 10))
	}
}
