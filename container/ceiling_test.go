package container

import (
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/mounts"
	"github.com/ctr-cr/ctr-cr/nsdump"
	"github.com/ctr-cr/ctr-cr/nsdump/netdev"
)

const (
	capKill       = 1 << 5
	capSetuid     = 1 << 7
	capNetBind    = 1 << 10
	capSysAdmin   = 1 << 21
	capAuditWrite = 1 << 29
)

func ceilingSpec(nnp, seccomp bool) *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	s := &specs.Spec{Process: &specs.Process{NoNewPrivileges: nnp, Capabilities: &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps}}, Linux: &specs.Linux{}}
	if seccomp {
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
	}
	return s
}

func TestTaskCeiling(t *testing.T) {
	dflt := uint64(capKill | capNetBind | capAuditWrite)
	filter := []*imagepb.SeccompFilter{{Bpf: make([]byte, 8)}}
	creds := func(f func(c *imagepb.Creds)) *imagepb.Creds {
		c := &imagepb.Creds{Uids: make([]uint32, 4), Gids: make([]uint32, 4), CapPrm: dflt, CapEff: dflt, CapBnd: dflt, NoNewPrivs: true}
		if f != nil {
			f(c)
		}
		return c
	}
	tests := []struct {
		name      string
		spec      *specs.Spec
		thread    *imagepb.ThreadCore
		wantError string // "" for none
	}{
		{"as configured", ceilingSpec(true, true), &imagepb.ThreadCore{Tid: 7, Creds: creds(nil), Seccomp: filter}, ""},
		{"fewer caps", ceilingSpec(true, true), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.CapEff, c.CapPrm = 0, capKill }), Seccomp: filter}, ""},
		{"inheritable within bounding", ceilingSpec(true, true), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.CapInh = capKill; c.CapAmb = capKill }), Seccomp: filter}, ""},
		{"effective above", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.CapEff |= capSysAdmin })}, "pid 7: effective capabilities CAP_SYS_ADMIN"},
		{"bounding above", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.CapBnd |= capSetuid | capSysAdmin })}, "pid 7: bounding capabilities CAP_SETUID,CAP_SYS_ADMIN"},
		{"ambient above", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.CapAmb = capSetuid })}, "ambient capabilities CAP_SETUID"},
		{"unknown cap bit", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.CapPrm |= 1 << 60 })}, "permitted capabilities CAP_60"},
		{"thread named", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 8, Creds: creds(func(c *imagepb.Creds) { c.CapInh = capSysAdmin })}, "pid 7 (tid 8): inheritable capabilities CAP_SYS_ADMIN"},
		{"nnp dropped", ceilingSpec(true, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.NoNewPrivs = false })}, "no_new_privs is off"},
		{"nnp not required", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.NoNewPrivs = false })}, ""},
		{"filter missing", ceilingSpec(false, true), &imagepb.ThreadCore{Tid: 7, Creds: creds(nil)}, "no seccomp filter"},
		{"strict mode counts", ceilingSpec(false, true), &imagepb.ThreadCore{Tid: 7, Creds: creds(nil), SeccompStrict: true}, ""},
		{"no creds", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 7}, "no credentials"},
		{"uid changed under nnp", ceilingSpec(true, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.Uids = []uint32{0, 1000, 0, 0} })}, "pid 7: uids [0 1000 0 0]"},
		{"gid changed under nnp", ceilingSpec(true, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.Gids = []uint32{5, 5, 5, 5} })}, "pid 7: gids [5 5 5 5]"},
		{"uid changed without nnp", ceilingSpec(false, false), &imagepb.ThreadCore{Tid: 7, Creds: creds(func(c *imagepb.Creds) { c.Uids = []uint32{0, 1000, 0, 0}; c.NoNewPrivs = false })}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ceilingOf(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			err = c.check(7, tc.thread)
			if tc.wantError == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("got %v, want an error with %q", err, tc.wantError)
			}
		})
	}
}

func TestCeilingOfRefusesUnknownCap(t *testing.T) {
	s := ceilingSpec(false, false)
	s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_FLY")
	if _, err := ceilingOf(s); err == nil || !strings.Contains(err.Error(), "CAP_FLY") {
		t.Fatalf("got %v", err)
	}
}

// runtimeTree is a mount tree as runc makes it from a default config:
// root read-only (when asked), /proc with /proc/sys read-only and
// /proc/kcore, /proc/acpi masked.
func runtimeTree() []mountInfo {
	return []mountInfo{
		{ID: 10, Parent: 1, MountPoint: "/", FSType: "overlay", ReadOnly: true},
		{ID: 11, Parent: 10, MountPoint: "/proc", FSType: "proc"},
		{ID: 12, Parent: 10, MountPoint: "/dev", FSType: "tmpfs"},
		{ID: 13, Parent: 11, MountPoint: "/proc/sys", FSType: "proc", ReadOnly: true},
		{ID: 14, Parent: 11, MountPoint: "/proc/kcore", FSType: "devtmpfs"},
		{ID: 15, Parent: 11, MountPoint: "/proc/acpi", FSType: "tmpfs", ReadOnly: true},
		{ID: 16, Parent: 10, MountPoint: "/data", FSType: "ext4", ReadOnly: true},
	}
}

func mountSpec() *specs.Spec {
	s := ceilingSpec(false, false)
	s.Root = &specs.Root{Path: "rootfs", Readonly: true}
	s.Mounts = []specs.Mount{{Destination: "/proc", Type: "proc"}, {Destination: "/data/", Type: "bind", Source: "/srv", Options: []string{"rbind", "ro"}}}
	s.Linux.ReadonlyPaths = []string{"/proc/sys", "/proc/missing"}
	s.Linux.MaskedPaths = []string{"/proc/kcore", "/proc/acpi", "/proc/nothere"}
	return s
}

func TestMountCeiling(t *testing.T) {
	edit := func(f func(t []mountInfo) []mountInfo) []mountInfo { return f(runtimeTree()) }
	rw := func(id int) func(t []mountInfo) []mountInfo {
		return func(t []mountInfo) []mountInfo {
			for i := range t {
				if t[i].ID == id {
					t[i].ReadOnly = false
				}
			}
			return t
		}
	}
	add := func(m ...mountInfo) func(t []mountInfo) []mountInfo {
		return func(t []mountInfo) []mountInfo { return append(t, m...) }
	}
	tests := []struct {
		name      string
		sysAdmin  bool
		after     []mountInfo
		wantError string
	}{
		{"unchanged", false, runtimeTree(), ""},
		{"tmpfs under /tmp of a read-only root", false, edit(add(mountInfo{ID: 20, Parent: 10, MountPoint: "/tmp", FSType: "tmpfs"})), ""},
		{"read-only mount under /proc/sys", true, edit(add(mountInfo{ID: 20, Parent: 13, MountPoint: "/proc/sys/fs", FSType: "proc", ReadOnly: true})), ""},
		{"/proc/sys remounted rw", false, edit(rw(13)), "mount /proc/sys: read-write"},
		{"root remounted rw", false, edit(rw(10)), "mount /: read-write after container.json's mounts: more privileged than the bundle's config.json allows (root.readonly)"},
		{"ro bind remounted rw", false, edit(rw(16)), "mount /data: read-write after container.json's mounts: more privileged than the bundle's config.json allows (mounts[1] (ro))"},
		{"rw mount over /proc/sys", false, edit(add(mountInfo{ID: 20, Parent: 13, MountPoint: "/proc/sys", FSType: "proc"})), "mount /proc/sys: read-write"},
		{"rw proc over /proc", true, edit(add(mountInfo{ID: 20, Parent: 11, MountPoint: "/proc", FSType: "proc"})), "mount /proc/sys: read-write"},
		{"rw mount under /proc/sys", false, edit(add(mountInfo{ID: 20, Parent: 13, MountPoint: "/proc/sys/kernel", FSType: "proc"})), "mount /proc/sys/kernel: a new mount under /proc/sys"},
		{"mount over a masked file", false, edit(add(mountInfo{ID: 20, Parent: 14, MountPoint: "/proc/kcore", FSType: "proc"})), "mount /proc/kcore: no longer masked"},
		{"masked tmpfs made rw", false, edit(rw(15)), "mount /proc/acpi: no longer masked"},
		{"mount under a masked dir", false, edit(add(mountInfo{ID: 20, Parent: 15, MountPoint: "/proc/acpi/x", FSType: "tmpfs", ReadOnly: true})), "mount /proc/acpi/x: a new mount under /proc/acpi"},
		{"new proc elsewhere", false, edit(add(mountInfo{ID: 20, Parent: 12, MountPoint: "/dev/p", FSType: "proc"})), "mount /dev/p: a new proc mount"},
		{"new sysfs elsewhere", false, edit(add(mountInfo{ID: 20, Parent: 12, MountPoint: "/dev/s", FSType: "sysfs", ReadOnly: true})), "mount /dev/s: a new sysfs mount"},
		{"new proc with CAP_SYS_ADMIN", true, edit(add(mountInfo{ID: 20, Parent: 12, MountPoint: "/dev/p", FSType: "proc"})), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mountSpec()
			if tc.sysAdmin {
				s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
			}
			err := checkMountCeiling(s, runtimeTree(), tc.after)
			if tc.wantError == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantError) || !errors.Is(err, ErrAboveConfig) {
				t.Fatalf("got %v, want an ErrAboveConfig with %q", err, tc.wantError)
			}
		})
	}
}

func TestMountViewVisible(t *testing.T) {
	v := newMountView(append(runtimeTree(),
		mountInfo{ID: 20, Parent: 11, MountPoint: "/proc", FSType: "proc"},
		mountInfo{ID: 21, Parent: 20, MountPoint: "/proc", FSType: "tmpfs"}))
	for p, want := range map[string]int{"/": 10, "/etc/x": 10, "/proc": 21, "/proc/sys": 21, "/data/a/b": 16, "/dev": 12} {
		if got := v.visible(p); got == nil || got.ID != want {
			t.Errorf("visible(%s) = %+v, want id %d", p, got, want)
		}
	}
}

// savedTree is runtimeTree as container.json saves it, changed by edit.
func savedTree(edit func(t *mounts.Tree)) *mounts.Tree {
	t := &mounts.Tree{Version: mounts.TreeVersion}
	for i, m := range runtimeTree() {
		k := mounts.Kind(m.FSType)
		if i == 0 {
			k = mounts.KindRoot
		} else if m.FSType == "ext4" || m.FSType == "devtmpfs" {
			k = mounts.KindExternal
		}
		t.Mounts = append(t.Mounts, mounts.Mount{ID: m.ID, ParentID: m.Parent, MountPoint: m.MountPoint, Kind: k, FSType: m.FSType, Flags: mounts.Flags{ReadOnly: m.ReadOnly}})
	}
	if edit != nil {
		edit(t)
	}
	return t
}

func TestPrecheckMounts(t *testing.T) {
	rw := func(mp string) func(t *mounts.Tree) {
		return func(t *mounts.Tree) {
			for i := range t.Mounts {
				if t.Mounts[i].MountPoint == mp {
					t.Mounts[i].Flags.ReadOnly = false
				}
			}
		}
	}
	add := func(m mounts.Mount) func(t *mounts.Tree) {
		return func(t *mounts.Tree) { m.ID = 99; t.Mounts = append(t.Mounts, m) }
	}
	tests := []struct {
		name      string
		sysAdmin  bool
		edit      func(t *mounts.Tree)
		wantError string
	}{
		{"unchanged", false, nil, ""},
		{"tmpfs on /tmp", false, add(mounts.Mount{ParentID: 10, MountPoint: "/tmp", Kind: mounts.KindTmpfs, FSType: "tmpfs"}), ""},
		{"/proc/sys rw", false, rw("/proc/sys"), "mount /proc/sys: container.json makes it read-write"},
		{"ro bind rw", false, rw("/data"), "mount /data: container.json makes it read-write"},
		{"masked tmpfs rw", false, rw("/proc/acpi"), "mount /proc/acpi: container.json makes it read-write"},
		{"second proc on /proc", true, add(mounts.Mount{ParentID: 11, MountPoint: "/proc", Kind: mounts.KindProc, FSType: "proc"}), "mount /proc: container.json mounts a proc over /proc/sys"},
		{"tmpfs over /proc/kcore", true, add(mounts.Mount{ParentID: 11, MountPoint: "/proc/kcore", Kind: mounts.KindTmpfs, FSType: "tmpfs"}), "over /proc/kcore"},
		{"rw tmpfs under /proc/sys", true, add(mounts.Mount{ParentID: 13, MountPoint: "/proc/sys/kernel", Kind: mounts.KindTmpfs, FSType: "tmpfs"}), "a new mount under /proc/sys"},
		{"ro tmpfs under /proc/sys", true, add(mounts.Mount{ParentID: 13, MountPoint: "/proc/sys/kernel", Kind: mounts.KindTmpfs, FSType: "tmpfs", Flags: mounts.Flags{ReadOnly: true}}), ""},
		{"tmpfs under masked dir", true, add(mounts.Mount{ParentID: 15, MountPoint: "/proc/acpi/x", Kind: mounts.KindTmpfs, FSType: "tmpfs", Flags: mounts.Flags{ReadOnly: true}}), "a new mount under /proc/acpi"},
		{"new proc", false, add(mounts.Mount{ParentID: 12, MountPoint: "/dev/p", Kind: mounts.KindProc, FSType: "proc"}), "mount /dev/p: a new proc mount"},
		{"new proc with CAP_SYS_ADMIN", true, add(mounts.Mount{ParentID: 12, MountPoint: "/dev/p", Kind: mounts.KindProc, FSType: "proc"}), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mountSpec()
			if tc.sysAdmin {
				s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
			}
			err := precheckMounts(s, savedTree(tc.edit), runtimeTree())
			if tc.wantError == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantError) || !errors.Is(err, ErrAboveConfig) {
				t.Fatalf("got %v, want an ErrAboveConfig with %q", err, tc.wantError)
			}
		})
	}
}

func TestTaskCeilingIDs(t *testing.T) {
	s := ceilingSpec(true, false)
	s.Process.User = specs.User{UID: 1000, GID: 100}
	c, err := ceilingOf(s)
	if err != nil || c.uid != 1000 || c.gid != 100 {
		t.Fatalf("no user namespace: uid %d gid %d, %v", c.uid, c.gid, err)
	}
	s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.UserNamespace}}
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 10}}
	if c, _ = ceilingOf(s); c.uid != 101000 {
		t.Fatalf("mapped: uid %d gid %d", c.uid, c.gid)
	}
	if c.gid != -1 { // 100 is outside the gid mapping
		t.Fatalf("unmapped gid: %d", c.gid)
	}
	s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SETUID")
	if c, _ = ceilingOf(s); c.uid != -1 {
		t.Fatalf("with CAP_SETUID: uid %d", c.uid)
	}
}

func TestRlimitCeiling(t *testing.T) {
	saved := ownHardLimit
	ownHardLimit = func(res int) (uint64, error) { return 4096, nil }
	defer func() { ownHardLimit = saved }()
	withResource := ceilingSpec(false, false)
	withResource.Process.Capabilities.Bounding = append(withResource.Process.Capabilities.Bounding, "CAP_SYS_RESOURCE")
	listed := ceilingSpec(false, false)
	listed.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 20, Soft: 1024}}
	tests := []struct {
		name      string
		spec      *specs.Spec
		limits    []*imagepb.Rlimit
		wantError string
	}{
		{"as inherited", ceilingSpec(false, false), []*imagepb.Rlimit{{Resource: 7, Cur: 1024, Max: 4096}}, ""},
		{"lowered", ceilingSpec(false, false), []*imagepb.Rlimit{{Resource: 7, Cur: 10, Max: 10}}, ""},
		{"raised", ceilingSpec(false, false), []*imagepb.Rlimit{{Resource: 7, Cur: 1024, Max: 8192}}, "pid 7: hard RLIMIT_NOFILE 8192"},
		{"unlimited", ceilingSpec(false, false), []*imagepb.Rlimit{{Resource: 4, Max: ^uint64(0)}}, "hard RLIMIT_CORE unlimited"},
		{"listed in config", listed, []*imagepb.Rlimit{{Resource: 7, Cur: 1024, Max: 1 << 20}}, ""},
		{"above listed", listed, []*imagepb.Rlimit{{Resource: 7, Cur: 1024, Max: 1<<20 + 1}}, "hard RLIMIT_NOFILE 1048577"},
		{"CAP_SYS_RESOURCE may raise", withResource, []*imagepb.Rlimit{{Resource: 7, Max: 1 << 30}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ceilingOf(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			err = c.checkRlimits(7, tc.limits)
			if tc.wantError == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantError) || !errors.Is(err, ErrAboveConfig) {
				t.Fatalf("error %v, want one containing %q wrapping ErrAboveConfig", err, tc.wantError)
			}
		})
	}
	bad := ceilingSpec(false, false)
	bad.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS", Hard: 1}}
	if _, err := ceilingOf(bad); err == nil || !strings.Contains(err.Error(), "RLIMIT_BOGUS") {
		t.Fatalf("unknown rlimit type: error %v", err)
	}
}

func TestJoinedAndSysctlCeiling(t *testing.T) {
	joined := ceilingSpec(false, false)
	joined.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/var/run/netns/pod"}, {Type: specs.UTSNamespace}}
	if err := checkJoinedState(joined, &State{UTS: &nsdump.UTS{}}); err != nil {
		t.Fatalf("own UTS namespace: %v", err)
	}
	err := checkJoinedState(joined, &State{Net: &netdev.State{}})
	if err == nil || !strings.Contains(err.Error(), "joins an existing network namespace by path") {
		t.Fatalf("network state for a joined netns: %v", err)
	}

	if netSysctlCheck(withCaps(ceilingSpec(false, false), "CAP_NET_ADMIN")) != nil {
		t.Fatal("CAP_NET_ADMIN and a writable /proc/sys: sysctls should not be checked")
	}
	ro := withCaps(ceilingSpec(false, false), "CAP_NET_ADMIN")
	ro.Linux.ReadonlyPaths = []string{"/proc/sys"}
	ro.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
	check := netSysctlCheck(ro)
	if check == nil {
		t.Fatal("read-only /proc/sys: sysctls should be checked")
	}
	if err := check("ipv4/ip_forward", "0", "1"); err != nil {
		t.Fatalf("a value linux.sysctl sets: %v", err)
	}
	if err := check("ipv4/ip_forward", "0", "0 "); err == nil {
		t.Fatal("a value other than linux.sysctl's was allowed")
	}
	err = check("ipv4/ping_group_range", "1 0", "0 2147483647")
	if err == nil || !errors.Is(err, ErrAboveConfig) || !strings.Contains(err.Error(), "linux.sysctl") {
		t.Fatalf("an unlisted sysctl: %v", err)
	}
}

func withCaps(s *specs.Spec, caps ...string) *specs.Spec {
	s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, caps...)
	return s
}
