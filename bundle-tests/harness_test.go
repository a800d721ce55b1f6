// Package bundletests runs ctr-cr against real OCI bundles (a busybox
// rootfs) started by a real runtime (runc, crun from Debian).
package bundletests

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

func TestMain(m *testing.M) {
	shim, err := testutil.CrunWrapper()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundle-tests: crun shim:", err)
		os.Exit(1)
	}
	code := m.Run()
	testutil.Cleanup()
	if shim != "" {
		os.RemoveAll(shim)
	}
	os.Exit(code)
}

// runtimes are the OCI runtimes every container test runs with.
var runtimes = []string{"runc", "crun"}

// forRuntimes runs fn as one subtest per runtime.
func forRuntimes(t *testing.T, fn func(t *testing.T, rt string)) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) { fn(t, rt) })
	}
}

var seq atomic.Int32

// bundle is an OCI bundle with a busybox rootfs, run by one runtime.
type bundle struct {
	t       *testing.T
	runtime string // runc or crun
	dir     string // the bundle
	id      string
	// privateTmp: the counter is read through the init's root (a bundle
	// whose /tmp is a tmpfs of its own, see usePrivateTmp)
	privateTmp bool
}

// usePrivateTmp gives the container a tmpfs on /tmp, so that containers
// restored from one checkpoint beside each other (restore --id) count each
// in their own file rather than in the shared rootfs.
func (b *bundle) usePrivateTmp() {
	b.editSpec(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
	})
	b.privateTmp = true
}

// counterScript counts in /tmp/count (in the rootfs) ten times a second.
const counterScript = `i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done`

// newBundle builds a bundle whose process runs sh -c script, with hostname
// and the runtime's default namespaces (pid, net, ipc, uts, mount).
func newBundle(t *testing.T, runtime, script string) *bundle {
	t.Helper()
	testutil.RequiresRoot(t)
	for _, tool := range []string{runtime, "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install runc crun busybox-static): %v", tool, err)
		}
	}
	dir := t.TempDir()
	b := &bundle{t: t, runtime: runtime, dir: dir, id: fmt.Sprintf("ctrcr-test-%d-%d", os.Getpid(), seq.Add(1))}
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "run"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"sh", "sleep", "cat", "echo", "hostname", "ls", "mkdir", "mount"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", c)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("runc", "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	b.editSpec(func(s *specs.Spec) {
		s.Process.Terminal = false
		s.Process.Args = []string{"sh", "-c", script}
		s.Root.Readonly = false
		s.Hostname = "ctrcr-box"
	})
	return b
}

// editSpec rewrites config.json through fn.
func (b *bundle) editSpec(fn func(*specs.Spec)) {
	b.t.Helper()
	path := filepath.Join(b.dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		b.t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		b.t.Fatal(err)
	}
	fn(&s)
	if data, err = json.MarshalIndent(&s, "", "\t"); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// rt runs the runtime with args.
func (b *bundle) rt(args ...string) (string, error) {
	out, err := exec.Command(b.runtime, args...).CombinedOutput()
	return string(out), err
}

// start runs the container detached and registers its removal.
func (b *bundle) start() {
	b.t.Helper()
	cmd := exec.Command(b.runtime, "run", "-d", "--bundle", b.dir, b.id)
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	if err := cmd.Run(); err != nil {
		b.t.Fatalf("%s run -d %s: %v", b.runtime, b.id, err)
	}
	b.t.Cleanup(func() { b.rt("delete", "--force", b.id) })
}

// state returns the runtime's state of the container.
func (b *bundle) state() (map[string]any, error) {
	out, err := b.rt("state", b.id)
	if err != nil {
		return nil, fmt.Errorf("%s state: %v: %s", b.runtime, err, out)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, err
	}
	return st, nil
}

// count reads the counter the container writes.
func (b *bundle) count() int {
	path := filepath.Join(b.dir, "rootfs", "tmp", "count")
	if b.privateTmp {
		st, err := b.state()
		if err != nil {
			return 0
		}
		pid, _ := st["pid"].(float64)
		path = fmt.Sprintf("/proc/%d/root/tmp/count", int(pid))
	}
	data, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

// checkpointCounted is cycle's checkpoint (see checkpoint) of a counter
// container; it returns the counter as checkpointed: what the file says,
// or the value read just before when the file is empty because the shell
// was frozen between the truncate and the write of its
// `echo $i > /tmp/count`.
func (b *bundle) checkpointCounted(cycle int) int {
	b.t.Helper()
	before := b.count()
	b.checkpoint(cycle)
	if c := b.count(); c > 0 {
		return c
	}
	return before
}

// waitCount waits until the counter passes n.
func (b *bundle) waitCount(n int) int {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c := b.count(); c > n {
			return c
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("container %s: counter stuck at %d (want more than %d)", b.id, b.count(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkpoint is cycle's `ctr-cr checkpoint [args] ID` of the container
// into BUNDLE/checkpoint (emptied first).
func (b *bundle) checkpoint(cycle int, args ...string) {
	b.t.Helper()
	os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
	if out, err := ctrcr(b.t, append(append([]string{"checkpoint"}, args...), b.id)...); err != nil {
		b.t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
	}
}

// restore is cycle's `ctr-cr restore -d BUNDLE`.
func (b *bundle) restore(cycle int) {
	b.t.Helper()
	if out, err := ctrcr(b.t, "restore", "-d", b.dir); err != nil {
		b.t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
	}
}

// ctrcr runs the ctr-cr binary; out is its stdout and stderr together.
func ctrcr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, _, err := testutil.RunCtrCr(t, testutil.CtrCrRun{Combined: true}, args...)
	return out, err
}

// waitGone waits until pid is gone or a zombie (its parent, not us, reaps
// it).
func waitGone(pid int, d time.Duration) error { return testutil.WaitExited(pid, d) }

// tarFile returns the contents of the entry name (with or without a
// leading "./") in the tar archive at path.
func tarFile(path, name string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("%s: no %s: %w", path, name, err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			b, err := io.ReadAll(tr)
			return string(b), err
		}
	}
}

// pidOf returns the container's init pid from the runtime's state.
func (b *bundle) pidOf() int {
	b.t.Helper()
	st, err := b.state()
	if err != nil {
		b.t.Fatal(err)
	}
	if st["status"] != "running" {
		b.t.Fatalf("container %s is %v, not running", b.id, st["status"])
	}
	return int(st["pid"].(float64))
}
