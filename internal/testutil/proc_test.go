package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// startNamed starts `sleep 1000` under the program name name (a symlink),
// which becomes its comm.
func startNamed(t *testing.T, name string) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(sleep, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// TestStatFields: the fields after a comm holding spaces and parentheses
// start with the state; field 4 is the parent.
func TestStatFields(t *testing.T) {
	cmd := startNamed(t, "a) (b c)")
	f, err := StatFields(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(f) < 20 || len(f[0]) != 1 {
		t.Fatalf("fields %q", f)
	}
	if f[1] != strconv.Itoa(os.Getpid()) {
		t.Errorf("ppid field %q, want %d (fields %q)", f[1], os.Getpid(), f)
	}
	if st := ProcState(cmd.Process.Pid); st != f[0] {
		t.Errorf("ProcState %q, want %q", st, f[0])
	}
	if _, err := StatFields(-1); err == nil {
		t.Error("StatFields of pid -1 succeeded")
	}
	if st := ProcState(-1); st != "" {
		t.Errorf("ProcState of pid -1 is %q", st)
	}
}

// TestWaitGoneAndExited: a killed child is a zombie until reaped:
// WaitExited returns then without reaping it, WaitGone reaps it; a live
// process times out in both.
func TestWaitGoneAndExited(t *testing.T) {
	cmd := startNamed(t, "waitgone")
	pid := cmd.Process.Pid
	if err := WaitExited(pid, 50*time.Millisecond); err == nil {
		t.Fatal("WaitExited returned for a live process")
	}
	if err := WaitGone(pid, 50*time.Millisecond); err == nil {
		t.Fatal("WaitGone returned for a live process")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := WaitExited(pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := ProcState(pid); st != "Z" {
		t.Errorf("after WaitExited the child is %q, want a zombie (not reaped)", st)
	}
	if err := WaitGone(pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Error("the child is still there after WaitGone")
	}
}

// TestCopyDir: regular files are copied into a new directory; a directory
// that exists already or a file of another kind is an error.
func TestCopyDir(t *testing.T) {
	src := t.TempDir()
	for name, data := range map[string]string{"a.img": "one", "b.img": "two"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := CopyDir(src, dst); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a.img": "one", "b.img": "two"} {
		if got, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if err := CopyDir(src, dst); err == nil {
		t.Error("CopyDir into an existing directory succeeded")
	}
	if err := os.Symlink("a.img", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := CopyDir(src, filepath.Join(t.TempDir(), "copy2")); err == nil {
		t.Error("CopyDir copied a symlink")
	}
}
