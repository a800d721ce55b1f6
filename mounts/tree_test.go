package mounts

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
)

// A runc-like container's mountinfo as seen from inside (after pivot_root).
const containerMountinfo = `600 500 0:90 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
601 600 0:91 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
602 600 0:92 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,inode64
603 602 0:93 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
604 602 0:94 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
605 600 0:95 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
606 605 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
607 600 8:1 /var/lib/ctr/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
608 602 0:96 / /dev/shm rw,nosuid,nodev,noexec,relatime shared:40 - tmpfs shm rw,size=65536k
609 601 0:91 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
610 601 0:92 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,inode64
611 600 0:97 / /data rw,noatime - xfs /dev/vdb rw
612 600 0:98 / /run rw,nosuid,nodev unbindable - tmpfs tmpfs rw,size=10240k,uid=1000,gid=1000,nr_inodes=1000,mode=700
613 612 0:98 /sub /run/again rw - tmpfs tmpfs rw,size=10240k,uid=1000,gid=1000,nr_inodes=1000,mode=700
614 602 0:24 /3 /dev/console rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=000
`

func buildTree(t *testing.T, mi string, ext ...string) (*Tree, error) {
	t.Helper()
	infos, err := mountinfo.Parse(strings.NewReader(mi), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return BuildTree(infos, TreeOptions{Externals: ext})
}

func TestBuildTree(t *testing.T) {
	tr, err := buildTree(t, containerMountinfo, "/etc/hosts")
	if err != nil {
		t.Fatalf("BuildTree: %v", err)
	}
	type want struct {
		kind Kind
		opts string
		ext  string
		bind string
	}
	wants := map[string]want{
		"/":              {kind: KindRoot, ext: "/"},
		"/proc":          {kind: KindProc},
		"/dev":           {kind: KindTmpfs, opts: "size=65536k,mode=755,inode64"},
		"/dev/pts":       {kind: KindDevpts, opts: "gid=5,mode=620,ptmxmode=666"},
		"/dev/mqueue":    {kind: KindMqueue},
		"/sys":           {kind: KindSysfs},
		"/sys/fs/cgroup": {kind: KindCgroup2, opts: "nsdelegate,memory_recursiveprot"},
		"/etc/hosts":     {kind: KindExternal, ext: "/etc/hosts"},
		"/dev/shm":       {kind: KindTmpfs, opts: "size=65536k"},
		"/proc/bus":      {kind: KindBind, bind: "601:bus"},
		"/proc/kcore":    {kind: KindBind, bind: "602:null"},
		"/data":          {kind: KindExternal, ext: "/data"},
		"/run":           {kind: KindTmpfs, opts: "size=10240k,uid=1000,gid=1000,nr_inodes=1000,mode=700"},
		"/run/again":     {kind: KindBind, bind: "612:sub"},
		"/dev/console":   {kind: KindExternal, ext: "/dev/console"},
	}
	if len(tr.Mounts) != len(wants) {
		t.Fatalf("%d mounts, want %d", len(tr.Mounts), len(wants))
	}
	pos := map[int]int{}
	for i, m := range tr.Mounts {
		pos[m.ID] = i
		w, ok := wants[m.MountPoint]
		if !ok {
			t.Errorf("unexpected mount %s", m.MountPoint)
			continue
		}
		if m.Kind != w.kind || strings.Join(m.FSOptions, ",") != w.opts || m.External != w.ext {
			t.Errorf("%s: kind %s opts %q ext %q; want %s %q %q", m.MountPoint, m.Kind, strings.Join(m.FSOptions, ","), m.External, w.kind, w.opts, w.ext)
		}
		if w.bind != "" {
			if got := strings.Join([]string{itoa(m.BindOf), m.BindPath}, ":"); got != w.bind {
				t.Errorf("%s: bind %s, want %s", m.MountPoint, got, w.bind)
			}
		}
		if i > 0 {
			if p, ok := pos[m.ParentID]; !ok || p >= i {
				t.Errorf("%s: parent %d not before it", m.MountPoint, m.ParentID)
			}
		}
		if m.Kind == KindBind {
			if _, ok := pos[m.BindOf]; !ok {
				t.Errorf("%s: bind source %d not before it", m.MountPoint, m.BindOf)
			}
		}
	}
	m := tr.Mounts[pos[605]]
	if !m.Flags.ReadOnly || !m.Flags.NoExec || !m.SuperReadOnly || m.Flags.Atime != "relatime" {
		t.Errorf("/sys flags %+v super ro %v", m.Flags, m.SuperReadOnly)
	}
	if p := tr.Mounts[pos[608]].Propagation; !p.Shared || p.PeerGroup != 40 {
		t.Errorf("/dev/shm propagation %+v", p)
	}
	if p := tr.Mounts[pos[612]].Propagation; !p.Unbindable {
		t.Errorf("/run propagation %+v", p)
	}
	if p := tr.Mounts[0].Propagation; !p.Slave || p.MasterID != 1 {
		t.Errorf("/ propagation %+v", p)
	}
	if got := len(tr.Tmpfs()); got != 3 {
		t.Errorf("Tmpfs() = %d mounts, want 3", got)
	}
	// JSON round trip keeps a valid tree.
	b, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	var back Tree
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(); err != nil {
		t.Fatalf("round trip: %v", err)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestBuildTreeOrder(t *testing.T) {
	// Child listed before its parent (possible after mount moves).
	mi := "10 1 0:50 / / rw - ext4 /dev/x rw\n12 11 0:52 / /a/b rw - proc proc rw\n11 10 0:51 / /a rw - tmpfs t rw\n"
	tr, err := buildTree(t, mi)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range tr.Mounts {
		got = append(got, m.MountPoint)
	}
	if strings.Join(got, " ") != "/ /a /a/b" {
		t.Errorf("order %v", got)
	}
}

func TestBuildTreeErrors(t *testing.T) {
	tests := []struct {
		name, mi, want string
		is             error
	}{
		{"ramfs", "10 1 0:50 / / rw - ext4 /dev/x rw\n11 10 0:51 / /mnt/ram rw - ramfs ramfs rw\n", "/mnt/ram (ramfs", ErrUnsupportedFS},
		{"fuse", "10 1 0:50 / / rw - ext4 /dev/x rw\n11 10 0:51 / /f rw - fuse.sshfs host:/ rw\n", "/f (fuse.sshfs", ErrUnsupportedFS},
		{"host tmpfs part", "10 1 0:50 / / rw - ext4 /dev/x rw\n11 10 0:51 /x /shm rw - tmpfs t rw\n", "/shm (tmpfs", ErrUnsupportedFS},
		{"no root", "11 10 0:51 / /a rw - tmpfs t rw\n", "not visible", ErrInvalidTree},
		{"orphan", "10 1 0:50 / / rw - ext4 /dev/x rw\n11 99 0:51 / /a rw - tmpfs t rw\n", "parent 99", ErrInvalidTree},
		{"duplicate id", "10 1 0:50 / / rw - ext4 /dev/x rw\n10 10 0:51 / /a rw - tmpfs t rw\n", "twice", ErrInvalidTree},
		{"absurd tmpfs size", "10 1 0:50 / / rw - ext4 /dev/x rw\n11 10 0:51 / /a rw - tmpfs t rw,size=99999999999t\n", "absurd size", ErrInvalidTree},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := buildTree(t, tc.mi)
			if err == nil || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %v naming %q", err, tc.is, tc.want)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	good := func() *Tree {
		return &Tree{Version: TreeVersion, Mounts: []Mount{
			{ID: 1, MountPoint: "/", Kind: KindRoot, FSType: "ext4", External: "/"},
			{ID: 2, ParentID: 1, MountPoint: "/tmp", Kind: KindTmpfs, FSType: "tmpfs", FSOptions: []string{"size=1m", "mode=1777"}},
			{ID: 3, ParentID: 2, MountPoint: "/tmp/b", Kind: KindBind, FSType: "tmpfs", BindOf: 2, BindPath: "x"},
			{ID: 4, ParentID: 1, MountPoint: "/e", Kind: KindExternal, FSType: "ext4", External: "/e"},
		}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("good tree: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Tree)
	}{
		{"version", func(t *Tree) { t.Version = 9 }},
		{"dotdot mount point", func(t *Tree) { t.Mounts[1].MountPoint = "/tmp/../etc" }},
		{"dotdot clean-looking", func(t *Tree) { t.Mounts[1].MountPoint = "/.." }},
		{"relative", func(t *Tree) { t.Mounts[1].MountPoint = "tmp" }},
		{"nul", func(t *Tree) { t.Mounts[1].MountPoint = "/t\x00" }},
		{"long", func(t *Tree) { t.Mounts[1].MountPoint = "/" + strings.Repeat("a", MaxPathLen) }},
		{"root not first", func(t *Tree) { t.Mounts[0], t.Mounts[1] = t.Mounts[1], t.Mounts[0] }},
		{"parent later", func(t *Tree) { t.Mounts[1].ParentID = 4 }},
		{"not under parent", func(t *Tree) { t.Mounts[2].MountPoint = "/other" }},
		{"bind path escape", func(t *Tree) { t.Mounts[2].BindPath = "../x" }},
		{"bind path abs", func(t *Tree) { t.Mounts[2].BindPath = "/x" }},
		{"bind of unknown", func(t *Tree) { t.Mounts[2].BindOf = 77 }},
		{"external dotdot", func(t *Tree) { t.Mounts[3].External = "/a/../../b" }},
		{"unknown kind", func(t *Tree) { t.Mounts[1].Kind = "ramfs"; t.Mounts[1].FSType = "ramfs" }},
		{"kind/type mismatch", func(t *Tree) { t.Mounts[1].FSType = "proc" }},
		{"absurd size", func(t *Tree) { t.Mounts[1].FSOptions = []string{"size=2000000t"} }},
		{"size junk", func(t *Tree) { t.Mounts[1].FSOptions = []string{"size=1mm"} }},
		{"percent", func(t *Tree) { t.Mounts[1].FSOptions = []string{"size=300%"} }},
		{"mode", func(t *Tree) { t.Mounts[1].FSOptions = []string{"mode=99999"} }},
		{"uid", func(t *Tree) { t.Mounts[1].FSOptions = []string{"uid=-1"} }},
		{"unknown option", func(t *Tree) { t.Mounts[1].FSOptions = []string{"huge_evil=1"} }},
		{"option with comma", func(t *Tree) { t.Mounts[1].FSOptions = []string{"size=1m,uid=0"} }},
		{"release_agent", func(t *Tree) {
			t.Mounts[1].Kind, t.Mounts[1].FSType, t.Mounts[1].FSOptions = KindCgroup, "cgroup", []string{"release_agent=/x"}
		}},
		{"options on external", func(t *Tree) { t.Mounts[3].FSOptions = []string{"size=1m"} }},
		{"atime", func(t *Tree) { t.Mounts[1].Flags.Atime = "sometimes" }},
		{"no mounts", func(t *Tree) { t.Mounts = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := good()
			tc.mod(tr)
			if err := tr.Validate(); err == nil || !errors.Is(err, ErrInvalidTree) {
				t.Fatalf("Validate = %v, want ErrInvalidTree", err)
			}
		})
	}
}
