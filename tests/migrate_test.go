package tests

// ctr-cr migrate (issue 16): pre-copy rounds, the final dump, the restore
// by a `ctr-cr migrate-receive` on the other side, the source killed only
// once the destination runs. The two "hosts" are two pid namespaces of
// this machine (the destination's own, where the source's pids are free).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// migrateCase is the p_premig case running as the init of a pid namespace
// of its own (the source host's workload).
type migrateCase struct {
	t      *testing.T
	dir    string // work directory
	out    string
	pid    int // the case, in our pid namespace
	outer  *exec.Cmd
	killed bool
}

func startMigrateCase(t *testing.T) *migrateCase {
	t.Helper()
	testutil.RequiresRoot(t)
	bin := buildCase(t, "p_premig.c", nil)
	dir, err := os.MkdirTemp("", "ctrcr-migrate-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	c := &migrateCase{t: t, dir: dir, out: filepath.Join(dir, "out")}
	f, err := os.Create(c.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c.outer = exec.Command("unshare", "--pid", "--fork", bin, dir)
	c.outer.Stdout, c.outer.Stderr, c.outer.Dir = f, f, dir
	c.outer.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.outer.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(c.cleanup)
	deadline := time.Now().Add(10 * time.Second)
	for c.pid == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.outer.Process.Pid, c.outer.Process.Pid))
		c.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if err := waitReady(t, c.pid, c.out, defaultReadyTimeout); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitLine waits for the case to print line.
func (c *migrateCase) waitLine(line string) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(c.out)
		if strings.Contains(string(b), line) {
			return
		}
		if strings.Contains(string(b), "FAIL") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("case did not print %q:\n%s", line, tail(c.out, tailLines))
}

func (c *migrateCase) step(n int) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.dir, fmt.Sprintf("step%d", n)), nil, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.waitLine(fmt.Sprintf("log: step %d done", n))
}

// cleanup kills what is left: the case wherever it runs (found by its
// work directory on its command line) and the unshare around it.
func (c *migrateCase) cleanup() {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), c.dir) && strings.Contains(string(b), "p_premig") {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	c.outer.Process.Kill()
	c.outer.Wait()
}

// startReceiver starts `ctr-cr migrate-receive --wait` into dir, in a pid
// namespace of its own when ownPidNs (the destination host), and returns
// its address.
func startReceiver(t *testing.T, dir string, ownPidNs bool) (string, *exec.Cmd) {
	t.Helper()
	argv := []string{testutil.BuildCtrCr(t), "migrate-receive", "--address", "127.0.0.1", "--port", "0", "-D", dir, "--wait"}
	if ownPidNs {
		argv = append([]string{"unshare", "--pid", "--fork", "--mount-proc"}, argv...)
	}
	l := testutil.StartListening(t, argv...)
	return l.Addr, l.Cmd
}

// TestCR_Migrate: the case (after its own userfaultfd is closed) migrates
// to a receiver in another pid namespace: rounds, final dump, restore
// there; the source is gone, and the case goes on there (a step of
// memory changes, then its checks of every page) and passes.
func TestCR_Migrate(t *testing.T) {
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	c := startMigrateCase(t)
	c.step(1)
	c.step(2)
	addr, recv := startReceiver(t, filepath.Join(t.TempDir(), "dst"), true)
	stdout, stderr, err := ctrcr(t, "migrate", "-t", strconv.Itoa(c.pid), "--to", addr, "-D", filepath.Join(t.TempDir(), "src"))
	if err != nil || !strings.Contains(stdout, "restored as pid") {
		t.Fatalf("migrate: %v\n%s\n%s", err, stdout, stderr)
	}
	if err := waitGone(c.pid, goneTimeout); err != nil {
		t.Fatalf("source after the migration: %v", err)
	}
	c.step(3)
	if err := os.WriteFile(filepath.Join(c.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitLine("PASS")
	done := make(chan error, 1)
	go func() { done <- recv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("migrate-receive: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("migrate-receive did not end with the migrated tree")
	}
}

// TestNegative_MigrateRestoreFails: when the destination cannot restore
// (here: its pids are taken, a receiver in our own pid namespace), the
// migration fails with the destination's error and the source runs on
// unchanged: a step and its checks pass there.
func TestNegative_MigrateRestoreFails(t *testing.T) {
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	c := startMigrateCase(t)
	c.step(1)
	c.step(2)
	addr, _ := startReceiver(t, filepath.Join(t.TempDir(), "dst"), false)
	_, stderr, err := ctrcr(t, "migrate", "-t", strconv.Itoa(c.pid), "--to", addr, "-D", filepath.Join(t.TempDir(), "src"))
	if err == nil || !strings.Contains(stderr, "is in use") || !strings.Contains(stderr, "runs on here") {
		t.Fatalf("migrate to a receiver that cannot restore: %v\n%s", err, stderr)
	}
	requireRunningUntraced(t, c.pid)
	c.step(3)
	if err := os.WriteFile(filepath.Join(c.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitLine("PASS")
}
