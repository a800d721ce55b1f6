package tests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestStress_DumpSignalStorm: a process that forks children which exit at
// once, without pause, reaps them in a SIGCHLD handler, is sent signals all
// the time (handled, and SIGURG blocked and read through a signalfd, as
// postgres's latch) and checks its own signal mask on every turn, is
// dumped with --leave-running again and again: every dump succeeds and the
// process runs on unchanged. (The first dump of a postmaster whose child
// had just exited failed to map its injection area, "stop of kind 0": the
// stop's siginfo was read into a moved Go stack, core/ptrace.Raw.)
func TestStress_DumpSignalStorm(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := filepath.Join(t.TempDir(), "sigstorm")
	if out, err := exec.Command("cc", "-O2", "-pthread", "-o", bin, "../core/ptrace/testdata/sigstorm.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v: %s", err, out)
	}
	cmd := exec.Command(bin, "thread")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	rd := bufio.NewReader(out)
	if l, err := rd.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("sigstorm: %q %v", l, err)
	}
	var mu sync.Mutex
	var rest strings.Builder
	go func() {
		for {
			l, err := rd.ReadString('\n')
			mu.Lock()
			rest.WriteString(l)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	said := func() string { mu.Lock(); defer mu.Unlock(); return rest.String() }
	pid := cmd.Process.Pid
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	for i := 0; i < rounds; i++ {
		img := filepath.Join(t.TempDir(), "img"+strconv.Itoa(i))
		if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(pid), "-D", img, "--leave-running"); err != nil {
			t.Fatalf("dump %d: %v\n%s", i, err, stderr)
		}
		os.RemoveAll(img)
		if err := unix.Kill(pid, 0); err != nil || strings.Contains(said(), "FAIL") {
			t.Fatalf("after dump %d: %v %s", i, err, said())
		}
	}
}
