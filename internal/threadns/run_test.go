package threadns

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

func TestLockedResultAndPanic(t *testing.T) {
	want := errors.New("from fn")
	if err := Locked(func() error { return want }); err != want {
		t.Errorf("Locked returned %v", err)
	}
	defer func() {
		if p := recover(); p != "boom" {
			t.Errorf("recovered %v, want the panic of fn", p)
		}
	}()
	Locked(func() error { panic("boom") })
}

func TestTypeName(t *testing.T) {
	for typ, name := range map[int]string{unix.CLONE_NEWIPC: "ipc", unix.CLONE_NEWNS: "mnt", unix.CLONE_NEWCGROUP: "cgroup", 0: "any", 1: "0x1"} {
		if got := TypeName(typ); got != name {
			t.Errorf("TypeName(%#x) = %q, want %q", typ, got, name)
		}
	}
}

// TestRunInRootSelf: RunInRoot of our own process sees our root, and a
// process that does not exist is an error before any thread is made.
func TestRunInRootSelf(t *testing.T) {
	testutil.RequiresRoot(t)
	err := RunInRoot(os.Getpid(), []string{"net"}, func() error {
		_, err := os.Stat("/proc/self/exe")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = RunInRoot(1<<30, nil, func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "open root of pid") {
		t.Fatalf("no process: %v", err)
	}
}
