package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/lifecycle"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// fakeNotify records the dump's hooks in order, fails the one named by
// fail, and notes at Releasing whether the target is still traced.
type fakeNotify struct {
	lifecycle.Base
	calls         []string
	fail          string
	target        int
	tracedRelease bool
}

var errHook = errors.New("hook failed")

func (f *fakeNotify) hook(name string, pid int) error {
	f.calls = append(f.calls, fmt.Sprintf("%s(%d)", name, pid))
	if f.fail == name {
		return errHook
	}
	return nil
}

func (f *fakeNotify) Seized(pid int) error { return f.hook("Seized", pid) }
func (f *fakeNotify) Releasing(pid int) error {
	f.tracedRelease = tracerOf(f.target) != "0"
	return f.hook("Releasing", pid)
}

// tracerOf is the TracerPid of pid ("" when its status is unreadable).
func tracerOf(pid int) string {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return ""
	}
	return fmt.Sprint(st.TracerPid)
}

// startSleep starts a sleeping child to dump.
func startSleep(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

// TestDumpNotify: a dump calls Seized once the tree is seized and Releasing
// as it lets the tree go (LeaveRunning); with StayFrozen the running task
// is still traced in Releasing, without it it is detached by then. A
// failing Seized fails the dump with its error, the tree released (it
// runs, untraced) and no image left.
func TestDumpNotify(t *testing.T) {
	testutil.RequiresRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid := startSleep(t)
	want := []string{fmt.Sprintf("Seized(%d)", pid), fmt.Sprintf("Releasing(%d)", pid)}
	for _, tc := range []struct {
		fail       string
		stayFrozen bool
	}{{"", false}, {"", true}, {"Seized", false}, {"Releasing", false}} {
		name := fmt.Sprintf("fail=%q,StayFrozen=%v", tc.fail, tc.stayFrozen)
		n := &fakeNotify{fail: tc.fail, target: pid}
		dir := filepath.Join(t.TempDir(), "img")
		_, err := Dump(context.Background(), pid, dir, Options{LeaveRunning: true, StayFrozen: tc.stayFrozen, Notify: n})
		if !slices.Equal(n.calls, want) {
			t.Fatalf("%s: hooks %v, want %v", name, n.calls, want)
		}
		if n.tracedRelease != tc.stayFrozen {
			t.Fatalf("%s: traced in Releasing: %v, want %v", name, n.tracedRelease, tc.stayFrozen)
		}
		if tc.fail == "" && err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tc.fail != "" && !errors.Is(err, errHook) {
			t.Fatalf("%s: %v, want the hook's error", name, err)
		}
		if tr := tracerOf(pid); tr != "0" {
			t.Fatalf("%s: the target is still traced (TracerPid %q) or gone", name, tr)
		}
		if _, serr := os.Stat(dir); tc.fail == "Seized" && serr == nil {
			t.Fatalf("%s: the failed dump left %s", name, dir)
		}
	}
}
