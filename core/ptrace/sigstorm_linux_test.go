package ptrace

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"

	"golang.org/x/sys/unix"
)

// buildSigstorm compiles testdata/sigstorm.c (cc is needed).
func buildSigstorm(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t)
	bin := filepath.Join(t.TempDir(), "sigstorm")
	if out, err := exec.Command("cc", "-O2", "-pthread", "-o", bin, "testdata/sigstorm.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v: %s", err, out)
	}
	return bin
}

// startSigstorm starts the storm (with a thread of its own sending it
// signals when thread is set) and waits for its "ready".
func startSigstorm(t *testing.T, bin string, thread bool) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Stderr = os.Stderr
	if thread {
		cmd.Args = append(cmd.Args, "thread")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	rd := bufio.NewReader(out)
	if l, err := rd.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("sigstorm: %q %v", l, err)
	}
	rest := &strings.Builder{}
	go func() {
		for {
			l, err := rd.ReadString('\n')
			rest.WriteString(l)
			if err != nil {
				return
			}
		}
	}()
	return cmd, rest
}

// TestInjectSignalStorm: syscalls injected into a process whose children
// fork and exit without pause and which is sent signals all the time
// (handled, ignored, blocked and read through a signalfd) succeed every
// time, and the process runs on with its own signal mask (it checks it).
// Before the fix, a SIGCHLD arriving during the boot call's syscall stops
// failed the mapping of the area ("stop of kind 0").
func TestInjectSignalStorm(t *testing.T) {
	bin := buildSigstorm(t)
	for _, thread := range []bool{false, true} {
		t.Run(fmt.Sprintf("thread=%v", thread), func(t *testing.T) {
			cmd, out := startSigstorm(t, bin, thread)
			pid := cmd.Process.Pid
			rounds := 300
			if testing.Short() {
				rounds = 30
			}
			for i := 0; i < rounds; i++ {
				var err error
				// a new tracer (a small stack) at another depth of it
				// each round: the stack grows at every point of the
				// requests in turn
				tr := NewTracer()
				tr.Do(func() { deep(i%256, func() { err = injectOnce(pid) }) })
				tr.Stop()
				if err != nil {
					st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
					if strings.Contains(string(st), "zombie") {
						cmd.Wait()
						t.Fatalf("round %d (pid %d): %v: the target ended: %v, output %q", i, pid, err, cmd.ProcessState, out.String())
					}
					t.Fatalf("round %d (pid %d): %v\n%s", i, pid, err, st)
				}
				if strings.Contains(out.String(), "FAIL") {
					t.Fatalf("round %d: %s", i, out.String())
				}
				time.Sleep(time.Duration(i%5) * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			if err := unix.Kill(pid, 0); err != nil || strings.Contains(out.String(), "FAIL") {
				t.Fatalf("the target after the rounds: %v %s", err, out.String())
			}
		})
	}
}

// injectOnce seizes pid, maps the area, makes a few calls in every thread,
// unmaps it and lets the process go.
func injectOnce(pid int) (err error) {
	p, err := SeizeProcess(pid)
	if err != nil {
		return err
	}
	defer func() {
		if rerr := p.Release(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if os.Getenv("STORM_DEBUG") != "" {
		for _, t := range p.Threads {
			fmt.Fprintf(os.Stderr, "seized tid %d: rip %#x rsp %#x rax %#x orig_rax %#x stolen %d\n", t.Tid, t.Regs.Rip, t.Regs.Rsp, t.Regs.Rax, t.Regs.Orig_rax, len(t.Stolen))
		}
	}
	if os.Getenv("STORM_MODE") == "seize" {
		return nil
	}
	r, err := NewRemote(p)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer func() {
		if cerr := r.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	if os.Getenv("STORM_MODE") == "map" {
		return nil
	}
	if err := r.RequeueStolen(); err != nil {
		return err
	}
	for i := range p.Threads {
		for j := 0; j < 3; j++ {
			v, err := r.Call(i, "getpid", unix.SYS_GETPID)
			if err != nil {
				return err
			}
			if int(v) != pid {
				return fmt.Errorf("getpid in thread %d: %d", i, v)
			}
		}
	}
	return nil
}
