package platformtests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// containerd is a containerd daemon of the test's own (its root, state
// and socket; the CRI plugin off), driven with ctr.
type containerd struct {
	t       *testing.T
	dir     string
	state   string
	sock    string
	runtime string
}

// newContainerd starts the daemon; it is stopped, and its directories
// removed, when the test ends.
func newContainerd(t *testing.T) *containerd {
	t.Helper()
	requireTools(t, "containerd", "ctr", "containerd-shim-runc-v2", "busybox")
	rt, _ := runtimeDirs(t)
	dir := t.TempDir()
	c := &containerd{t: t, dir: dir, state: fmt.Sprintf("/run/ctrcr-ctrd-%d", os.Getpid()), runtime: filepath.Join(rt, "runc")}
	c.sock = filepath.Join(c.state, "containerd.sock")
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), c.state, c.sock)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	d := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	d.Stdout, d.Stderr = logf, logf
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.Process.Kill()
			<-done
		}
		logf.Close()
		os.RemoveAll(c.state)
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("containerd log (tail):\n%s", tail(string(b), 3000))
		}
	})
	waitFor(t, "containerd to serve", func() bool {
		_, err := c.run("version")
		return err == nil
	})
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (c *containerd) run(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", c.sock}, args...)...).CombinedOutput()
	return string(out), err
}

func (c *containerd) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// importImage imports the busybox root file system as an OCI archive
// made here (one uncompressed layer), named name.
func (c *containerd) importImage(name string) {
	c.t.Helper()
	var layer bytes.Buffer
	if err := busyboxTar(&layer); err != nil {
		c.t.Fatal(err)
	}
	arch, err := testutil.OCIArchive(name, layer.Bytes())
	if err != nil {
		c.t.Fatal(err)
	}
	p := filepath.Join(c.dir, "image.tar")
	if err := os.WriteFile(p, arch, 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.must("images", "import", p)
}

// removeContainer kills and removes the task and the container id.
func (c *containerd) removeContainer(id string) {
	c.run("tasks", "kill", "-s", "KILL", id)
	waitFor(c.t, "task "+id+" to stop", func() bool {
		out, _ := c.run("tasks", "ls")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				return false
			}
		}
		return true
	})
	c.run("tasks", "rm", "-f", id)
	c.run("containers", "rm", id)
}

// count reads the counter in the container's tmpfs through exec, and
// fails t when the counter found its state changed (/data/fail).
func (c *containerd) count(id string) int {
	c.t.Helper()
	out := c.must("tasks", "exec", "--exec-id", uniqueName("exec"), id, "sh", "-c", "cat /data/c; cat /data/fail 2>/dev/null; true")
	f := strings.Fields(out)
	if len(f) > 1 {
		c.t.Errorf("the counter found its state changed: %s", out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(f[0]))
	if err != nil {
		c.t.Fatalf("count %q", out)
	}
	return n
}

// waitCount waits until the counter reaches n.
func (c *containerd) waitCount(id string, n int) {
	c.t.Helper()
	waitFor(c.t, "the counter to reach "+fmtInt(n), func() bool {
		out, err := c.run("tasks", "exec", "--exec-id", uniqueName("exec"), id, "cat", "/data/c")
		v, _ := strconv.Atoi(strings.TrimSpace(out))
		return err == nil && v >= n
	})
}

// containerdCounter is counterScript with its finding also kept in the
// tmpfs (/data/fail): ctr's restore does not keep the task's output.
const containerdCounter = `i=0; while :; do i=$((i+1)); if [ $i -gt 1 ] && [ "$(cat /data/c)" != "$((i-1))" ]; then echo "FAIL tmpfs=$(cat /data/c) memory=$((i-1))" >> /data/fail; fi; echo $i > /data/c; sleep 0.1; done`

// A counter container under containerd (its runc shim, ctr-cr as the
// runc binary): `ctr containers checkpoint --task` (which pauses the task,
// checkpoints it with --leave-running into the content store and resumes
// it), the container removed, `ctr containers restore --live` from the
// checkpoint image, twice: the counter goes on from where it was, memory
// and tmpfs agreeing, exec works, and the task is killed and removed by
// containerd at the end; finally `ctr tasks checkpoint --exit` leaves the
// task stopped with its checkpoint image made.
func TestReal_ContainerdCounter(t *testing.T) {
	c := newContainerd(t)
	img := "localhost/" + uniqueName("busybox") + ":test"
	c.importImage(img)
	id := uniqueName("ctrd")
	t.Cleanup(func() { c.removeContainer(id) })
	c.must("run", "-d", "--runc-binary", c.runtime, "--null-io",
		"--mount", "type=tmpfs,src=tmpfs,dst=/data,options=rw:nosuid", img, id, "sh", "-c", containerdCounter)
	c.waitCount(id, 20)
	for round := 1; round <= 2; round++ {
		ref := fmt.Sprintf("localhost/%s-cp:%d", id, round)
		t0 := time.Now()
		c.must("containers", "checkpoint", "--task", id, ref)
		t.Logf("ctr containers checkpoint --task: %v", time.Since(t0))
		if out := c.must("tasks", "ls"); !strings.Contains(out, "RUNNING") {
			t.Fatalf("after the checkpoint the task is not running again:\n%s", out)
		}
		at := c.count(id)
		c.removeContainer(id)
		t0 = time.Now()
		c.must("containers", "restore", "--live", id, ref)
		t.Logf("ctr containers restore --live: %v", time.Since(t0))
		got := c.count(id)
		if got < at-30 || got > at+30 {
			t.Fatalf("round %d: restored counter at %d, the checkpoint's was about %d", round, got, at)
		}
		c.waitCount(id, got+3)
		// containerd 1.6 drops a task checkpoint silently when its spec
		// blob exists already (the previous checkpoint's: the same
		// spec): the next round needs that one gone
		c.must("images", "rm", "--sync", ref)
	}
	// ctr tasks checkpoint --exit: checkpointed paused, then ended
	out := c.must("tasks", "checkpoint", "--exit", id)
	if !strings.Contains(out, "containerd.io/checkpoint/"+id) {
		t.Errorf("tasks checkpoint --exit: no checkpoint image named: %s", out)
	}
	if out := c.must("tasks", "ls"); !strings.Contains(out, "STOPPED") {
		t.Errorf("after tasks checkpoint --exit the task is not stopped:\n%s", out)
	}
}
