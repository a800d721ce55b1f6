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

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/hooks"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

var seq atomic.Int32

// bundle is an OCI bundle with a busybox rootfs, run by one runtime.
type bundle struct {
	t       *testing.T
	runtime string // runc or crun
	dir     string // the bundle
	id      string
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
	for _, c := range []string{"sh", "sleep", "cat", "echo", "hostname", "ls"} {
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
	data, _ := os.ReadFile(filepath.Join(b.dir, "rootfs", "tmp", "count"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
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

// ctrcr runs the ctr-cr binary.
func ctrcr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testutil.BuildCtrCr(t)
	start := time.Now()
	out, err := exec.Command(bin, args...).CombinedOutput()
	t.Logf("ctr-cr %s: %v (%.2fs)", strings.Join(args, " "), err, time.Since(start).Seconds())
	return string(out), err
}

// TestCheckpoint_Counter: a busybox counter container under runc is
// checkpointed with --leave-running (it keeps counting, thawed, and the
// image has its process tree, spec.dump, ctr-cr.json and container.json
// with the cgroup's memory and pids limits), then without it (the
// container is gone from the runtime, its processes too).
func TestCheckpoint_Counter(t *testing.T) {
	// crun refuses this machine's hybrid cgroup layout (a controller in the
	// cgroup2 hierarchy): it joins once the tests give it a pure cgroup2
	// view.
	for _, rtName := range []string{"runc"} {
		t.Run(rtName, func(t *testing.T) {
			b := newBundle(t, rtName, "echo kept > /data/hello; "+counterScript)
			mem, pids := int64(96<<20), int64(64)
			b.editSpec(func(s *specs.Spec) {
				s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
				if s.Linux.Resources == nil {
					s.Linux.Resources = &specs.LinuxResources{}
				}
				s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &mem}
				s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
			})
			b.start()
			c := b.waitCount(2)
			st, err := b.state()
			if err != nil {
				t.Fatal(err)
			}
			pid := int(st["pid"].(float64))
			img := filepath.Join(t.TempDir(), "img-leave")
			if out, err := ctrcr(t, "checkpoint", "--runtime", rtName, "--image-path", img, "--leave-running", b.id); err != nil {
				t.Fatalf("checkpoint --leave-running: %v\n%s", err, out)
			}
			b.waitCount(c + 2)
			if st, err := b.state(); err != nil || st["status"] != "running" {
				t.Fatalf("after --leave-running: %v %v", st, err)
			}
			for _, f := range []string{"inventory.img", "pstree.img", "spec.dump", "ctr-cr.json"} {
				if _, err := os.Stat(filepath.Join(img, f)); err != nil {
					t.Errorf("image lacks %s: %v", f, err)
				}
			}
			var cst struct {
				UTS struct {
					Hostname string `json:"hostname"`
				} `json:"uts"`
				IPC        *json.RawMessage  `json:"ipc"`
				TmpfsFiles map[string]string `json:"tmpfs_files"`
				Net        struct {
					Links []struct {
						Index int    `json:"index"`
						Name  string `json:"name"`
					} `json:"links"`
				} `json:"net"`
				Cgroup struct {
					Settings struct {
						MemoryLimit int64 `json:"memory_limit"`
						PidsMax     int64 `json:"pids_max"`
					} `json:"settings"`
				} `json:"cgroup"`
			}
			data, _ := os.ReadFile(filepath.Join(img, "container.json"))
			if err := json.Unmarshal(data, &cst); err != nil || cst.Cgroup.Settings.MemoryLimit != mem || cst.Cgroup.Settings.PidsMax != pids {
				t.Errorf("container.json does not hold the memory and pids limits (%d, %d): %v\n%s", mem, pids, err, data)
			}
			if !strings.Contains(string(data), `"mount_point": "/data"`) || cst.TmpfsFiles["/data"] == "" {
				t.Errorf("container.json lacks the /data tmpfs or its contents file:\n%s", data)
			} else if got, err := tarFile(filepath.Join(img, cst.TmpfsFiles["/data"]), "hello"); err != nil || got != "kept\n" {
				t.Errorf("tmpfs archive: /data/hello is %q: %v", got, err)
			}
			if cst.UTS.Hostname != "ctrcr-box" || cst.IPC == nil || len(cst.Net.Links) == 0 || cst.Net.Links[0].Name != "lo" || cst.Net.Links[0].Index != 1 {
				t.Errorf("container.json does not hold the UTS (hostname ctrcr-box), IPC and network (lo at index 1) namespaces:\n%s", data)
			}
			if fs, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", b.id, "freezer.state")); err == nil && strings.TrimSpace(string(fs)) != "THAWED" {
				t.Errorf("container left %s after --leave-running", strings.TrimSpace(string(fs)))
			}
			var meta map[string]any
			data, _ = os.ReadFile(filepath.Join(img, "ctr-cr.json"))
			if err := json.Unmarshal(data, &meta); err != nil || meta["id"] != b.id || meta["runtime"] != rtName || int(meta["init_pid"].(float64)) != pid {
				t.Errorf("ctr-cr.json: %v: %s", err, data)
			}
			spec, _ := os.ReadFile(filepath.Join(img, "spec.dump"))
			orig, _ := os.ReadFile(filepath.Join(b.dir, "config.json"))
			if string(spec) != string(orig) {
				t.Errorf("spec.dump differs from config.json")
			}
			out, err := ctrcr(t, "show", img)
			if err != nil || !strings.Contains(out, " sh\n") || !strings.Contains(out, `\_ sleep`) {
				t.Errorf("show: %v\n%s", err, out)
			}

			// the default image path, and the container stopped and removed
			if out, err := ctrcr(t, "checkpoint", "--runtime", rtName, b.id); err != nil {
				t.Fatalf("checkpoint: %v\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(b.dir, "checkpoint", "inventory.img")); err != nil {
				t.Errorf("no image in BUNDLE/checkpoint: %v", err)
			}
			if _, err := b.state(); err == nil {
				t.Errorf("%s still knows container %s after the checkpoint", rtName, b.id)
			}
			if err := waitGone(pid, 5*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestCheckpoint_Errors: a container that does not exist, a bad runtime.
func TestCheckpoint_Errors(t *testing.T) {
	testutil.RequiresRoot(t)
	out, err := ctrcr(t, "checkpoint", "ctrcr-no-such-container")
	if err == nil || !strings.Contains(out, "ctrcr-no-such-container") {
		t.Errorf("checkpoint of a missing container: %v\n%s", err, out)
	}
	out, err = ctrcr(t, "checkpoint", "--runtime", "docker", "x")
	if err == nil || !strings.Contains(out, "only runc and crun") {
		t.Errorf("checkpoint with --runtime docker: %v\n%s", err, out)
	}
}

// waitGone waits until pid is gone or a zombie (its parent, not us, reaps
// it).
func waitGone(pid int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && len(data) > i+2 && data[i+2] == 'Z' {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still running %v after the checkpoint", pid, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

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

// TestRestore_Counter: the busybox counter container is checkpointed and
// restored from its bundle twice in a row; each time it goes on counting
// from where it was (not from 1), runc reports it running with its init
// and both processes (runc ps), the restored init has the container's own
// capabilities and no_new_privs back (the sandbox was created privileged
// for the restore), the bundle's config.json is the user's, the hostname
// and the /data tmpfs file are back, and so are memory and pids limits set
// with runc update (not in config.json); then runc kill and delete work.
func TestRestore_Counter(t *testing.T) {
	b := newBundle(t, "runc", "echo kept > /data/hello; "+counterScript)
	b.editSpec(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
	})
	cfg, err := os.ReadFile(filepath.Join(b.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	b.start()
	b.waitCount(3)
	// limits changed at run time (not in config.json) come back from the
	// checkpoint
	if out, err := b.rt("update", "--memory", "83886080", "--pids-limit", "77", b.id); err != nil {
		t.Fatalf("runc update: %v\n%s", err, out)
	}
	for cycle := 0; cycle < 2; cycle++ {
		os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
		if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
		}
		at := b.count()
		if out, err := ctrcr(t, "restore", "-d", b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		pid := b.pidOf()
		if c := b.waitCount(at); c > at+50 {
			t.Fatalf("cycle %d: counter jumped from %d to %d", cycle, at, c)
		}
		if at < 3 {
			t.Fatalf("cycle %d: counter was %d at the checkpoint", cycle, at)
		}
		out, err := b.rt("ps", b.id)
		if err != nil || !strings.Contains(out, "sh -c") {
			t.Errorf("cycle %d: runc ps: %v\n%s", cycle, err, out)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), "CapBnd:\t0000000020000420") || !strings.Contains(string(status), "NoNewPrivs:\t1") {
			t.Errorf("cycle %d: restored init's caps / no_new_privs are not the container's:\n%s", cycle, status)
		}
		if now, _ := os.ReadFile(filepath.Join(b.dir, "config.json")); string(now) != string(cfg) {
			t.Errorf("cycle %d: config.json was changed by the restore", cycle)
		}
		if h, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/hello", pid)); err != nil || string(h) != "kept\n" {
			t.Errorf("cycle %d: /data/hello in the restored container: %q %v", cycle, h, err)
		}
		if h, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-u", "hostname").Output(); err != nil || strings.TrimSpace(string(h)) != "ctrcr-box" {
			t.Errorf("cycle %d: hostname %q %v", cycle, h, err)
		}
		if cg, err := cgroup.ForPid(pid); err != nil {
			t.Errorf("cycle %d: cgroup: %v", cycle, err)
		} else if st, err := cg.ReadSettings(); err != nil || st.MemoryLimit == nil || *st.MemoryLimit != 83886080 || st.PidsMax == nil || *st.PidsMax != 77 {
			t.Errorf("cycle %d: cgroup limits not back (memory 80 MiB, pids 77): %+v %v", cycle, st, err)
		}
	}
	pid := b.pidOf()
	if out, err := b.rt("kill", b.id, "KILL"); err != nil {
		t.Fatalf("runc kill: %v\n%s", err, out)
	}
	if err := waitGone(pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := b.rt("delete", b.id); err != nil {
		t.Fatalf("runc delete: %v\n%s", err, out)
	}
}

// TestRestore_ChangedConfig: a restore whose config.json changed a field
// that may not change fails naming it, leaves no container and the
// config.json untouched.
func TestRestore_ChangedConfig(t *testing.T) {
	b := newBundle(t, "runc", counterScript)
	b.start()
	b.waitCount(1)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	b.editSpec(func(s *specs.Spec) { s.Hostname = "changed" })
	out, err := ctrcr(t, "restore", "-d", b.dir)
	if err == nil || !strings.Contains(out, "hostname") {
		t.Fatalf("restore with a changed hostname: %v\n%s", err, out)
	}
	if _, err := b.state(); err == nil {
		t.Errorf("a container %s exists after the failed restore", b.id)
	}
}

// TestRestore_Copy: --leave-running plus restore --id gives two live
// containers from one checkpoint, both managed by runc.
func TestRestore_Copy(t *testing.T) {
	b := newBundle(t, "runc", counterScript)
	b.start()
	b.waitCount(2)
	if out, err := ctrcr(t, "checkpoint", "--leave-running", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	copyID := b.id + "-copy"
	t.Cleanup(func() { b.rt("delete", "--force", copyID) })
	if out, err := ctrcr(t, "restore", "-d", "--id", copyID, b.dir); err != nil {
		t.Fatalf("restore --id: %v\n%s", err, out)
	}
	orig := b.pidOf()
	cp := &bundle{t: t, runtime: b.runtime, dir: b.dir, id: copyID}
	copyPid := cp.pidOf()
	if orig == copyPid {
		t.Fatalf("the copy has the original's pid %d", orig)
	}
	for _, id := range []string{b.id, copyID} {
		if out, err := b.rt("ps", id); err != nil || !strings.Contains(out, "sh -c") {
			t.Errorf("runc ps %s: %v\n%s", id, err, out)
		}
	}
	b.waitCount(b.count() + 3)
	if out, err := b.rt("kill", copyID, "KILL"); err != nil {
		t.Fatalf("runc kill %s: %v\n%s", copyID, err, out)
	}
	if err := waitGone(copyPid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := b.rt("delete", copyID); err != nil {
		t.Fatalf("runc delete %s: %v\n%s", copyID, err, out)
	}
	if b.pidOf() != orig {
		t.Fatal("the original changed")
	}
}

// inNs runs argv in network namespace ns (a path) and returns its output.
func inNs(ns string, argv ...string) (string, error) {
	a := testutil.InNetns(ns, argv...)
	out, err := exec.Command(a[0], a[1:]...).CombinedOutput()
	return string(out), err
}

// linkOf returns "index mac" of a link inside the netns of pid.
func linkOf(t *testing.T, pid int, name string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "ip", "-o", "link", "show", name).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show %s in pid %d: %v\n%s", name, pid, err, out)
	}
	f := strings.Fields(string(out))
	mac := ""
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			mac = f[i+1]
		}
	}
	return strings.TrimSuffix(f[0], ":") + " " + mac
}

// TestRestore_Veth: a container with a veth whose other end lives outside
// (in a netns of the test standing for the host, as a port of a bridge
// holding the gateway address) keeps its interface's
// ifindex, MAC and address across two checkpoint/restore cycles, and
// answers ping from the outside after each restore (the outside end is
// rebuilt and put back on its bridge). ctr-cr runs in the
// outside netns, where the host side of the veth is found and rebuilt.
func TestRestore_Veth(t *testing.T) {
	b := newBundle(t, "runc", counterScript)
	outside := testutil.NewNetns(t)
	b.start()
	b.waitCount(1)
	pid := b.pidOf()
	vethSetup(t, outside, pid)
	ping := func(when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := inNs(outside, "busybox", "ping", "-c", "1", "-W", "1", "10.251.0.2")
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ping 10.251.0.2 from outside: %v\n%s", when, err, out)
			}
		}
	}
	ping("before")
	want := linkOf(t, pid, "eth0")
	bin := testutil.BuildCtrCr(t)
	for cycle := 0; cycle < 2; cycle++ {
		os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
		if out, err := inNs(outside, bin, "checkpoint", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
		}
		if out, err := inNs(outside, bin, "restore", "-d", b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		pid = b.pidOf()
		if got := linkOf(t, pid, "eth0"); got != want {
			t.Errorf("cycle %d: eth0 is %q, was %q (index mac)", cycle, got, want)
		}
		ping(fmt.Sprintf("cycle %d", cycle))
		b.waitCount(b.count())
	}
}

// vethSetup gives the container whose init is pid an eth0 (10.251.0.2/24)
// whose other end is a port of bridge br-ctrcr (10.251.0.1/24) in the
// netns outside.
func vethSetup(t *testing.T, outside string, pid int) {
	t.Helper()
	// the host side: a bridge with the gateway address, the veth's outside
	// end its port (as a container network usually has it)
	setup := [][]string{
		{"ip", "link", "add", "br-ctrcr", "type", "bridge"},
		{"ip", "addr", "add", "10.251.0.1/24", "dev", "br-ctrcr"},
		{"ip", "link", "set", "br-ctrcr", "up"},
		{"ip", "link", "add", "vh-ctrcr", "type", "veth", "peer", "name", "eth0"},
		{"ip", "link", "set", "vh-ctrcr", "master", "br-ctrcr", "up"},
		{"ip", "link", "set", "eth0", "netns", strconv.Itoa(pid)},
	}
	for _, c := range setup {
		if out, err := inNs(outside, c...); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	for _, c := range [][]string{{"ip", "addr", "add", "10.251.0.2/24", "dev", "eth0"}, {"ip", "link", "set", "eth0", "up"}, {"ip", "link", "set", "lo", "up"}} {
		if out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(pid), "-n"}, c...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
}

// echoClient keeps one TCP connection to the container's echo server:
// numbered lines out, each echoed back and checked; progress (lines) or
// "ERROR ..." in DIR/progress.
const echoClient = `
import os, socket, sys, time
d = sys.argv[1]
def report(s):
    open(d + "/progress.tmp", "w").write(s)
    os.rename(d + "/progress.tmp", d + "/progress")
try:
    for attempt in range(100):
        try:
            s = socket.create_connection(("10.251.0.2", 7777), timeout=2)
            break
        except OSError:
            if attempt == 99:
                raise
            time.sleep(0.1)
    s.settimeout(30)
    f = s.makefile("rwb")
    i = 0
    while True:
        f.write(b"line %d\n" % i); f.flush()
        got = f.readline()
        if got != b"line %d\n" % i:
            raise RuntimeError("echo %r for line %d" % (got, i))
        i += 1
        report("lines %d" % i)
        time.sleep(0.02)
except Exception as e:
    report("ERROR %r" % e)
`

// TestRestore_TCPEstablished: a TCP connection from outside (a python
// client in the netns standing for the host) to an echo server in the
// container survives two checkpoint/restore cycles with --tcp-established:
// the same connection keeps echoing every line.
func TestRestore_TCPEstablished(t *testing.T) {
	b := newBundle(t, "runc", "nc -l -p 7777 -e cat")
	outside := testutil.NewNetns(t)
	b.start()
	pid := b.pidOf()
	vethSetup(t, outside, pid)
	dir := t.TempDir()
	a := testutil.InNetns(outside, "python3", "-c", echoClient, dir)
	client := exec.Command(a[0], a[1:]...)
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Process.Kill(); client.Wait() })
	lines := func() int {
		p, _ := os.ReadFile(filepath.Join(dir, "progress"))
		if strings.HasPrefix(string(p), "ERROR") {
			t.Fatalf("echo client: %s", p)
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(string(p), "lines "))
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	for lines() < 5 {
		if time.Now().After(deadline) {
			p, _ := os.ReadFile(filepath.Join(dir, "progress"))
			t.Fatalf("echo client does not get going: %q", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	bin := testutil.BuildCtrCr(t)
	for cycle := 0; cycle < 2; cycle++ {
		before := lines()
		os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
		if out, err := inNs(outside, bin, "checkpoint", "--tcp-established", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
		}
		time.Sleep(200 * time.Millisecond) // the client waits on a silent connection
		if out, err := inNs(outside, bin, "restore", "-d", b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		deadline := time.Now().Add(20 * time.Second)
		for lines() < before+20 {
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: the connection does not carry lines any more (%d, was %d)", cycle, lines(), before)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("cycle %d: %d lines before the checkpoint, %d now", cycle, before, lines())
	}
	if out, _ := inNs(outside, "nft", "list", "tables"); strings.Contains(out, "ctrcr_lock") {
		t.Errorf("lock tables left:\n%s", out)
	}
}

// journal reads the events ctr-cr hook recorded in the bundle.
func journal(t *testing.T, b *bundle) []hooks.Event {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(b.dir, hooks.JournalName))
	if err != nil {
		t.Fatal(err)
	}
	var evs []hooks.Event
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e hooks.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("journal line %q: %v", l, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// TestRestore_Hooks: the bundle has a hook for every phase, each appending
// its phase and state to one log (the runtime-namespace ones by its host
// path, the container ones inside the container), plus ctr-cr hook as a
// second poststart hook. On restore ctr-cr runs prestart, createRuntime,
// createContainer and startContainer once the sandbox holds the restored
// state, then poststart once the tree runs, in that order, each with the
// restored init's pid in its state; runc runs poststop at delete.
func TestRestore_Hooks(t *testing.T) {
	bin := testutil.BuildCtrCr(t)
	b := newBundle(t, "runc", counterScript)
	hostLog := filepath.Join(b.dir, "rootfs", "tmp", "hooks.log")
	b.editSpec(func(s *specs.Spec) {
		h := func(p, log string) []specs.Hook {
			return []specs.Hook{{Path: "/bin/busybox", Args: []string{"busybox", "sh", "-c", "read -r s; echo \"" + p + " $s\" >> " + log}}}
		}
		s.Hooks = &specs.Hooks{
			CreateRuntime: h("createRuntime", hostLog), CreateContainer: h("createContainer", "/tmp/hooks.log"),
			StartContainer: h("startContainer", "/tmp/hooks.log"), Poststart: h("poststart", hostLog), Poststop: h("poststop", hostLog),
		}
		s.Hooks.Poststart = append(s.Hooks.Poststart, specs.Hook{Path: bin, Args: []string{"ctr-cr", "hook", "poststart"}})
		s.Hooks.Prestart = h("prestart", hostLog) //nolint:staticcheck
	})
	b.start()
	b.waitCount(1)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	if err := os.Remove(hostLog); err != nil {
		t.Fatal(err)
	}
	nj := len(journal(t, b))
	if out, err := ctrcr(t, "restore", "-d", b.dir); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	pid := b.pidOf()
	b.rt("kill", b.id, "KILL")
	waitGone(pid, 5*time.Second)
	if out, err := b.rt("delete", b.id); err != nil {
		t.Fatalf("runc delete: %v\n%s", err, out)
	}
	data, err := os.ReadFile(hostLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	want := []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
	if len(lines) != len(want) {
		t.Fatalf("hooks after the checkpoint: %d lines, want %v:\n%s", len(lines), want, data)
	}
	for i, l := range lines {
		phase, st, _ := strings.Cut(l, " ")
		if phase != want[i] {
			t.Errorf("hook %d is %s, want %s", i, phase, want[i])
		}
		if phase != "poststop" && !strings.Contains(st, fmt.Sprintf(`"pid":%d,`, pid)) {
			t.Errorf("hook %s: state %s lacks the restored init's pid %d", phase, st, pid)
		}
	}
	if evs := journal(t, b)[nj:]; len(evs) != 1 || evs[0].Phase != "poststart" || evs[0].Pid != pid || evs[0].Status != "running" {
		t.Errorf("ctr-cr hook poststart recorded %+v, want one poststart of pid %d, running", evs, pid)
	}
	out, err := exec.Command(bin, "hook", "prestart").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "state") {
		t.Errorf("ctr-cr hook without a state: %v %s", err, out)
	}
	if out, err := exec.Command(bin, "hook", "nophase").CombinedOutput(); err == nil || !strings.Contains(string(out), "unknown hook phase") {
		t.Errorf("ctr-cr hook nophase: %v %s", err, out)
	}
}

// TestRestore_SysV: SysV shared memory (contents), a semaphore set (values)
// and a message queue (messages) made inside the container come back with
// the same ids after two checkpoint/restore cycles (checked from inside by
// testdata/sysv.c, built static into the rootfs).
func TestRestore_SysV(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatalf("gcc is needed: %v", err)
	}
	b := newBundle(t, "runc", "/bin/sysv setup")
	src, _ := filepath.Abs("testdata/sysv.c")
	if out, err := exec.Command("gcc", "-static", "-O1", "-o", filepath.Join(b.dir, "rootfs", "bin", "sysv"), src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v\n%s", err, out)
	}
	b.start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(b.dir, "rootfs", "tmp", "sysv.ids")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sysv setup did not run")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for cycle := 0; cycle < 2; cycle++ {
		os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
		if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
		}
		if out, err := ctrcr(t, "restore", "-d", b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
	}
	pid := b.pidOf()
	// the check consumes the messages: run once, after the last restore
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "-i", "-p", "-r", "/bin/sysv", "check").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("sysv check in the restored container: %v: %s", err, out)
	}
}

// TestRestore_Threads: a multi-threaded container init (testdata/threads.c)
// is checkpointed (its pid namespace dies with threads still being
// reaped) and restored twice, with all its threads, and counts on.
func TestRestore_Threads(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatalf("gcc is needed: %v", err)
	}
	b := newBundle(t, "runc", "exec /bin/threads")
	src, _ := filepath.Abs("testdata/threads.c")
	if out, err := exec.Command("gcc", "-static", "-O1", "-pthread", "-o", filepath.Join(b.dir, "rootfs", "bin", "threads"), src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v\n%s", err, out)
	}
	b.start()
	b.waitCount(2)
	for cycle := 0; cycle < 2; cycle++ {
		os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
		if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
		}
		at := b.count()
		if out, err := ctrcr(t, "restore", "-d", b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		pid := b.pidOf()
		if n, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); len(n) != 4 {
			t.Errorf("cycle %d: the restored init has %d threads, want 4", cycle, len(n))
		}
		if c := b.waitCount(at); c > at+50 {
			t.Fatalf("cycle %d: counter jumped from %d to %d", cycle, at, c)
		}
	}
}
