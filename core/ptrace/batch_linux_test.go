package ptrace

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBatchRunsInOrderAndStopsAtFailure: BatchCode makes the queued calls
// in the tracee in order, stores each result, stops at the first failure
// (the calls after it are not made) and Results names the failing call.
func TestBatchRunsInOrderAndStopsAtFailure(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	withRemote(t, cmd, func(p *Process, r *Remote) {
		run := func(b *Batch) ([]uint64, error) { return r.Batch(0, b) }
		var ok1 Batch
		ok1.Add("getpid", unix.SYS_GETPID)
		ok1.Add("getppid", unix.SYS_GETPPID)
		ok1.Add("umask(022)", unix.SYS_UMASK, 0o22)
		ok1.Add("umask again", unix.SYS_UMASK, 0o22)
		res, err := run(&ok1)
		if err != nil {
			t.Error(err)
			return
		}
		if res[0] != uint64(cmd.Process.Pid) || res[1] != uint64(os.Getpid()) || res[3] != 0o22 {
			t.Errorf("results %v: want pid %d, ppid %d, then the umask just set", res, cmd.Process.Pid, os.Getpid())
		}
		var bad Batch
		bad.Add("umask(077)", unix.SYS_UMASK, 0o77)
		bad.Add("close(-1)", unix.SYS_CLOSE, ^uint64(0))
		bad.Add("umask(0) after the failure", unix.SYS_UMASK, 0)
		_, err = run(&bad)
		if !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "close(-1)") {
			t.Errorf("failing batch: %v, want EBADF naming close(-1)", err)
		}
		var probe Batch
		probe.Add("umask read", unix.SYS_UMASK, 0o22)
		res, err = run(&probe)
		if err != nil || res[0] != 0o77 {
			t.Errorf("umask after the failing batch %#o (%v): the call after the failure ran", res, err)
		}
	})
}

// TestRemoteBatch: Remote.Batch runs the calls in the seized process, puts
// the code it borrowed beside the gadget back, counts one injected call,
// and a failure names the call; the process runs on after release.
func TestRemoteBatch(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	withRemote(t, cmd, func(p *Process, r *Remote) {
		calls := r.Calls()
		var b Batch
		b.Add("getpid", unix.SYS_GETPID)
		b.Add("prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, 3)
		res, err := r.Batch(0, &b)
		if err != nil {
			t.Error(err)
			return
		}
		if res[0] != uint64(cmd.Process.Pid) || res[1] != 1 {
			t.Errorf("results %v, want pid %d and dumpable 1", res, cmd.Process.Pid)
		}
		if r.Calls() != calls+1 {
			t.Errorf("a batch counted %d injected calls, want 1", r.Calls()-calls)
		}
		var bad Batch
		bad.Add("close(-1)", unix.SYS_CLOSE, ^uint64(0))
		if _, err := r.Batch(0, &bad); !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "close(-1)") {
			t.Errorf("failing batch: %v", err)
		}
	})
	time.Sleep(50 * time.Millisecond)
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat"); err != nil || strings.Contains(string(b), ") t ") {
		t.Fatalf("sleep not running after release: %s %v", b, err)
	}
}

// TestBatchMayFail: a last call queued with AddMayFail gives its raw
// result, a negative errno included, without failing the batch; the calls
// before it still fail it; nothing may follow it.
func TestBatchMayFail(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	withRemote(t, cmd, func(p *Process, r *Remote) {
		var b Batch
		b.Add("getpid", unix.SYS_GETPID)
		b.AddMayFail("close(-1)", unix.SYS_CLOSE, ^uint64(0))
		res, err := r.Batch(0, &b)
		if err != nil {
			t.Errorf("batch with a failing may-fail call: %v", err)
			return
		}
		if res[0] != uint64(cmd.Process.Pid) || !errors.Is(Errno(int64(res[1])), unix.EBADF) {
			t.Errorf("results %v, want pid %d and -EBADF", res, cmd.Process.Pid)
		}
		var ok Batch
		ok.AddMayFail("getppid", unix.SYS_GETPPID)
		if res, err := r.Batch(0, &ok); err != nil || res[0] != uint64(os.Getpid()) {
			t.Errorf("may-fail call that succeeds: %v %v", res, err)
		}
		var bad Batch
		bad.Add("close(-1)", unix.SYS_CLOSE, ^uint64(0))
		bad.AddMayFail("getpid", unix.SYS_GETPID)
		if _, err := r.Batch(0, &bad); !errors.Is(err, unix.EBADF) {
			t.Errorf("ordinary call failing before a may-fail one: %v, want EBADF", err)
		}
		defer func() {
			if recover() == nil {
				t.Error("Add after AddMayFail did not panic")
			}
		}()
		bad.Add("getpid", unix.SYS_GETPID)
	})
}
