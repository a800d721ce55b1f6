package mounts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// Run with e.g.
//
//	go test -run '^$' -fuzz '^FuzzApplyMount$' -fuzztime 60s ./mounts

// FuzzApplyTree applies an arbitrary saved tree (JSON, as container.json
// holds it) that passes Validate to a throwaway container: a process in
// new mount, network, IPC, cgroup and pid namespaces (so that the new
// sysfs, mqueue, cgroup2 and proc superblocks are its own) chrooted into a
// root that holds symlinks out of it, all inside this test's own private
// mount namespace on a small tmpfs. Whatever the tree says, Apply must not
// panic, must change nothing beside the root, and must mount nothing in
// the caller's namespace. Root only (it mounts).
func FuzzApplyTree(f *testing.F) {
	testutil.RequiresRoot(f)
	busybox := readBusybox(f)
	seed := func(ms ...Mount) []byte {
		b, err := json.Marshal(&Tree{Version: TreeVersion, Mounts: append([]Mount{{ID: 1, MountPoint: "/", Kind: KindRoot, FSType: "tmpfs", External: "/"}}, ms...)})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(seed(
		Mount{ID: 2, ParentID: 1, MountPoint: "/proc", Kind: KindProc, FSType: "proc", FSOptions: []string{"hidepid=2"}},
		Mount{ID: 3, ParentID: 1, MountPoint: "/dev", Kind: KindTmpfs, FSType: "tmpfs", FSOptions: []string{"size=64k", "mode=755"}},
		Mount{ID: 4, ParentID: 3, MountPoint: "/dev/pts", Kind: KindDevpts, FSType: "devpts", FSOptions: []string{"ptmxmode=666"}},
		Mount{ID: 5, ParentID: 3, MountPoint: "/dev/mqueue", Kind: KindMqueue, FSType: "mqueue"},
		Mount{ID: 6, ParentID: 1, MountPoint: "/sys", Kind: KindSysfs, FSType: "sysfs", Flags: Flags{ReadOnly: true}, SuperReadOnly: true},
		Mount{ID: 7, ParentID: 6, MountPoint: "/sys/fs/cgroup", Kind: KindCgroup2, FSType: "cgroup2", SuperReadOnly: true},
		Mount{ID: 8, ParentID: 1, MountPoint: "/data", Kind: KindBind, FSType: "tmpfs", BindOf: 3, BindPath: "."},
	))
	f.Add(seed(Mount{ID: 2, ParentID: 1, MountPoint: "/esc/x", Kind: KindTmpfs, FSType: "tmpfs"}))
	f.Add(seed(Mount{ID: 2, ParentID: 1, MountPoint: "/abs", Kind: KindTmpfs, FSType: "tmpfs", SuperReadOnly: true}))
	f.Add(seed(Mount{ID: 2, ParentID: 1, MountPoint: "/", Kind: KindTmpfs, FSType: "tmpfs", SuperReadOnly: true, Flags: Flags{ReadOnly: true}}))
	f.Add(seed(Mount{ID: 2, ParentID: 1, MountPoint: "/b", Kind: KindBind, FSType: "tmpfs", BindOf: 1, BindPath: "esc"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tree Tree
		if json.Unmarshal(data, &tree) != nil || tree.Validate() != nil {
			return
		}
		applyInThrowaway(t, busybox, &tree)
	})
}

// FuzzApplyMount applies, in the same throwaway container as
// FuzzApplyTree, a base tree plus one mount built from the fuzzed fields,
// so that most inputs pass Validate and reach Apply.
func FuzzApplyMount(f *testing.F) {
	testutil.RequiresRoot(f)
	busybox := readBusybox(f)
	f.Add("/esc/x", uint8(0), "size=1m", ".", uint8(0))
	f.Add("/abs", uint8(0), "", ".", uint8(0xff))
	f.Add("/b", uint8(7), "", "esc", uint8(1))
	f.Add("/sys", uint8(3), "", ".", uint8(0x80))
	f.Add("/proc", uint8(1), "hidepid=invisible", ".", uint8(0))
	f.Add("/cg", uint8(6), "nsdelegate", ".", uint8(0x80))
	f.Add("/cg1", uint8(5), "name=fuzz", ".", uint8(0))
	kinds := []Kind{KindTmpfs, KindProc, KindDevpts, KindSysfs, KindMqueue, KindCgroup, KindCgroup2, KindBind}
	f.Fuzz(func(t *testing.T, mp string, kind uint8, opts string, bindPath string, flags uint8) {
		k := kinds[int(kind)%len(kinds)]
		m := Mount{ID: 3, ParentID: 1, MountPoint: mp, Kind: k, FSType: string(k),
			Flags:       Flags{ReadOnly: flags&1 != 0, NoSuid: flags&2 != 0, NoDev: flags&4 != 0, NoExec: flags&8 != 0},
			Propagation: Propagation{Shared: flags&16 != 0, Slave: flags&32 != 0, Unbindable: flags&64 != 0}, SuperReadOnly: flags&128 != 0}
		if k == KindBind {
			m.FSType, m.BindOf, m.BindPath = "tmpfs", 2, bindPath
		} else if opts != "" {
			m.FSOptions = strings.Split(opts, ",")
		}
		tree := &Tree{Version: TreeVersion, Mounts: []Mount{
			{ID: 1, MountPoint: "/", Kind: KindRoot, FSType: "tmpfs", External: "/"},
			{ID: 2, ParentID: 1, MountPoint: "/t", Kind: KindTmpfs, FSType: "tmpfs"},
		}}
		for i := range tree.Mounts {
			if tree.Mounts[i].MountPoint == mp {
				return
			}
		}
		if m.MountPoint != "/" && strings.HasPrefix(m.MountPoint, "/t/") {
			m.ParentID = 2
		}
		tree.Mounts = append(tree.Mounts, m)
		if tree.Validate() != nil {
			return
		}
		applyInThrowaway(t, busybox, tree)
	})
}

func readBusybox(f *testing.F) []byte {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		f.Fatalf("needs a static busybox on the PATH: %v", err)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// applyInThrowaway applies tree to a new throwaway container (see
// FuzzApplyTree) and fails t when anything beside its root, or in the
// caller's mounts, changed.
func applyInThrowaway(t *testing.T, busybox []byte, tree *Tree) {
	t.Helper()
	base := t.TempDir()
	err := inFuzzMountNS(base, func(bool) error {
		out := filepath.Join(base, "outside")
		root := filepath.Join(base, "root")
		for _, d := range []string{out, root, filepath.Join(root, "bin")} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(out, "secret"), []byte("s"), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, "bin/busybox"), busybox, 0o755); err != nil {
			return err
		}
		for name, to := range map[string]string{"esc": "../outside", "abs": out} {
			if err := os.Symlink(to, filepath.Join(root, name)); err != nil {
				return err
			}
		}
		before, err := snapshotOutsideOf(base, "root")
		if err != nil {
			return err
		}
		mountsBefore, err := os.ReadFile("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		pid := startContainerNS(t, root, "", "-n", "-i", "-C", "-p")
		if _, err := Apply(pid, Plan{Tree: tree}); err != nil {
			t.Logf("apply: %v", err)
		}
		mountsAfter, err := os.ReadFile("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		if !bytes.Equal(mountsBefore, mountsAfter) {
			return fmt.Errorf("the caller's mounts changed:\n%s\n->\n%s", mountsBefore, mountsAfter)
		}
		after, err := snapshotOutsideOf(base, "root")
		if err != nil {
			return err
		}
		for k, v := range before {
			if after[k] != v {
				return fmt.Errorf("beside the root, %s changed: %q -> %q", k, v, after[k])
			}
		}
		if len(after) != len(before) {
			return fmt.Errorf("beside the root, entries appeared: %v", after)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
