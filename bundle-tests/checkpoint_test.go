package bundletests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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
