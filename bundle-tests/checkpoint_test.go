package bundletests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCheckpoint_Counter: a busybox counter container under runc or crun is
// checkpointed with --leave-running (it keeps counting, thawed, and the
// image has its process tree, spec.dump, ctr-cr.json and container.json
// with the cgroup's memory and pids limits), then without it (the
// container is gone from the runtime, its processes too).
func TestCheckpoint_Counter(t *testing.T) {
	for _, rtName := range runtimes {
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
			// the shell and its child of the moment (sleep, or caught between
			// fork and exec: sh, or exe while busybox re-executes itself)
			if err != nil || !strings.Contains(out, " sh\n") || !strings.Contains(out, `\_ `) {
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

// TestCheckpoint_NotRunning: a created (not started) container and a
// paused one are refused, naming their status, and stay as they were; once
// started or resumed they checkpoint and restore.
func TestCheckpoint_NotRunning(t *testing.T) { forRuntimes(t, testCheckpointNotRunning) }

func testCheckpointNotRunning(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	create := exec.Command(rt, "create", "--bundle", b.dir, b.id)
	create.Stdin, create.Stdout, create.Stderr = null, null, null
	if err := create.Run(); err != nil {
		t.Fatalf("%s create: %v", rt, err)
	}
	t.Cleanup(func() { b.rt("delete", "--force", b.id) })
	status := func() string {
		st, err := b.state()
		if err != nil {
			t.Fatal(err)
		}
		s, _ := st["status"].(string)
		return s
	}
	out, err := ctrcr(t, "checkpoint", b.id)
	if err == nil || !strings.Contains(out, `"created"`) {
		t.Errorf("checkpoint of a created container: %v\n%s", err, out)
	}
	if s := status(); s != "created" {
		t.Fatalf("after the refused checkpoint the container is %q, want created", s)
	}
	if out, err := b.rt("start", b.id); err != nil {
		t.Fatalf("%s start: %v: %s", rt, err, out)
	}
	b.waitCount(1)
	if out, err := b.rt("pause", b.id); err != nil {
		t.Fatalf("%s pause: %v: %s", rt, err, out)
	}
	out, err = ctrcr(t, "checkpoint", b.id)
	if err == nil || !strings.Contains(out, `"paused"`) {
		t.Errorf("checkpoint of a paused container: %v\n%s", err, out)
	}
	if s := status(); s != "paused" {
		t.Fatalf("after the refused checkpoint the container is %q, want paused", s)
	}
	if out, err := b.rt("resume", b.id); err != nil {
		t.Fatalf("%s resume: %v: %s", rt, err, out)
	}
	// a running container's state is read from the runtime's own files
	img := t.TempDir()
	out, err = ctrcr(t, "checkpoint", "--leave-running", "--image-path", img, "--print-stats", b.id)
	if err != nil || !strings.Contains(out, `"state_from":"state-dir"`) {
		t.Errorf("checkpoint of the running container: %v, want its state read from the state directory:\n%s", err, out)
	}
	// every part of the container's state is timed (container.nsParts)
	for _, st := range statsLines(t, out) {
		parts, _ := st["namespace_ms"].(map[string]any)
		for _, p := range []string{"ipc", "uts", "net", "mounts", "cgroup"} {
			if _, ok := parts[p].(float64); !ok {
				t.Errorf("checkpoint stats: namespace_ms has no %q: %v", p, st["namespace_ms"])
			}
		}
	}
	for cycle := 0; cycle < 2; cycle++ {
		before := b.count()
		b.checkpoint(cycle)
		b.restore(cycle)
		if n := b.waitCount(before + 1); n <= before {
			t.Fatalf("cycle %d: counter %d after restore, was %d", cycle, n, before)
		}
	}
}

// TestCheckpoint_ExecSession: a process started by `RUNTIME exec` whose
// runtime is still attached (its parent is outside the container) is in
// the container's cgroup but not in its init's tree: the checkpoint is
// refused naming it (it would be lost), the container and the session run
// on; once the session ends, the checkpoint and restore go through.
func TestCheckpoint_ExecSession(t *testing.T) { forRuntimes(t, testCheckpointExecSession) }

// sessionPid finds the exec session's "sleep 1000" among the container's
// processes (0: not there yet).
func sessionPid(t *testing.T, b *bundle) int {
	out, _ := b.rt("ps", "--format", "json", b.id)
	var pids []int
	json.Unmarshal([]byte(out), &pids)
	for _, p := range pids {
		if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); string(c) == "sleep\x001000\x00" {
			return p
		}
	}
	return 0
}

func testCheckpointExecSession(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	sess := exec.Command(rt, "exec", b.id, "sleep", "1000")
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = null, null, null
	if err := sess.Start(); err != nil {
		t.Fatalf("%s exec: %v", rt, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait(); close(done) }()
	t.Cleanup(func() { sess.Process.Kill(); <-done })
	// the session's sleep shows in the container (the init's ps)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if sessionPid(t, b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exec session does not show in %s ps", rt)
		}
		time.Sleep(20 * time.Millisecond)
	}
	at := b.count()
	out, err := ctrcr(t, "checkpoint", b.id)
	if err == nil || !strings.Contains(out, "(sleep)") || !strings.Contains(out, "outside its init's tree") {
		t.Fatalf("checkpoint with an exec session: %v, want a refusal naming the sleep\n%s", err, out)
	}
	if c := b.waitCount(at + 2); c < at+2 {
		t.Fatalf("the container stopped counting after the refused checkpoint")
	}
	select {
	case err := <-done:
		t.Fatalf("the exec session ended with the refused checkpoint: %v", err)
	default:
	}
	// the refusal names the session's process: end it (killing the
	// runtime's exec would orphan it to a reaper outside the container,
	// still outside the init's tree)
	m := regexp.MustCompile(`(\d+) \(sleep\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no pid in the refusal: %s", out)
	}
	stray, _ := strconv.Atoi(m[1])
	syscall.Kill(stray, syscall.SIGKILL)
	<-done
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint after the session ended: %v\n%s", err, out)
	}
	b.restore(0)
	b.waitCount(at + 3)
}
