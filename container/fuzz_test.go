package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/mounts"
	"github.com/ctr-cr/ctr-cr/nsdump"
	"github.com/ctr-cr/ctr-cr/nsdump/netdev"
)

// Seeds live in testdata/fuzz/<FuzzName>/ as well; run with e.g.
//
//	go test -run '^$' -fuzz '^FuzzStateValidate$' -fuzztime 60s ./container

func ptr[T any](v T) *T { return &v }

// watchdog panics with every goroutine's stack (so that the fuzzer
// records the input as a crasher, with where it was) when the returned
// stop is not called within 5 s.
func watchdog(data []byte) (stop func()) {
	tm := time.AfterFunc(5*time.Second, func() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		panic(fmt.Sprintf("input of %d bytes still running after 5s:\n%s", len(data), buf[:n]))
	})
	return func() { tm.Stop() }
}

// seedState is a container.json with every part filled in, as Checkpoint
// writes it.
func seedState() *State {
	return &State{
		Cgroup: &CgroupState{
			Paths: cgroup.Paths{Unified: "/user.slice/c1", UnifiedControllers: []string{"cpu", "memory", "pids"}},
			Settings: &cgroup.Settings{Version: 2, MemoryLimit: ptr(int64(64 << 20)), MemorySwap: ptr(int64(-1)),
				CPUWeight: ptr(uint64(100)), CPUQuota: ptr(int64(50000)), CPUPeriod: ptr(uint64(100000)), PidsMax: ptr(int64(64)),
				CpusetCpus: "0-1", CpusetMems: "0"},
		},
		UTS: &nsdump.UTS{Hostname: "box", Domainname: "(none)"},
		IPC: &nsdump.IPC{
			Sysctls: nsdump.IPCSysctls{ShmMax: 1 << 30, ShmAll: 1 << 20, ShmMni: 4096, MsgMax: 8192, MsgMnb: 16384, MsgMni: 32000,
				Sem:    [4]int64{32000, 1024000000, 500, 32000},
				Mqueue: &nsdump.MqueueSysctls{QueuesMax: 256, MsgMax: 10, MsgsizeMax: 8192, MsgDefault: 10, MsgsizeDefault: 8192}},
			Shm: []nsdump.ShmSegment{{IPCPerm: nsdump.IPCPerm{ID: 0, Key: 7, Mode: 0o600}, Size: 8192,
				Chunks: []nsdump.ShmChunk{{Offset: 4096, Data: []byte("hello")}}}},
			Sem: []nsdump.SemSet{{IPCPerm: nsdump.IPCPerm{ID: 1, Key: 8, Mode: 0o600}, Values: []uint16{1, 2}}},
			Msg: []nsdump.MsgQueue{{IPCPerm: nsdump.IPCPerm{ID: 2, Mode: 0o600}, Qbytes: 16384,
				Messages: []nsdump.Msg{{Type: 1, Data: []byte("m")}}}},
		},
		Net: &netdev.State{
			Version: netdev.FormatVersion,
			Links: []netdev.Link{
				{Index: 1, Name: "lo", Kind: netdev.KindLoopback, MTU: 65536, Up: true},
				{Index: 2, Name: "eth0", Kind: netdev.KindVeth, MAC: "02:00:00:00:00:01", MTU: 1500, TxQLen: 1000, Up: true,
					Peer: &netdev.VethPeer{Index: 9, Name: "vethc1", Where: netdev.PeerOutside, NetnsID: 0, MAC: "02:00:00:00:00:02", MTU: 1500, Master: "br0"}},
			},
			Addrs:   []netdev.Addr{{Link: 2, CIDR: "10.0.0.2/24", Broadcast: "10.0.0.255"}},
			Routes:  []netdev.Route{{Family: 2, Table: 254, Type: 1, Dst: "0.0.0.0/0", Gw: "10.0.0.1", Link: 2, Protocol: 3}},
			Rules:   []netdev.Rule{{Family: 2, Priority: 100, Table: 254, SuppressPrefixlen: -1}},
			Sysctls: map[string]string{"ipv4/ip_forward": "0", "ipv4/conf/eth0/rp_filter": "1"},
		},
		Mounts: &mounts.Tree{Version: mounts.TreeVersion, Mounts: []mounts.Mount{
			{ID: 1, ParentID: 0, MountPoint: "/", Kind: mounts.KindRoot, FSType: "overlay", External: "/"},
			{ID: 2, ParentID: 1, MountPoint: "/proc", Kind: mounts.KindProc, FSType: "proc"},
			{ID: 3, ParentID: 1, MountPoint: "/dev", Kind: mounts.KindTmpfs, FSType: "tmpfs", FSOptions: []string{"size=65536k", "mode=755"}},
			{ID: 4, ParentID: 3, MountPoint: "/dev/shm", Kind: mounts.KindTmpfs, FSType: "tmpfs", FSOptions: []string{"size=64m"}},
			{ID: 5, ParentID: 1, MountPoint: "/data", Kind: mounts.KindExternal, FSType: "ext4", External: "/data"},
			{ID: 6, ParentID: 1, MountPoint: "/data2", Kind: mounts.KindBind, FSType: "tmpfs", BindOf: 4, BindPath: "sub"},
		}},
		TmpfsFiles: map[string]string{"/dev": "tmpfs-0.tar", "/dev/shm": "tmpfs-1.tar"},
	}
}

// FuzzStateValidate decodes arbitrary bytes as container.json and
// validates them as Restore does; what passes must hold the invariants the
// apply code relies on, and must pass again after the round trip through
// the JSON Checkpoint writes.
func FuzzStateValidate(f *testing.F) {
	full, err := json.Marshal(seedState())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"mounts":{"version":1,"mounts":[{"id":1,"mount_point":"/","kind":"root","fstype":"overlay"}]},"tmpfs_files":{"/x":"tmpfs-0.tar"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(data)()
		var s State
		if json.Unmarshal(data, &s) != nil {
			return
		}
		if s.validate() != nil {
			return
		}
		checkStateInvariants(t, &s)
		again, err := json.Marshal(&s)
		if err != nil {
			t.Fatalf("marshal a valid state: %v", err)
		}
		var s2 State
		if err := json.Unmarshal(again, &s2); err != nil {
			t.Fatalf("decode the marshalled state: %v", err)
		}
		if err := s2.validate(); err != nil {
			t.Fatalf("the round trip of a valid state is invalid: %v\n%s", err, again)
		}
	})
}

func TestSeedStateValid(t *testing.T) {
	s := seedState()
	if err := s.validate(); err != nil {
		t.Fatal(err)
	}
	checkStateInvariants(t, s)
	for _, bad := range []func(*State){
		func(s *State) { s.TmpfsFiles["/proc"] = "tmpfs-9.tar" }, // not a tmpfs
		func(s *State) { s.TmpfsFiles["/dev/"] = "tmpfs-9.tar" }, // not clean
		func(s *State) { s.TmpfsFiles["/dev"] = "tmpfs-../x" },   // a path
		func(s *State) { s.Mounts = nil },                        // files without a tree
		func(s *State) { s.TmpfsFiles["/dev"] = "tmpfs-" + strings.Repeat("x", 300) },
	} {
		s := seedState()
		bad(s)
		if err := s.validate(); err == nil {
			t.Errorf("accepted %v", s.TmpfsFiles)
		}
	}
}

// checkStateInvariants checks what the parts' restores (nsparts.go), mounts.Apply,
// netdev.Restore, nsdump.RestoreIPC/RestoreUTS and cgroup Apply take for
// granted in a validated State.
func checkStateInvariants(t *testing.T, s *State) {
	t.Helper()
	cleanAbs := func(what, p string) {
		if !strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.ContainsRune(p, 0) || len(p) > mounts.MaxPathLen {
			t.Fatalf("%s %q: not a clean absolute path", what, p)
		}
		for _, e := range strings.Split(p, "/") {
			if e == ".." {
				t.Fatalf("%s %q holds ..", what, p)
			}
		}
	}
	if tr := s.Mounts; tr != nil {
		if len(tr.Mounts) == 0 || len(tr.Mounts) > mounts.MaxMounts || tr.Mounts[0].MountPoint != "/" || tr.Mounts[0].Kind != mounts.KindRoot {
			t.Fatalf("tree of %d mounts without its root first", len(tr.Mounts))
		}
		byID := map[int]*mounts.Mount{}
		for i := range tr.Mounts {
			m := &tr.Mounts[i]
			cleanAbs("mount point", m.MountPoint)
			if i > 0 {
				p := byID[m.ParentID]
				if p == nil || !(p.MountPoint == "/" || m.MountPoint == p.MountPoint || strings.HasPrefix(m.MountPoint, p.MountPoint+"/")) {
					t.Fatalf("mount %s: parent %d not earlier or not above it", m.MountPoint, m.ParentID)
				}
			}
			switch m.Kind {
			case mounts.KindExternal:
				cleanAbs("external key", m.External)
			case mounts.KindBind:
				src := byID[m.BindOf]
				if src == nil {
					t.Fatalf("mount %s: bind source %d not earlier", m.MountPoint, m.BindOf)
				}
				// Apply opens path.Join(source mount point, BindPath)
				// inside the container's root: it must stay under the
				// source mount
				p := path.Join(src.MountPoint, m.BindPath)
				if !(src.MountPoint == "/" || p == src.MountPoint || strings.HasPrefix(p, src.MountPoint+"/")) {
					t.Fatalf("mount %s: bind path %q leaves its source %s", m.MountPoint, m.BindPath, src.MountPoint)
				}
			}
			if strings.ContainsAny(m.FSType, "\x00/, ") || m.FSType == "" {
				t.Fatalf("mount %s: filesystem type %q", m.MountPoint, m.FSType)
			}
			if len(m.FSOptions) > 64 {
				t.Fatalf("mount %s: %d options", m.MountPoint, len(m.FSOptions))
			}
			for _, o := range m.FSOptions {
				if len(o) > mounts.MaxOptionLen || strings.ContainsAny(o, ",\x00") {
					t.Fatalf("mount %s: option %q", m.MountPoint, o)
				}
				if v, ok := strings.CutPrefix(o, "size="); ok && m.Kind == mounts.KindTmpfs && !strings.HasSuffix(v, "%") {
					checkTmpfsSize(t, v)
				}
			}
			byID[m.ID] = m
		}
	}
	dir := "/image"
	for mp, name := range s.TmpfsFiles {
		cleanAbs("tmpfs mount point", mp)
		if p := filepath.Join(dir, name); filepath.Dir(p) != dir || filepath.Base(p) != name {
			t.Fatalf("tmpfs file %q is not a name in the image directory", name)
		}
	}
	if u := s.UTS; u != nil {
		for _, v := range []string{u.Hostname, u.Domainname} {
			if len(v) > 64 || strings.ContainsRune(v, 0) {
				t.Fatalf("uts name %q", v)
			}
		}
	}
	if ipc := s.IPC; ipc != nil {
		var total uint64
		for _, sh := range ipc.Shm {
			if sh.Size == 0 || sh.Size > nsdump.MaxShmSize {
				t.Fatalf("shm size %d", sh.Size)
			}
			for _, c := range sh.Chunks {
				if c.Offset+uint64(len(c.Data)) > sh.Size || c.Offset+uint64(len(c.Data)) < c.Offset {
					t.Fatalf("shm chunk %d+%d beyond %d", c.Offset, len(c.Data), sh.Size)
				}
				total += uint64(len(c.Data))
			}
		}
		for _, q := range ipc.Msg {
			for _, m := range q.Messages {
				total += uint64(len(m.Data)) + nsdump.MsgOverhead
			}
		}
		for _, sem := range ipc.Sem {
			if len(sem.Values) == 0 || len(sem.Values) > nsdump.MaxSemsPerSet {
				t.Fatalf("%d semaphores", len(sem.Values))
			}
			total += 2 * uint64(len(sem.Values))
		}
		if total > nsdump.MaxIPCData {
			t.Fatalf("ipc contents %d bytes", total)
		}
	}
	if n := s.Net; n != nil {
		for _, l := range n.Links {
			checkIfname(t, l.Name)
			if l.Peer != nil {
				checkIfname(t, l.Peer.Name)
				if l.Peer.Master != "" {
					checkIfname(t, l.Peer.Master)
				}
			}
		}
		// netdev writes each sysctl at /proc/sys/net/KEY
		for k, v := range n.Sysctls {
			p := filepath.Join("/proc/sys/net", k)
			if !strings.HasPrefix(p, "/proc/sys/net/") || p != "/proc/sys/net/"+k {
				t.Fatalf("sysctl %q is written at %s", k, p)
			}
			if strings.ContainsAny(v, "\n\x00") || len(v) > 1024 {
				t.Fatalf("sysctl %q value %q", k, v)
			}
		}
	}
	if c := s.Cgroup; c != nil && c.Settings != nil {
		for _, l := range []string{c.Settings.CpusetCpus, c.Settings.CpusetMems} {
			if strings.Trim(l, "0123456789,-") != "" || len(l) > 4096 {
				t.Fatalf("cpuset list %q", l)
			}
		}
	}
}

func checkIfname(t *testing.T, n string) {
	t.Helper()
	if n == "" || len(n) > 15 || strings.ContainsAny(n, "/\x00 \n") || n == "." || n == ".." {
		t.Fatalf("interface name %q", n)
	}
}

func checkTmpfsSize(t *testing.T, v string) {
	t.Helper()
	mult := uint64(1)
	switch {
	case strings.HasSuffix(v, "k"):
		mult = 1 << 10
	case strings.HasSuffix(v, "m"):
		mult = 1 << 20
	case strings.HasSuffix(v, "g"):
		mult = 1 << 30
	case strings.HasSuffix(v, "t"):
		mult = 1 << 40
	}
	n, err := strconv.ParseUint(strings.TrimRight(v, "kmgt"), 10, 64)
	if err != nil || n > mounts.MaxTmpfsBytes/mult {
		t.Fatalf("tmpfs size=%s", v)
	}
}

// FuzzCompareSpecs compares two arbitrary config.json texts: never a
// panic; a spec is equal to itself; the comparison is symmetric; a change
// of a field outside allowedChanges (hostname) is refused; and two specs it
// takes as equal decode (as the runtime decodes them) to the same spec but
// for the fields allowed to change.
func FuzzCompareSpecs(f *testing.F) {
	base := `{"ociVersion":"1.0.2","process":{"args":["sh"],"env":["A=1"]},"root":{"path":"rootfs"},"hostname":"box",` +
		`"mounts":[{"destination":"/data","source":"/srv/a","type":"bind","options":["rbind"]}],"annotations":{"k":"v"},` +
		`"linux":{"cgroupsPath":"/a","namespaces":[{"type":"network","path":"/run/netns/a"}],"resources":{"memory":{"limit":9007199254740992}}}}`
	f.Add([]byte(base), []byte(strings.Replace(base, "/srv/a", "/srv/b", 1)))
	f.Add([]byte(base), []byte(strings.Replace(base, "9007199254740992", "9007199254740993", 1)))
	f.Add([]byte(base), []byte(strings.Replace(base, `"hostname":"box"`, `"hostname":"box","Hostname":"other"`, 1)))
	f.Add([]byte(`{"a":1}`), []byte(`{"a":1.0}`))
	f.Add([]byte(`[1,2]`), []byte(`{"x":null}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		errAB := CompareSpecs(a, b)
		errBA := CompareSpecs(b, a)
		var tree any
		if json.Unmarshal(a, &tree) == nil {
			if err := CompareSpecs(a, a); err != nil {
				t.Fatalf("a spec differs from itself: %v", err)
			}
			if m, ok := tree.(map[string]any); ok {
				h, _ := m["hostname"].(string)
				m["hostname"] = h + "-changed"
				changed, err := json.Marshal(m)
				if err == nil {
					if err := CompareSpecs(a, changed); err == nil {
						t.Fatalf("a changed hostname was accepted")
					}
				}
			}
		}
		if json.Valid(a) && json.Valid(b) && (errAB == nil) != (errBA == nil) {
			t.Fatalf("not symmetric: %v / %v", errAB, errBA)
		}
		if errAB != nil {
			return
		}
		var sa, sb specs.Spec
		if json.Unmarshal(a, &sa) != nil || json.Unmarshal(b, &sb) != nil {
			return
		}
		clearAllowed(&sa)
		clearAllowed(&sb)
		if !reflect.DeepEqual(sa, sb) {
			ja, _ := json.Marshal(sa)
			jb, _ := json.Marshal(sb)
			t.Fatalf("CompareSpecs took as equal specs that decode differently:\n%s\n%s", ja, jb)
		}
	})
}

// clearAllowed blanks the fields allowedChanges lets differ.
func clearAllowed(s *specs.Spec) {
	s.Annotations, s.Hooks = nil, nil
	if s.Root != nil {
		s.Root.Path = ""
	}
	for i := range s.Mounts {
		s.Mounts[i].Source = ""
	}
	if s.Linux != nil {
		s.Linux.CgroupsPath = ""
		for i := range s.Linux.Namespaces {
			s.Linux.Namespaces[i].Path = ""
		}
	}
}

// FuzzMetadata reads ctr-cr.json as Restore does; what passes names a
// runtime it knows and an id that stays one entry under the runtime's
// state root and cannot be taken for an option.
func FuzzMetadata(f *testing.F) {
	f.Add([]byte(`{"format":1,"id":"c1","runtime":"runc","bundle":"/b","init_pid":42,"checkpointed":"2026-01-01T00:00:00Z","tool_version":"x","left_running":false}`))
	f.Add([]byte(`{"format":1,"id":"../../etc","runtime":"crun","runtime_root":"/run/crun"}`))
	f.Add([]byte(`{"format":1,"id":"--root=/tmp","runtime":"runc"}`))
	f.Add([]byte(`{"format":2,"id":"c","runtime":"runc","created":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Metadata
		if json.Unmarshal(data, &m) != nil || m.validate() != nil {
			return
		}
		if m.Runtime != "runc" && m.Runtime != "crun" {
			t.Fatalf("runtime %q", m.Runtime)
		}
		if strings.HasPrefix(m.ID, "-") || !validID(m.ID) {
			t.Fatalf("id %q", m.ID)
		}
		rt := &Runtime{Name: m.Runtime, Root: m.RuntimeRoot}
		root := rt.stateRoot()
		if root == "" {
			root = "/run/" + rt.Name
		}
		if d := rt.stateDir(m.ID); filepath.Dir(d) != filepath.Clean(root) || filepath.Base(d) != m.ID {
			t.Fatalf("id %q: state directory %s is not an entry of %s", m.ID, d, root)
		}
	})
}

func TestMetadataValidate(t *testing.T) {
	good := Metadata{Format: 1, ID: "c1.x_y+z-2", Runtime: "crun", RuntimeRoot: "state"}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Metadata{
		{Format: 2, ID: "c", Runtime: "runc"},
		{Format: 1, ID: "c", Runtime: "docker"},
		{Format: 1, ID: "", Runtime: "runc"},
		{Format: 1, ID: "..", Runtime: "runc"},
		{Format: 1, ID: "a/b", Runtime: "runc"},
		{Format: 1, ID: "-h", Runtime: "runc"},
		{Format: 1, ID: "c", Runtime: "runc", RuntimeRoot: "/run\x00x"},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// TestImageFilesRegularOnly: the container layer's files are read only as
// regular files: a symlink (to a host file) or a FIFO (which would block
// the restore) is refused at once.
func TestImageFilesRegularOnly(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(t.TempDir(), "secret.tar")
	if err := os.WriteFile(host, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ok"), []byte(`{"format":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var m Metadata
	for _, name := range []string{"link", "fifo"} {
		if err := readJSON(filepath.Join(dir, name), &m); err == nil {
			t.Errorf("%s read", name)
		}
		if f, err := openImageFile(filepath.Join(dir, name)); err == nil {
			f.Close()
			t.Errorf("%s opened", name)
		}
	}
	if err := readJSON(filepath.Join(dir, "ok"), &m); err != nil || m.Format != 1 {
		t.Errorf("regular file: %v %+v", err, m)
	}
}
