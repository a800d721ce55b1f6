package container

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestRuncSeccompForm holds libcontainerSeccomp to what the installed runc
// writes into state.json for the same linux.seccomp: every action but
// notify (which needs a listener), every operator, errno returns, two
// architectures. A new runc that changes its encoding fails here, not in
// a restored container's exec'd processes.
func TestRuncSeccompForm(t *testing.T) {
	testutil.RequiresRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is needed: %v", err)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox is needed: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"rootfs/bin", "rootfs/proc", "rootfs/dev", "rootfs/sys"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", bb, filepath.Join(dir, "rootfs/bin/sh")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if out, err := exec.Command("runc", "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v %s", err, out)
	}
	errno := uint(13)
	dflt := uint(38)
	sc := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &dflt,
		Architectures:   []specs.Arch{specs.ArchX86_64, specs.ArchX86},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &errno},
			{Names: []string{"getpgrp"}, Action: specs.ActLog},
			{Names: []string{"getsid"}, Action: specs.ActTrap},
			{Names: []string{"uselib"}, Action: specs.ActKillThread},
			{Names: []string{"tkill"}, Action: specs.ActKill},
			{Names: []string{"tgkill"}, Action: specs.ActKillProcess},
			{Names: []string{"ptrace"}, Action: specs.ActTrace},
		},
	}
	for i, op := range []specs.LinuxSeccompOperator{specs.OpEqualTo, specs.OpNotEqual, specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpMaskedEqual} {
		sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{Names: []string{[]string{"personality", "setns", "unshare", "kcmp", "acct", "swapon", "swapoff"}[i]},
			Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: uint(i % 3), Value: uint64(8 + i), ValueTwo: uint64(i), Op: op}}})
	}
	// everything the runtime's init needs to reach the exec of the
	// container's process
	sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{Names: []string{"read", "write", "close", "futex", "execve", "exit_group"}, Action: specs.ActAllow})
	var s specs.Spec
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	s.Process.Terminal = false
	s.Process.Args = []string{"/bin/sh"}
	s.Linux.Seccomp = sc
	if b, err = json.Marshal(&s); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := fmt.Sprintf("ctrcr-seccomp-form-%d", os.Getpid())
	create := exec.Command("runc", "--root", root, "create", "--bundle", dir, id)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("runc create: %v %s", err, out)
	}
	defer exec.Command("runc", "--root", root, "delete", "--force", id).Run()
	state, err := os.ReadFile(filepath.Join(root, id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Config struct {
			Seccomp any `json:"seccomp"`
		} `json:"config"`
	}
	if err := json.Unmarshal(state, &got); err != nil {
		t.Fatal(err)
	}
	mine, err := libcontainerSeccomp(sc)
	if err != nil {
		t.Fatal(err)
	}
	var want any
	if err := roundTrip(mine, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Config.Seccomp, want) {
		g, _ := json.Marshal(got.Config.Seccomp)
		w, _ := json.Marshal(want)
		t.Fatalf("runc writes\n%s\nctr-cr writes\n%s", g, w)
	}
}

func TestLibcontainerSeccompRefuses(t *testing.T) {
	for _, sc := range []*specs.LinuxSeccomp{
		{DefaultAction: "SCMP_ACT_BOGUS"},
		{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_LOG"}},
		{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{"x86_64"}},
		{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: "SCMP_ACT_MAYBE"}}},
		{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Op: "SCMP_CMP_ALMOST"}}}}},
	} {
		if _, err := libcontainerSeccomp(sc); err == nil {
			t.Errorf("%+v: converted, want an error", sc)
		}
	}
}
