package bundletests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestRestore_ExecSameAsBefore: a process started with `RUNTIME exec` in a
// restored container gets what it got before the checkpoint (the
// runtime's state said which config the container was created with, and a
// restore creates it from a privileged one): the same capabilities,
// no_new_privs, seccomp mode and filter (a filter that refuses mkdir
// still refuses it), uid and gid. Two cycles.
func TestRestore_ExecSameAsBefore(t *testing.T) { forRuntimes(t, testRestoreExecSameAsBefore) }

func testRestoreExecSameAsBefore(t *testing.T, rt string) {
	b := newBundle(t, rt, counterScript)
	b.editSpec(func(s *specs.Spec) {
		s.Process.NoNewPrivileges = true
		s.Process.User = specs.User{UID: 1000, GID: 1000}
		s.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Architectures: []specs.Arch{specs.ArchX86_64},
			Syscalls: []specs.LinuxSyscall{
				{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno},
				{Names: []string{"personality"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 8, Op: specs.OpEqualTo}}},
			},
		}
	})
	if err := os.Chmod(filepath.Join(b.dir, "rootfs", "tmp"), 0o1777); err != nil { // the counter runs as uid 1000
		t.Fatal(err)
	}
	b.start()
	b.waitCount(1)
	probe := func() string {
		t.Helper()
		out, err := b.rt("exec", b.id, "sh", "-c", `grep -E '^(Uid|Gid|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status; if mkdir /tmp/ctrcr-probe 2>/tmp/ctrcr-probe.err; then rmdir /tmp/ctrcr-probe; echo mkdir allowed; else echo "mkdir refused: $(sed 's/.*: //' /tmp/ctrcr-probe.err)"; fi`)
		if err != nil {
			t.Fatalf("%s exec: %v\n%s", rt, err, out)
		}
		return out
	}
	before := probe()
	if !strings.Contains(before, "mkdir refused: Operation not permitted") || !strings.Contains(before, "Seccomp:\t2") {
		t.Fatalf("before the checkpoint, exec'd process:\n%s", before)
	}
	for cycle := 1; cycle <= 2; cycle++ {
		b.checkpoint(cycle)
		b.restore(cycle)
		if after := probe(); after != before {
			t.Fatalf("cycle %d: exec'd process after restore:\n%s\nbefore the checkpoint:\n%s", cycle, after, before)
		}
	}
}
