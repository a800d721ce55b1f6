package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CtrCrRun says how RunCtrCr runs the ctr-cr binary.
type CtrCrRun struct {
	// Netns runs ctr-cr in the network namespace at this path (nsenter
	// --net); "" runs it in ours.
	Netns string
	// Extra are ctr-cr's fds 3 and up.
	Extra []*os.File
	// Timeout kills ctr-cr after this long and makes err say so; 0 sets
	// no limit.
	Timeout time.Duration
	// Combined writes stderr into the same stream as stdout (in the order
	// written); RunCtrCr then returns it all as stdout and "" as stderr.
	Combined bool
}

// RunCtrCr runs the ctr-cr binary (BuildCtrCr) with args as o says and
// logs the command, its outcome and its duration. err is non-nil when
// ctr-cr cannot be run, times out or exits non-zero.
//
// Its output goes to regular files rather than pipes: a restored process
// that wrongly inherits ctr-cr's stdio must not make the test hang.
func RunCtrCr(t testing.TB, o CtrCrRun, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := BuildCtrCr(t)
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if o.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
	}
	defer cancel()

	outF, err := os.CreateTemp("", "ctrcr-stdout-")
	if err != nil {
		return "", "", err
	}
	defer os.Remove(outF.Name())
	defer outF.Close()
	errF := outF
	if !o.Combined {
		if errF, err = os.CreateTemp("", "ctrcr-stderr-"); err != nil {
			return "", "", err
		}
		defer os.Remove(errF.Name())
		defer errF.Close()
	}

	argv := InNetns(o.Netns, append([]string{bin}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = outF
	cmd.Stderr = errF
	cmd.ExtraFiles = o.Extra
	start := time.Now()
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %v (%v)", o.Timeout, err)
	}
	out, _ := os.ReadFile(outF.Name())
	var errOut []byte
	if !o.Combined {
		errOut, _ = os.ReadFile(errF.Name())
	}
	status := "ok"
	if err != nil {
		status = err.Error()
	}
	t.Logf("ctr-cr %s: %s (%.2fs)", strings.Join(args, " "), status, time.Since(start).Seconds())
	return string(out), string(errOut), err
}

// CtrCrKilledAt runs ctr-cr args with CTRCR_FAULT=point (internal/fault)
// and fails the test unless ctr-cr died there by SIGKILL; it returns
// ctr-cr's output (stdout and stderr). timeout 0 sets no limit.
func CtrCrKilledAt(t testing.TB, timeout time.Duration, point string, args ...string) string {
	t.Helper()
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	cmd := exec.CommandContext(ctx, BuildCtrCr(t), args...)
	cmd.Env = append(os.Environ(), "CTRCR_FAULT="+point)
	out, err := cmd.CombinedOutput()
	var ws syscall.WaitStatus
	ok := false
	if cmd.ProcessState != nil {
		ws, ok = cmd.ProcessState.Sys().(syscall.WaitStatus)
	}
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("ctr-cr %s with CTRCR_FAULT=%s: %v, want killed by SIGKILL at the fault point\n%s", strings.Join(args, " "), point, err, out)
	}
	t.Logf("ctr-cr %s: killed at %s", strings.Join(args, " "), point)
	return string(out)
}
