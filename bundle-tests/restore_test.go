package bundletests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/hooks"
	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestRestore_Counter: the busybox counter container is checkpointed and
// restored from its bundle twice in a row; each time it goes on counting
// from where it was (not from 1), runc reports it running with its init
// and both processes (runc ps), the restored init has the container's own
// capabilities and no_new_privs back (the sandbox was created privileged
// for the restore), the bundle's config.json is the user's, the hostname,
// domainname and the /data tmpfs file are back, and so are memory, pids,
// cpu and cpuset limits set with `RUNTIME update` (not in config.json); a config.json bind
// mount is there, from its new source once config.json moved it; --pid-file
// names the init; then runc kill and delete work.
func TestRestore_Counter(t *testing.T) { forRuntimes(t, testRestoreCounter) }

func testRestoreCounter(t *testing.T, rt string) {
	b := newBundle(t, rt, "echo kept > /data/hello; "+counterScript)
	// a config.json bind mount (an external of the checkpoint): its source
	// moves to another host directory before the second restore
	srcs := [2]string{t.TempDir(), t.TempDir()}
	for i, d := range srcs {
		if err := os.WriteFile(filepath.Join(d, "which"), []byte(fmt.Sprintf("source %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.editSpec(func(s *specs.Spec) {
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}},
			specs.Mount{Destination: "/srv", Type: "bind", Source: srcs[0], Options: []string{"rbind", "ro"}})
	})
	cfg, err := os.ReadFile(filepath.Join(b.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	b.start()
	b.waitCount(3)
	// a domainname set at run time (Debian's runc ignores config.json's)
	if out, err := exec.Command("nsenter", "-t", strconv.Itoa(b.pidOf()), "-u", "sh", "-c", "echo ctrcr.test > /proc/sys/kernel/domainname").CombinedOutput(); err != nil {
		t.Fatalf("setting the domainname: %v: %s", err, out)
	}
	// limits changed at run time (not in config.json) come back from the
	// checkpoint
	res := filepath.Join(t.TempDir(), "resources.json")
	if err := os.WriteFile(res, []byte(`{"memory":{"limit":83886080},"pids":{"limit":77},"cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := b.rt("update", "-r", res, b.id); err != nil {
		t.Fatalf("%s update: %v\n%s", rt, err, out)
	}
	for cycle := 0; cycle < 2; cycle++ {
		at := b.checkpointCounted(cycle)
		if cycle == 1 {
			b.editSpec(func(s *specs.Spec) { s.Mounts[len(s.Mounts)-1].Source = srcs[1] })
			if cfg, err = os.ReadFile(filepath.Join(b.dir, "config.json")); err != nil {
				t.Fatal(err)
			}
		}
		pidFile := filepath.Join(t.TempDir(), "pid")
		if out, err := ctrcr(t, "restore", "-d", "--pid-file", pidFile, b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		pid := b.pidOf()
		if p, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(p)) != strconv.Itoa(pid) {
			t.Errorf("cycle %d: --pid-file holds %q (%v), the init is %d", cycle, p, err, pid)
		}
		if w, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/srv/which", pid)); err != nil || string(w) != fmt.Sprintf("source %d\n", cycle) {
			t.Errorf("cycle %d: the /srv bind mount shows %q (%v), want source %d", cycle, w, err, cycle)
		}
		if d, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-u", "cat", "/proc/sys/kernel/domainname").Output(); err != nil || strings.TrimSpace(string(d)) != "ctrcr.test" {
			t.Errorf("cycle %d: domainname %q %v", cycle, d, err)
		}
		if c := b.waitCount(at); c > at+50 {
			t.Fatalf("cycle %d: counter jumped from %d to %d", cycle, at, c)
		}
		if at < 3 {
			t.Fatalf("cycle %d: counter was %d at the checkpoint", cycle, at)
		}
		out, err := b.rt("ps", b.id)
		if err != nil || !strings.Contains(out, strconv.Itoa(pid)) {
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
		} else if st, err := cg.ReadSettings(); err != nil || st.MemoryLimit == nil || *st.MemoryLimit != 83886080 || st.PidsMax == nil || *st.PidsMax != 77 ||
			st.CPUShares == nil || *st.CPUShares != 512 || st.CPUQuota == nil || *st.CPUQuota != 50000 || st.CPUPeriod == nil || *st.CPUPeriod != 100000 || st.CpusetCpus != "0" {
			t.Errorf("cycle %d: cgroup limits not back (memory 80 MiB, pids 77, cpu shares 512, quota 50000/100000, cpus 0): %+v %v", cycle, st, err)
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
func TestRestore_ChangedConfig(t *testing.T) { forRuntimes(t, testRestoreChangedConfig) }

func testRestoreChangedConfig(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
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
func TestRestore_Copy(t *testing.T) { forRuntimes(t, testRestoreCopy) }

func testRestoreCopy(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	// the original counts on while the copy is restored: each has its own
	// /tmp (a file the original rewrites in the shared rootfs would not be
	// the one in the image)
	b.usePrivateTmp()
	b.start()
	b.waitCount(2)
	if out, err := ctrcr(t, "checkpoint", "--leave-running", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	// the checkpointed container still runs: a restore under its id is
	// refused (ctr-cr finds it in runc's state root) and leaves it alone
	before := b.pidOf()
	if out, err := ctrcr(t, "restore", "-d", b.dir); err == nil || !strings.Contains(out, "exists already") {
		t.Fatalf("restore over the running original: %v\n%s", err, out)
	}
	if b.pidOf() != before {
		t.Fatal("a refused restore changed the original")
	}
	copyID := b.id + "-copy"
	t.Cleanup(func() { b.rt("delete", "--force", copyID) })
	if out, err := ctrcr(t, "restore", "-d", "--id", copyID, b.dir); err != nil {
		t.Fatalf("restore --id: %v\n%s", err, out)
	}
	orig := b.pidOf()
	cp := &bundle{t: t, runtime: b.runtime, dir: b.dir, id: copyID, privateTmp: true}
	copyPid := cp.pidOf()
	cp.waitCount(2) // the copy counts on from the checkpoint's value
	if orig == copyPid {
		t.Fatalf("the copy has the original's pid %d", orig)
	}
	for id, pid := range map[string]int{b.id: orig, copyID: copyPid} {
		if out, err := b.rt("ps", id); err != nil || !strings.Contains(out, strconv.Itoa(pid)) {
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
func TestRestore_Hooks(t *testing.T) { forRuntimes(t, testRestoreHooks) }

func testRestoreHooks(t *testing.T, rt string) {
	bin := testutil.BuildCtrCr(t)
	b := newBundle(t, rt, counterScript)
	hostLog := filepath.Join(b.dir, "rootfs", "tmp", "hooks.log")
	b.editSpec(func(s *specs.Spec) {
		h := func(p, log string) []specs.Hook {
			return []specs.Hook{{Path: "/bin/busybox", Args: []string{"busybox", "sh", "-c", "read -r s; echo \"" + p + " $s\" >> " + log}}}
		}
		s.Hooks = &specs.Hooks{
			CreateRuntime: h("createRuntime", hostLog), CreateContainer: h("createContainer", hostLog),
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
func TestRestore_SysV(t *testing.T) { forRuntimes(t, testRestoreSysV) }

func testRestoreSysV(t *testing.T, rt string) {
	b := newBundle(t, rt, "/bin/sysv setup")
	b.buildStatic("sysv")
	b.start()
	b.waitFile("tmp/sysv.ids")
	for cycle := 0; cycle < 2; cycle++ {
		b.checkpoint(cycle)
		b.restore(cycle)
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
func TestRestore_Threads(t *testing.T) { forRuntimes(t, testRestoreThreads) }

func testRestoreThreads(t *testing.T, rt string) {
	b := newBundle(t, rt, "exec /bin/threads")
	b.buildStatic("threads", "-pthread")
	b.start()
	b.waitCount(2)
	for cycle := 0; cycle < 2; cycle++ {
		at := b.checkpointCounted(cycle)
		b.restore(cycle)
		pid := b.pidOf()
		if n, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); len(n) != 4 {
			t.Errorf("cycle %d: the restored init has %d threads, want 4", cycle, len(n))
		}
		if c := b.waitCount(at); c > at+50 {
			t.Fatalf("cycle %d: counter jumped from %d to %d", cycle, at, c)
		}
	}
}

// TestRestore_MountsMadeInside: mounts the container's own process made at
// run time (not in config.json, so not made again by the runtime) come
// back: a tmpfs with its files and a bind of a directory of it elsewhere,
// twice, with runc and crun.
func TestRestore_MountsMadeInside(t *testing.T) { forRuntimes(t, testRestoreMountsMadeInside) }

func testRestoreMountsMadeInside(t *testing.T, rt string) {
	b := newBundle(t, rt, "mkdir -p /run/made /mnt/view && mount -t tmpfs -o size=1m,mode=0750 made /run/made && "+
		"mkdir /run/made/sub && echo inside > /run/made/sub/f && mount --bind /run/made/sub /mnt/view && "+counterScript)
	b.editSpec(func(s *specs.Spec) {
		c := s.Process.Capabilities
		c.Bounding = append(c.Bounding, "CAP_SYS_ADMIN")
		c.Effective = append(c.Effective, "CAP_SYS_ADMIN")
		c.Permitted = append(c.Permitted, "CAP_SYS_ADMIN")
	})
	b.start()
	b.waitCount(2)
	for cycle := 0; cycle < 2; cycle++ {
		at := b.checkpointCounted(cycle)
		b.restore(cycle)
		pid := b.pidOf()
		b.waitCount(at)
		// seen from inside the restored container
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "-p", "-r", "-w", "sh", "-c",
			"cat /mnt/view/f && echo more > /run/made/sub/g && cat /mnt/view/g && grep -E ' /run/made | /mnt/view ' /proc/self/mountinfo").CombinedOutput()
		if err != nil {
			t.Fatalf("cycle %d: inside the restored container: %v\n%s", cycle, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 4 || lines[0] != "inside" || lines[1] != "more" ||
			!strings.Contains(lines[2], " /run/made ") || !strings.Contains(lines[2], "tmpfs made") || !strings.Contains(lines[2], "mode=750") ||
			!strings.Contains(lines[3], "/sub /mnt/view ") {
			t.Fatalf("cycle %d: mounts in the restored container:\n%s", cycle, out)
		}
	}
}
