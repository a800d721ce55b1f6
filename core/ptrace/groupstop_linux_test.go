package ptrace

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ctr-cr/ctr-cr/internal/testutil"

	"golang.org/x/sys/unix"
)

// TestReleaseKeepsStopSignal: a process in a group stop by SIGTSTP or
// SIGSTOP, seized and continued (as the dumper does), released with or
// without injected calls, is back in a group stop by the same signal: its
// parent's waitid reports that signal.
func TestReleaseKeepsStopSignal(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, c := range []struct {
		name   string
		sig    unix.Signal
		inject bool
	}{{"TSTP", unix.SIGTSTP, false}, {"TSTP injected", unix.SIGTSTP, true}, {"STOP", unix.SIGSTOP, false}} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "30")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			time.Sleep(100 * time.Millisecond)
			unix.Kill(pid, c.sig)
			waitStopReport(t, pid, c.sig)
			tr := NewTracer()
			defer tr.Stop()
			tr.Do(func() {
				p, err := SeizeProcess(pid)
				if err != nil {
					t.Error(err)
					return
				}
				if !p.Threads[0].Stopped || p.Threads[0].StopSig != int(c.sig) {
					t.Errorf("seized: stopped %v by %d, want %d", p.Threads[0].Stopped, p.Threads[0].StopSig, c.sig)
				}
				unix.Kill(pid, unix.SIGCONT)
				if c.inject {
					r, err := NewRemote(p)
					if err != nil {
						t.Error(err)
					} else {
						r.Call(0, "getpid", unix.SYS_GETPID)
						r.Close()
					}
				}
				if err := p.Release(); err != nil {
					t.Error(err)
				}
			})
			waitStopReport(t, pid, c.sig)
		})
	}
}

// waitStopReport waits for the child's stop report and requires sig.
func waitStopReport(t *testing.T, pid int, sig unix.Signal) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var si unix.Siginfo
		if err := unix.Waitid(unix.P_PID, pid, &si, unix.WSTOPPED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			t.Fatal(err)
		}
		b := (*[128]byte)(unsafePointer(&si))
		code := int32(b[8]) | int32(b[9])<<8 | int32(b[10])<<16 | int32(b[11])<<24
		status := int32(b[24]) | int32(b[25])<<8 | int32(b[26])<<16 | int32(b[27])<<24
		if code == 5 /* CLD_STOPPED */ {
			if status != int32(sig) {
				t.Fatalf("stopped by %d, want %d", status, sig)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stop report (code %d)", code)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func unsafePointer(si *unix.Siginfo) unsafe.Pointer { return unsafe.Pointer(si) }
