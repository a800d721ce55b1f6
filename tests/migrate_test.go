package tests

// ctr-cr migrate (issue 16): pre-copy rounds, the final dump, the restore
// by a `ctr-cr migrate-receive` on the other side, the source killed only
// once the destination runs. The two "hosts" are two pid namespaces of
// this machine (the destination's own, where the source's pids are free).

import (
	"encoding/json"
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
	bin    string // the case's program name (cleanup finds it by it)
}

func startMigrateCase(t *testing.T) *migrateCase {
	t.Helper()
	return startMigrateCaseIn(t, "", "p_premig.c")
}

// startMigrateCaseIn starts case src (with args after its work directory)
// as the init of a pid namespace of its own, in network namespace netns
// ("": ours).
func startMigrateCaseIn(t *testing.T, netns, src string, args ...string) *migrateCase {
	t.Helper()
	testutil.RequiresRoot(t)
	bin := buildCase(t, src, nil)
	dir, err := os.MkdirTemp("", "ctrcr-migrate-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	c := &migrateCase{t: t, dir: dir, out: filepath.Join(dir, "out"), bin: filepath.Base(bin)}
	f, err := os.Create(c.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	argv := testutil.InNetns(netns, append([]string{"unshare", "--pid", "--fork", bin, dir}, args...)...)
	c.outer = exec.Command(argv[0], argv[1:]...)
	c.outer.Stdout, c.outer.Stderr, c.outer.Dir = f, f, dir
	c.outer.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.outer.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(c.cleanup)
	deadline := time.Now().Add(10 * time.Second)
	for c.pid == 0 && time.Now().Before(deadline) {
		// nsenter execs unshare, which forks the case: the case is the
		// child of the outer process
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
		if strings.Contains(string(b), c.dir) && strings.Contains(string(b), c.bin) {
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

// TestCR_MigrateTwoHosts: two "hosts", network namespaces joined by a
// veth, each with a pid namespace of its own for the tree; a process
// holding 256 MiB and writing ~4 MiB a second migrates from A to a
// `migrate-receive` on B over the veth: pre-copy rounds while it writes,
// the final dump, the restore on B. The source is gone, the rounds'
// figures (frozen time of the final dump) are logged, and on B the
// process checks every page against its generation table and passes.
// Twice: restored eagerly on B, and with `migrate-receive --lazy-pages`
// (the source is killed once the tree runs on B, before its memory is
// in: the final round's frozen time drops by the restore's page filling).
func TestCR_MigrateTwoHosts(t *testing.T) {
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	testutil.RequiresRoot(t)
	t.Run("eager", func(t *testing.T) { migrateTwoHosts(t, nil) })
	t.Run("lazy", func(t *testing.T) { migrateTwoHosts(t, []string{"--lazy-pages"}) })
}

// migrateTwoHosts is TestCR_MigrateTwoHosts with recvArgs for the
// receiver.
func migrateTwoHosts(t *testing.T, recvArgs []string) {
	hostA, hostB := testutil.NewNetns(t), testutil.NewNetns(t)
	a, b := filepath.Base(hostA), filepath.Base(hostB)
	for _, argv := range [][]string{
		{"ip", "-n", a, "link", "add", "mig0", "type", "veth", "peer", "name", "mig1", "netns", b},
		{"ip", "-n", a, "addr", "add", "10.252.0.1/24", "dev", "mig0"},
		{"ip", "-n", b, "addr", "add", "10.252.0.2/24", "dev", "mig1"},
		{"ip", "-n", a, "link", "set", "mig0", "up"},
		{"ip", "-n", b, "link", "set", "mig1", "up"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	c := startMigrateCaseIn(t, hostA, "m_dirty.c", "256")
	time.Sleep(300 * time.Millisecond) // it writes meanwhile
	recv := testutil.StartListening(t, testutil.InNetns(hostB, append([]string{"unshare", "--pid", "--fork", "--mount-proc",
		testutil.BuildCtrCr(t), "migrate-receive", "--address", "10.252.0.2", "--port", "0", "-D", filepath.Join(t.TempDir(), "dst"), "--wait"}, recvArgs...)...)...)
	argv := testutil.InNetns(hostA, testutil.BuildCtrCr(t), "migrate", "-t", strconv.Itoa(c.pid), "--to", recv.Addr, "-D", filepath.Join(t.TempDir(), "src"), "--print-stats")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "restored as pid") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	rounds := 0
	for _, l := range strings.Split(string(out), "\n") {
		var st struct {
			FrozenMs     float64 `json:"frozen_ms"`
			PagesWritten uint64  `json:"pages_written"`
			PagesDirty   uint64  `json:"pages_dirty"`
		}
		if json.Unmarshal([]byte(l), &st) == nil && strings.HasPrefix(l, "{") {
			rounds++
			t.Logf("round %d: %d pages copied, %d written since the round before, frozen %.1f ms", rounds, st.PagesWritten, st.PagesDirty, st.FrozenMs)
		}
	}
	if rounds < 2 {
		t.Errorf("want pre-copy rounds and the final dump, got %d rounds:\n%s", rounds, out)
	}
	if err := waitGone(c.pid, goneTimeout); err != nil {
		t.Fatalf("source after the migration: %v", err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitLine("PASS")
	done := make(chan error, 1)
	go func() { done <- recv.Cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("migrate-receive: %v\n%s", err, recv.Stderr())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("migrate-receive did not end with the migrated process")
	}
}
