package bundletests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestRestore_CeilingRlimits: a checkpoint whose task was given a hard
// RLIMIT_NOFILE above the config's process.rlimits (the default config
// has no CAP_SYS_RESOURCE, so no task could have raised it) is refused at
// restore, naming the pid and the limit, and no container is left; the
// unedited image restores with the limit the container had.
func TestRestore_CeilingRlimits(t *testing.T) { forRuntimes(t, testRestoreCeilingRlimits) }

func testRestoreCeilingRlimits(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	dir := filepath.Join(b.dir, "checkpoint")
	name, pid := firstCore(t, dir)
	restoreFiles := saveFiles(t, dir, name, image.InventoryName)
	edited := false
	editImageEntry(t, dir, name, &imagepb.TaskCore{}, func(m proto.Message) {
		for _, l := range m.(*imagepb.TaskCore).Rlimits {
			if l.Resource == 7 { // RLIMIT_NOFILE
				l.Max = 1 << 20
				edited = true
			}
		}
	})
	if !edited {
		t.Fatalf("%s has no RLIMIT_NOFILE", name)
	}
	b.requireRefused("a task with a raised hard RLIMIT_NOFILE", fmt.Sprintf("pid %d: hard RLIMIT_NOFILE 1048576", pid), "process.rlimits")
	restoreFiles()
	b.restore(1)
	b.waitCount(b.count())
	lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", b.pidOf()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(lim), "\n") {
		if f := strings.Fields(l); strings.HasPrefix(l, "Max open files") && (len(f) < 5 || f[4] != "1024") {
			t.Errorf("restored hard RLIMIT_NOFILE: %q, want 1024 (the config's)", l)
		}
	}
}

// TestRestore_CeilingCgroup: a container with a memory limit and a pids
// limit in its config, whose container.json was edited to lift both, is
// refused at restore, naming the setting and the config's field; the
// unedited image restores with the config's limits.
func TestRestore_CeilingCgroup(t *testing.T) { forRuntimes(t, testRestoreCeilingCgroup) }

func testRestoreCeilingCgroup(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	limit, pids := int64(64<<20), int64(64)
	b.editSpec(func(s *specs.Spec) {
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
	})
	b.start()
	b.waitCount(1)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	path := filepath.Join(b.dir, "checkpoint", "container.json")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ field, want string }{
		{"memory_limit", "cgroup memory limit unlimited"},
		{"pids_max", "cgroup pids.max unlimited"},
	} {
		writeEditedState(t, path, orig, func(st map[string]any) {
			cg, _ := st["cgroup"].(map[string]any)
			set, _ := cg["settings"].(map[string]any)
			if _, ok := set[c.field]; !ok {
				t.Fatalf("container.json has no cgroup settings %s:\n%s", c.field, orig)
			}
			set[c.field] = -1
		})
		b.requireRefused(c.field+" lifted", c.want, "linux.resources")
	}
	writeListed(t, path, orig)
	b.restore(1)
	b.waitCount(b.count())
	cgPath, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", b.pidOf()))
	if err != nil {
		t.Fatal(err)
	}
	if v := memoryLimitOf(t, string(cgPath)); v != limit {
		t.Errorf("restored memory limit %d, want %d", v, limit)
	}
}

// memoryLimitOf reads the memory limit of the cgroup a /proc/PID/cgroup
// text names: v1 memory.limit_in_bytes when a memory controller line is
// there, else v2 memory.max (-1 for "max").
func memoryLimitOf(t *testing.T, procCgroup string) int64 {
	t.Helper()
	file := ""
	for _, l := range strings.Split(strings.TrimSpace(procCgroup), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "memory" {
			file = filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes")
			break
		}
		if parts[0] == "0" && parts[1] == "" {
			file = filepath.Join("/sys/fs/cgroup", parts[2], "memory.max")
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return -1
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s: %q", file, s)
	}
	return v
}

// firstCore names the first core-PID.img of an image directory and its pid.
func firstCore(t *testing.T, dir string) (string, int) {
	t.Helper()
	cores, _ := filepath.Glob(filepath.Join(dir, "core-*.img"))
	if len(cores) == 0 {
		t.Fatalf("no core-*.img in %s", dir)
	}
	name := filepath.Base(cores[0])
	var pid int
	if _, err := fmt.Sscanf(name, "core-%d.img", &pid); err != nil {
		t.Fatal(err)
	}
	return name, pid
}

// TestRestore_CeilingNetSysctl: a container without CAP_NET_ADMIN (the
// default config) cannot have set its network sysctls; a container.json
// edited to let it bind ports below 1024 without CAP_NET_BIND_SERVICE
// (ipv4/ip_unprivileged_port_start 0) is refused at restore, naming the
// sysctl, and no container is left; the unedited image restores with the
// kernel's value.
func TestRestore_CeilingNetSysctl(t *testing.T) { forRuntimes(t, testRestoreCeilingNetSysctl) }

func testRestoreCeilingNetSysctl(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.start()
	b.waitCount(1)
	if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	path := filepath.Join(b.dir, "checkpoint", "container.json")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const key = "ipv4/ip_unprivileged_port_start"
	writeEditedState(t, path, orig, func(st map[string]any) {
		net, _ := st["net"].(map[string]any)
		sc, _ := net["sysctls"].(map[string]any)
		if _, ok := sc[key]; !ok {
			t.Fatalf("container.json has no net sysctl %s:\n%s", key, orig)
		}
		sc[key] = "0"
	})
	b.requireRefused(key+"=0", "sysctl net/"+key, "CAP_NET_ADMIN")
	writeListed(t, path, orig)
	b.restore(1)
	b.waitCount(b.count())
	got, err := exec.Command("nsenter", "-t", strconv.Itoa(b.pidOf()), "-n", "cat", "/proc/sys/net/"+key).CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "1024" {
		t.Errorf("restored %s: %q %v, want 1024", key, got, err)
	}
}
