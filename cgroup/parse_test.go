package cgroup

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    Paths
		wantErr bool
	}{
		{
			name: "hybrid nested memory",
			in: "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/4519\n3:cpuset:/\n" +
				"2:cpuacct:/\n1:cpu:/\n0::/\n",
			want: Paths{V1: map[string]string{"name=systemd": "/", "pids": "/", "memory": "/process_api/4519",
				"cpuset": "/", "cpuacct": "/", "cpu": "/"}, Unified: "/"},
		},
		{
			name: "co-mounted cpu,cpuacct",
			in:   "3:cpu,cpuacct:/docker/abc\n2:freezer:/docker/abc\n",
			want: Paths{V1: map[string]string{"cpu": "/docker/abc", "cpuacct": "/docker/abc", "freezer": "/docker/abc"}},
		},
		{
			name: "v2 only",
			in:   "0::/user.slice/user-0.slice/session-1.scope\n",
			want: Paths{Unified: "/user.slice/user-0.slice/session-1.scope"},
		},
		{
			name: "path with colon",
			in:   "0::/a:b\n",
			want: Paths{Unified: "/a:b"},
		},
		{name: "garbage", in: "nonsense\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProcCgroup(strings.NewReader(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

const hybridMountinfo = `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    []Mount
		wantErr bool
	}{
		{
			name: "hybrid",
			in:   hybridMountinfo,
			want: []Mount{
				{Root: "/", Point: "/sys/fs/cgroup/cpu", Options: []string{"rw", "cpu"}},
				{Root: "/", Point: "/sys/fs/cgroup/cpuacct", Options: []string{"rw", "cpuacct"}},
				{Root: "/", Point: "/sys/fs/cgroup/cpuset", Options: []string{"rw", "cpuset"}},
				{Root: "/", Point: "/sys/fs/cgroup/memory", Options: []string{"rw", "memory"}},
				{Root: "/", Point: "/sys/fs/cgroup/freezer", Options: []string{"rw", "freezer"}},
				{Root: "/", Point: "/sys/fs/cgroup/pids", Options: []string{"rw", "pids"}},
				{Root: "/", Point: "/sys/fs/cgroup/systemd", Options: []string{"rw", "name=systemd"}},
				{Root: "/", Point: "/sys/fs/cgroup/unified", V2: true, Options: []string{"rw"}},
			},
		},
		{
			name: "optional fields, co-mounted, escaped, nested root",
			in: "25 24 0:22 /kubepods /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 master:2 - cgroup cgroup rw,cpu,cpuacct\n" +
				"26 24 0:23 /a\\040b /mnt/cg\\040v2 rw - cgroup2 cgroup2 rw,nsdelegate\n",
			want: []Mount{
				{Root: "/kubepods", Point: "/sys/fs/cgroup/cpu,cpuacct", Options: []string{"rw", "cpu", "cpuacct"}},
				{Root: "/a b", Point: "/mnt/cg v2", V2: true, Options: []string{"rw", "nsdelegate"}},
			},
		},
		{name: "no separator", in: "25 24 0:22 / /x rw shared:9 cgroup cgroup rw\n", wantErr: true},
		{name: "truncated", in: "25 24 0:22 / /x rw -\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestModeOf(t *testing.T) {
	h, _ := ParseMountinfo(strings.NewReader(hybridMountinfo))
	if m := ModeOf(h); m != ModeHybrid {
		t.Errorf("hybrid: %v", m)
	}
	if m := ModeOf(h[:len(h)-1]); m != ModeV1 {
		t.Errorf("v1: %v", m)
	}
	if m := ModeOf(h[len(h)-1:]); m != ModeV2 {
		t.Errorf("v2: %v", m)
	}
	if m := ModeOf(nil); m != ModeNone {
		t.Errorf("none: %v", m)
	}
}

func TestResolve(t *testing.T) {
	mounts := []Mount{
		{Root: "/", Point: "/sys/fs/cgroup/cpu,cpuacct", Options: []string{"rw", "cpu", "cpuacct"}},
		{Root: "/", Point: "/sys/fs/cgroup/memory", Options: []string{"rw", "memory"}},
		{Root: "/ns", Point: "/inner/freezer", Options: []string{"rw", "freezer"}},
		{Root: "/", Point: "/sys/fs/cgroup/systemd", Options: []string{"rw", "name=systemd"}},
		{Root: "/", Point: "/sys/fs/cgroup/unified", V2: true},
	}
	p := Paths{V1: map[string]string{
		"cpu": "/c1", "cpuacct": "/c1", "memory": "/process_api/x/c1",
		"freezer": "/ns/c1", "name=systemd": "/", "net_cls": "/c1",
	}, Unified: "/c1"}
	c, err := resolve(mounts, p, false)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"cpu": "/sys/fs/cgroup/cpu,cpuacct/c1", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/c1",
		"memory": "/sys/fs/cgroup/memory/process_api/x/c1", "freezer": "/inner/freezer/c1",
		"name=systemd": "/sys/fs/cgroup/systemd",
	}
	if !reflect.DeepEqual(c.v1, want) {
		t.Errorf("v1 dirs %v, want %v", c.v1, want)
	}
	if c.unified != "/sys/fs/cgroup/unified/c1" {
		t.Errorf("unified %q", c.unified)
	}
	if _, ok := c.Paths().V1["net_cls"]; ok {
		t.Errorf("unmounted net_cls kept in paths")
	}
	if n := len(c.dirs()); n != 5 { // cpu and cpuacct share one
		t.Errorf("dirs %v", c.dirs())
	}
	if _, err := resolve(mounts, p, true); !errors.Is(err, ErrNoController) {
		t.Errorf("strict with unmounted net_cls: %v", err)
	}
	// Freezer path outside the mount's root.
	if _, ok := dirFor(mounts, false, "freezer", "/other"); ok {
		t.Errorf("path outside mount root resolved")
	}
	if _, ok := dirFor(mounts, false, "freezer", "/nsx"); ok {
		t.Errorf("sibling prefix /nsx resolved under /ns")
	}
}

func TestPathsValidate(t *testing.T) {
	good := []Paths{
		{Unified: "/"},
		{V1: map[string]string{"memory": "/process_api/x/ctr", "name=systemd": "/system.slice/a-b.scope"}},
		{Unified: "/a", UnifiedControllers: []string{"cpu", "memory", "pids"}},
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	bad := []Paths{
		{},
		{Unified: "x"},
		{Unified: "/a/../b"},
		{Unified: "/a/.."},
		{Unified: "/a//b"},
		{Unified: "/a\nb"},
		{V1: map[string]string{"../memory": "/a"}},
		{V1: map[string]string{"memory/x": "/a"}},
		{V1: map[string]string{"": "/a"}},
		{V1: map[string]string{"memory": ""}},
		{V1: map[string]string{"name=": "/"}},
		{V1: map[string]string{"memory": "/"}, UnifiedControllers: []string{"memory"}},
		{Unified: "/a", UnifiedControllers: []string{"mem ory"}},
		{Unified: "/a", UnifiedControllers: []string{"name=systemd"}},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: accepted", p)
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	ok := func(s Settings) Settings { return s }
	good := []Settings{
		{Version: 1},
		ok(Settings{Version: 1, MemoryLimit: ptr[int64](1 << 30), MemorySwap: ptr[int64](-1), CPUShares: ptr[uint64](1024),
			CPUQuota: ptr[int64](-1), CPUPeriod: ptr[uint64](100000), PidsMax: ptr[int64](-1), CpusetCpus: "0-1,3", CpusetMems: "0"}),
		{Version: 2, CPUWeight: ptr[uint64](100), CPUQuota: ptr[int64](50000), PidsMax: ptr[int64](10)},
	}
	for _, s := range good {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := map[string]Settings{
		"version":       {Version: 3},
		"neg memory":    {Version: 1, MemoryLimit: ptr[int64](-2)},
		"huge memory":   {Version: 1, MemoryLimit: ptr[int64](1<<62 + 1)},
		"shares 1":      {Version: 1, CPUShares: ptr[uint64](1)},
		"weight in v1":  {Version: 1, CPUWeight: ptr[uint64](100)},
		"shares in v2":  {Version: 2, CPUShares: ptr[uint64](1024)},
		"weight 0":      {Version: 2, CPUWeight: ptr[uint64](0)},
		"quota small":   {Version: 1, CPUQuota: ptr[int64](10)},
		"period big":    {Version: 1, CPUPeriod: ptr[uint64](2000000)},
		"pids":          {Version: 1, PidsMax: ptr[int64](1 << 40)},
		"cpuset path":   {Version: 1, CpusetCpus: "../../x"},
		"cpuset nl":     {Version: 1, CpusetCpus: "0\n1"},
		"cpuset range":  {Version: 1, CpusetCpus: "3-1"},
		"cpuset empty":  {Version: 1, CpusetMems: "0,,1"},
		"cpuset plus":   {Version: 1, CpusetMems: "+1"},
		"cpuset spaces": {Version: 1, CpusetMems: "0 1"},
	}
	for name, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var nilS *Settings
	if nilS.Validate() == nil {
		t.Errorf("nil accepted")
	}
}

func TestSettingsJSONAndConvert(t *testing.T) {
	s := &Settings{Version: 1, MemoryLimit: ptr[int64](64 << 20), MemorySwap: ptr[int64](128 << 20),
		CPUShares: ptr[uint64](1024), CPUQuota: ptr[int64](50000), CPUPeriod: ptr[uint64](100000),
		PidsMax: ptr[int64](50), CpusetCpus: "0"}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Settings
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, s) {
		t.Fatalf("json round trip: %s -> %+v", b, back)
	}
	v2 := s.as(2)
	if v2.Version != 2 || v2.CPUShares != nil || *v2.CPUWeight != 100 || *v2.MemorySwap != 64<<20 {
		t.Errorf("to v2: %+v weight %v swap %v", v2, *v2.CPUWeight, *v2.MemorySwap)
	}
	if err := v2.Validate(); err != nil {
		t.Error(err)
	}
	v1 := v2.as(1)
	if *v1.MemorySwap != 128<<20 || *v1.CPUShares < 900 || *v1.CPUShares > 1100 {
		t.Errorf("back to v1: swap %v shares %v", *v1.MemorySwap, *v1.CPUShares)
	}
	for _, sh := range []uint64{2, 3, 100, 512, 1024, 4096, 262144} {
		w := sharesToWeight(sh)
		back := weightToShares(w)
		if w < 1 || w > 10000 || back < 2 || back > 262144 || float64(back) < 0.9*float64(sh)-2 || float64(back) > 1.1*float64(sh)+2 {
			t.Errorf("shares %d -> weight %d -> shares %d", sh, w, back)
		}
	}
	r := s.Resources()
	if *r.Memory.Limit != 64<<20 || *r.CPU.Shares != 1024 || r.CPU.Cpus != "0" || *r.Pids.Limit != 50 {
		t.Errorf("resources %+v", r)
	}
}
