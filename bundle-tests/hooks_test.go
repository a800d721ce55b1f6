package bundletests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// probeScript records where it runs and with what privileges into the
// file named by its first argument: working directory, ids, capability
// sets, no_new_privs, seccomp, cgroups, and whether / is the host's.
const probeScript = "#!/bin/sh\n" + probeScriptBody

// plantedScript is what the container writes over a hook's path in its own
// rootfs: were it run by the restore with more than the container's own
// privileges, it would leave a mark the host sees.
const plantedScript = `#!/bin/sh
echo planted > /tmp/planted.ran
` + probeScriptBody

const probeScriptBody = `out=$1
{
	echo "cwd $(pwd)"
	if [ -d /usr ]; then echo "root host"; else echo "root container"; fi
	busybox grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status
	busybox sed 's/^/cgroup /' /proc/self/cgroup
} > "$out.tmp" && busybox mv "$out.tmp" "$out"
`

// TestRestore_HooksPrivileges: the createContainer and startContainer
// hooks of a restore run where runc runs them and with exactly the
// privileges runc gives them, compared line by line with what the same
// hooks recorded when the runtime started the container: createContainer
// from its host path, in the rootfs directory, with the runtime's init's
// privileges; startContainer from its path in the container, with the
// container process's capabilities, no_new_privs, seccomp filter and ids,
// in its cgroup. The container overwrites the startContainer hook's file
// in its rootfs and plants a file at the createContainer hook's host path
// inside its rootfs: the planted startContainer hook runs as the container
// would, and the planted createContainer file never runs.
func TestRestore_HooksPrivileges(t *testing.T) { forRuntimes(t, testRestoreHooksPrivileges) }

func testRestoreHooksPrivileges(t *testing.T, rt string) {
	hostDir := t.TempDir()
	hostProbe := filepath.Join(hostDir, "create-probe")
	if err := os.WriteFile(hostProbe, []byte(probeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	// the container plants a file at the createContainer hook's path in
	// its rootfs (which the host's path must never resolve to), and
	// overwrites its startContainer hook with one of its own making
	plantCreate := filepath.Join("/", strings.TrimPrefix(hostProbe, "/"))
	script := fmt.Sprintf("busybox mkdir -p %s && echo '#!/bin/sh' > %s && echo 'echo planted > /tmp/planted-create.ran' >> %s && busybox chmod 755 %s && "+
		"cat /bin/planted > /bin/start-probe && ", filepath.Dir(plantCreate), plantCreate, plantCreate, plantCreate) + counterScript
	b := newBundle(t, rt, script)
	rootfs := filepath.Join(b.dir, "rootfs")
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "start-probe"), []byte(probeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "planted"), []byte(plantedScript), 0o755); err != nil {
		t.Fatal(err)
	}
	b.editSpec(func(s *specs.Spec) {
		s.Hooks = &specs.Hooks{
			CreateContainer: []specs.Hook{{Path: hostProbe, Args: []string{"create-probe", filepath.Join(hostDir, "create.out")}}},
			StartContainer:  []specs.Hook{{Path: "/bin/start-probe", Args: []string{"start-probe", "/tmp/start.out"}}},
		}
		s.Process.Capabilities = &specs.LinuxCapabilities{
			Bounding:  []string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE", "CAP_SETUID", "CAP_SETGID"},
			Effective: []string{"CAP_KILL", "CAP_NET_BIND_SERVICE"},
			Permitted: []string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"},
		}
		s.Process.NoNewPrivileges = true
		s.Process.User.AdditionalGids = []uint32{5, 7}
		s.Process.Cwd = "/tmp"
		s.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"ptrace", "kexec_load"}, Action: specs.ActErrno}},
		}
	})
	b.start()
	b.waitCount(1)
	read := func(path string) string {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			data, err := os.ReadFile(path)
			if err == nil {
				return string(data)
			}
			if time.Now().After(deadline) {
				t.Fatalf("hook output %s: %v", path, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	runtimeCreate := read(filepath.Join(hostDir, "create.out"))
	runtimeStart := read(filepath.Join(rootfs, "tmp", "start.out"))
	for _, want := range []string{"root host", "NoNewPrivs:\t0", "Seccomp:\t0"} {
		if !strings.Contains(runtimeCreate, want) {
			t.Fatalf("%s's createContainer hook: no %q in\n%s", rt, want, runtimeCreate)
		}
	}
	for _, want := range []string{"root container", "cwd /tmp", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(runtimeStart, want) {
			t.Fatalf("%s's startContainer hook: no %q in\n%s", rt, want, runtimeStart)
		}
	}
	for cycle := 0; cycle < 2; cycle++ {
		for _, f := range []string{filepath.Join(hostDir, "create.out"), filepath.Join(rootfs, "tmp", "start.out")} {
			os.Remove(f)
		}
		b.checkpoint(cycle)
		b.restore(cycle)
		if got := read(filepath.Join(hostDir, "create.out")); got != runtimeCreate {
			t.Errorf("cycle %d: the restore's createContainer hook ran as\n%s\nthe runtime's as\n%s", cycle, got, runtimeCreate)
		}
		if got := read(filepath.Join(rootfs, "tmp", "start.out")); got != runtimeStart {
			t.Errorf("cycle %d: the restore's startContainer hook (planted by the container) ran as\n%s\nthe runtime's as\n%s", cycle, got, runtimeStart)
		}
		if _, err := os.Stat(filepath.Join(rootfs, "tmp", "planted.ran")); err != nil {
			t.Errorf("cycle %d: the startContainer hook the container planted did not run: %v", cycle, err)
		}
		if _, err := os.Stat(filepath.Join(rootfs, "tmp", "planted-create.ran")); err == nil {
			t.Fatalf("cycle %d: the file the container planted at the createContainer hook's path ran", cycle)
		}
	}
}
