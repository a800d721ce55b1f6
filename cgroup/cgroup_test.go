package cgroup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

var testSeq atomic.Int32

// childPaths returns the paths of a new, uniquely named cgroup under this
// test process's own cgroup in each v1 controller named and, when unified,
// in the unified hierarchy. It skips when one is not mounted.
func childPaths(t *testing.T, controllers []string, unified bool) Paths {
	t.Helper()
	self, err := ForPid(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sp := self.Paths()
	name := fmt.Sprintf("ctrcr-test-%d-%d", os.Getpid(), testSeq.Add(1))
	p := Paths{}
	for _, c := range controllers {
		base, ok := sp.V1[c]
		if !ok {
			t.Skipf("no v1 %s hierarchy on this host", c)
		}
		if p.V1 == nil {
			p.V1 = map[string]string{}
		}
		p.V1[c] = path.Join(base, name)
	}
	if unified {
		if sp.Unified == "" {
			t.Skip("no unified hierarchy on this host")
		}
		p.Unified = path.Join(sp.Unified, name)
	}
	return p
}

// newTestCgroup creates the cgroup and removes it at cleanup (registered
// before any process cleanup, so it runs after the processes are gone).
func newTestCgroup(t *testing.T, p Paths) *Cgroup {
	t.Helper()
	cg, err := Create(p)
	if err != nil {
		t.Fatalf("create %+v: %v", p, err)
	}
	t.Cleanup(func() {
		if err := cg.Remove(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return cg
}

// startIn starts a process, moves it into cg and kills it (after a thaw) at
// cleanup.
func startIn(t *testing.T, cg *Cgroup, name string, args ...string) int {
	t.Helper()
	return startCmd(t, cg, exec.Command(name, args...))
}

func startCmd(t *testing.T, cg *Cgroup, cmd *exec.Cmd) int {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		if cg != nil {
			_ = cg.Thaw() // a frozen task would not die
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if cg != nil {
		if err := cg.Add(pid); err != nil {
			t.Fatalf("add %d: %v", pid, err)
		}
	}
	return pid
}

// procStat returns the state letter and utime+stime (ticks) of pid.
func procStat(t *testing.T, pid int) (string, uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return f[0], ut + st
}

func TestForPidSelf(t *testing.T) {
	cg, err := ForPid(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mounts, _ := ParseMountinfo(strings.NewReader(string(mi)))
	if cg.Mode() != ModeOf(mounts) || cg.Mode() == ModeNone {
		t.Errorf("mode %v", cg.Mode())
	}
	t.Logf("mode %v, paths %+v", cg.Mode(), cg.Paths())
	for _, d := range cg.dirs() {
		st, err := os.Stat(filepath.Join(d, "cgroup.procs"))
		if err != nil || st.IsDir() {
			t.Errorf("%s: not a cgroup dir: %v", d, err)
		}
	}
	if err := cg.Paths().Validate(); err != nil {
		t.Error(err)
	}
	// Our own pid shows in each of our v1 cgroups (procs lists tgids).
	for c, d := range cg.v1 {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains("\n"+string(b), "\n"+strconv.Itoa(os.Getpid())+"\n") {
			t.Errorf("%s (%s): our pid not in cgroup.procs", c, d)
		}
	}
}

func TestForPidMissing(t *testing.T) {
	_, err := ForPid(1 << 30)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ForPid(missing) = %v", err)
	}
}

// checkFreeze runs a busy loop in cg, freezes, verifies it stops using CPU,
// thaws, verifies it runs again.
func checkFreeze(t *testing.T, cg *Cgroup) {
	pid := startIn(t, cg, "/bin/sh", "-c", "while :; do :; done")
	time.Sleep(100 * time.Millisecond)
	if fr, err := cg.Frozen(); err != nil || fr {
		t.Fatalf("Frozen before freeze = %v, %v", fr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := cg.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("freeze took %v", time.Since(start))
	if fr, err := cg.Frozen(); err != nil || !fr {
		t.Fatalf("Frozen after freeze = %v, %v", fr, err)
	}
	state, c0 := procStat(t, pid)
	time.Sleep(300 * time.Millisecond)
	_, c1 := procStat(t, pid)
	t.Logf("frozen: /proc/%d/stat state %s, cpu ticks %d -> %d in 300ms", pid, state, c0, c1)
	if c1 != c0 {
		t.Errorf("busy loop ran while frozen: %d -> %d ticks", c0, c1)
	}
	if state == "R" {
		t.Errorf("frozen task in state R")
	}
	// Freeze is idempotent.
	if err := cg.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := cg.Thaw(); err != nil {
		t.Fatal(err)
	}
	t.Logf("thaw took %v", time.Since(start))
	if fr, err := cg.Frozen(); err != nil || fr {
		t.Fatalf("Frozen after thaw = %v, %v", fr, err)
	}
	time.Sleep(300 * time.Millisecond)
	state, c2 := procStat(t, pid)
	t.Logf("thawed: state %s, cpu ticks %d -> %d in 300ms", state, c1, c2)
	if c2 <= c1 {
		t.Errorf("busy loop did not run after thaw")
	}
	if err := cg.Thaw(); err != nil { // idempotent
		t.Fatal(err)
	}
}

func TestFreezeV1(t *testing.T) {
	testutil.RequiresRoot(t)
	p := childPaths(t, []string{"freezer"}, false)
	cg := newTestCgroup(t, p)
	checkFreeze(t, cg)
}

// A Freeze whose context is already cancelled either froze at once or
// returns the context's error with the cgroup thawed again.
func TestFreezeCancelledThaws(t *testing.T) {
	testutil.RequiresRoot(t)
	cg := newTestCgroup(t, childPaths(t, []string{"freezer"}, false))
	for i := 0; i < 4; i++ {
		startIn(t, cg, "/bin/sh", "-c", "while :; do :; done")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	failed := 0
	for i := 0; i < 20; i++ {
		err := cg.Freeze(ctx)
		fr, ferr := cg.Frozen()
		if ferr != nil {
			t.Fatal(ferr)
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) || fr {
				t.Fatalf("failed freeze: %v, frozen %v", err, fr)
			}
			failed++
		} else if !fr {
			t.Fatal("Freeze returned nil but not frozen")
		}
		if err := cg.Thaw(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d/20 freezes with a cancelled context failed (and thawed)", failed)
}

func TestFreezeV2(t *testing.T) {
	testutil.RequiresRoot(t)
	p := childPaths(t, nil, true)
	cg := newTestCgroup(t, p)
	if _, v1, _ := cg.freezer(); v1 {
		t.Fatal("unified-only cgroup uses the v1 freezer")
	}
	checkFreeze(t, cg)
}

func TestFreezePrefersV1(t *testing.T) {
	testutil.RequiresRoot(t)
	p := childPaths(t, []string{"freezer"}, true)
	cg := newTestCgroup(t, p)
	dir, v1, err := cg.freezer()
	if err != nil || !v1 || dir != cg.Dir("freezer") {
		t.Fatalf("freezer() = %s %v %v", dir, v1, err)
	}
	pid := startIn(t, cg, "sleep", "60")
	// The process is in both; ForPid finds both and freezes via v1.
	got, err := ForPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got.Paths().V1["freezer"] != p.V1["freezer"] || got.Paths().Unified != p.Unified {
		t.Fatalf("ForPid(child) paths %+v, want %+v", got.Paths(), p)
	}
	if err := got.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer got.Thaw()
	if s, _ := readString(cg.Dir("freezer"), "freezer.state"); s != "FROZEN" {
		t.Errorf("v1 freezer.state %q", s)
	}
	if s, _ := readString(cg.Dir(""), "cgroup.freeze"); s != "0" {
		t.Errorf("v2 cgroup.freeze %q, want untouched 0", s)
	}
	if err := got.Thaw(); err != nil {
		t.Fatal(err)
	}
}

func TestSettingsV1RoundTrip(t *testing.T) {
	testutil.RequiresRoot(t)
	ctrls := []string{"memory", "cpu", "pids", "cpuset"}
	cg := newTestCgroup(t, childPaths(t, ctrls, false))
	// A new cpuset cgroup got its parent's cpus/mems, so a task can join.
	pid := startIn(t, cg, "sleep", "60")
	got0, err := ForPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrls {
		// memory is nested under this test's own memory cgroup.
		if got0.Dir(c) != cg.Dir(c) || cg.Dir(c) == "" {
			t.Errorf("%s: child in %s, want %s", c, got0.Dir(c), cg.Dir(c))
		}
	}
	t.Logf("child memory dir %s", got0.Dir("memory"))
	def, err := cg.ReadSettings()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(def)
	t.Logf("defaults: %s", b)
	if def.Version != 1 || *def.MemoryLimit != -1 || *def.PidsMax != -1 || *def.CPUQuota != -1 || def.CpusetCpus == "" {
		t.Errorf("unexpected defaults %s", b)
	}
	want := &Settings{Version: 1,
		MemoryLimit: ptr[int64](64 << 20), MemoryReservation: ptr[int64](32 << 20),
		CPUShares: ptr[uint64](512), CPUQuota: ptr[int64](50000), CPUPeriod: ptr[uint64](200000),
		PidsMax: ptr[int64](50), CpusetCpus: "0", CpusetMems: "0"}
	if _, err := os.Stat(filepath.Join(cg.Dir("memory"), "memory.memsw.limit_in_bytes")); err == nil {
		want.MemorySwap = ptr[int64](128 << 20)
	}
	if err := cg.Apply(want); err != nil {
		t.Fatal(err)
	}
	got, err := cg.ReadSettings()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("read back %s\nwant       %s", g, w)
	}
	// Raise the limit above the current memsw (memsw must go first).
	if want.MemorySwap != nil {
		up := &Settings{Version: 1, MemoryLimit: ptr[int64](256 << 20), MemorySwap: ptr[int64](512 << 20)}
		if err := cg.Apply(up); err != nil {
			t.Fatalf("raise limit above memsw: %v", err)
		}
		down := &Settings{Version: 1, MemoryLimit: ptr[int64](64 << 20), MemorySwap: ptr[int64](128 << 20)}
		if err := cg.Apply(down); err != nil {
			t.Fatalf("lower memsw below limit: %v", err)
		}
	}

	// Restore path: JSON from the "image", validated, applied to a fresh
	// cgroup, read back equal.
	b, _ = json.Marshal(got)
	var img Settings
	if err := json.Unmarshal(b, &img); err != nil {
		t.Fatal(err)
	}
	cg2 := newTestCgroup(t, childPaths(t, ctrls, false))
	if err := cg2.Apply(&img); err != nil {
		t.Fatal(err)
	}
	got2, err := cg2.ReadSettings()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got2, want) {
		t.Fatalf("restored cgroup settings %+v", got2)
	}

	// Back to "no limit".
	unl := &Settings{Version: 1, MemorySwap: ptr[int64](-1), MemoryLimit: ptr[int64](-1), CPUQuota: ptr[int64](-1), PidsMax: ptr[int64](-1)}
	if want.MemorySwap == nil {
		unl.MemorySwap = nil
	}
	if err := cg2.Apply(unl); err != nil {
		t.Fatal(err)
	}
	got3, _ := cg2.ReadSettings()
	if *got3.MemoryLimit != -1 || *got3.CPUQuota != -1 || *got3.PidsMax != -1 {
		t.Errorf("unlimited read back %+v", got3)
	}

	// A single field changes alone.
	if err := cg.Apply(&Settings{Version: 1, PidsMax: ptr[int64](1)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := cg.ReadSettings(); *got.PidsMax != 1 {
		t.Errorf("pids.max %d", *got.PidsMax)
	}
}

func TestApplyErrors(t *testing.T) {
	testutil.RequiresRoot(t)
	cg := newTestCgroup(t, childPaths(t, []string{"pids"}, false))
	before, err := cg.ReadSettings()
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Settings{
		"bad cpuset":  {Version: 1, CpusetCpus: "../../etc"},
		"bad pids":    {Version: 1, PidsMax: ptr[int64](-5)},
		"bad version": {Version: 7},
		"nil":         nil,
	} {
		if err := cg.Apply(s); err == nil {
			t.Errorf("%s: applied", name)
		}
	}
	// No memory hierarchy in this cgroup.
	if err := cg.Apply(&Settings{Version: 1, MemoryLimit: ptr[int64](1 << 30)}); !errors.Is(err, ErrNoController) {
		t.Errorf("memory limit without memory cgroup: %v", err)
	}
	after, _ := cg.ReadSettings()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("failed applies changed settings: %+v -> %+v", before, after)
	}
	// A value the kernel refuses: the error names the file and directory.
	cs := newTestCgroup(t, childPaths(t, []string{"cpuset"}, false))
	err = cs.Apply(&Settings{Version: 1, CpusetCpus: "4000"})
	if err == nil || !strings.Contains(err.Error(), cs.Dir("cpuset")) {
		t.Errorf("cpuset 4000: %v", err)
	}
	t.Logf("kernel refusal: %v", err)
}

func TestV2Settings(t *testing.T) {
	testutil.RequiresRoot(t)
	cg := newTestCgroup(t, childPaths(t, nil, true))
	s, err := cg.ReadSettings()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	t.Logf("v2 settings: %s", b)
	if s.Version != 2 {
		t.Errorf("version %d", s.Version)
	}
	want := &Settings{Version: 2, PidsMax: ptr[int64](20), CPUWeight: ptr[uint64](50)}
	err = cg.Apply(want)
	if _, serr := os.Stat(filepath.Join(cg.Dir(""), "pids.max")); serr != nil {
		// Controller not enabled in the parent's subtree_control (the
		// hybrid case here): a clear error, not a silent drop.
		if !errors.Is(err, ErrNoController) {
			t.Fatalf("apply without v2 controllers: %v", err)
		}
		t.Logf("no v2 pids controller: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := cg.ReadSettings()
	if err != nil {
		t.Fatal(err)
	}
	if *got.PidsMax != 20 {
		t.Errorf("pids.max %v", *got.PidsMax)
	}
}

func TestCreateRemove(t *testing.T) {
	testutil.RequiresRoot(t)
	p := childPaths(t, []string{"freezer", "memory", "pids"}, true)
	cg := newTestCgroup(t, p)
	for _, d := range cg.dirs() {
		if _, err := os.Stat(d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Create(p); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create twice: %v", err)
	}
	o, err := Open(p)
	if err != nil || !reflect.DeepEqual(o.Paths(), p) {
		t.Fatalf("Open: %+v %v", o, err)
	}
	// Nested children are removed leaves first.
	for _, d := range []string{"a", "a/b", "c"} {
		if err := os.Mkdir(filepath.Join(cg.Dir("freezer"), d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A process in the cgroup: Remove refuses with the pid, removes
	// nothing that holds it.
	cmdCg := newTestCgroup(t, childPaths(t, []string{"freezer", "pids"}, false))
	pid := startIn(t, cmdCg, "sleep", "60")
	err = cmdCg.Remove()
	if !errors.Is(err, ErrHasProcesses) || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
		t.Fatalf("remove with process: %v", err)
	}
	t.Logf("remove with process: %v", err)
	if ps, err := cmdCg.Procs(); err != nil || len(ps) != 1 || ps[0] != pid {
		t.Fatalf("procs %v %v", ps, err)
	}

	if err := cg.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range cg.dirs() {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there: %v", d, err)
		}
	}
	if err := cg.Remove(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := Open(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open removed: %v", err)
	}
	if err := cg.Freeze(context.Background()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Freeze removed: %v", err)
	}
	if err := cg.Thaw(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Thaw removed: %v", err)
	}
	if _, err := cg.ReadSettings(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadSettings removed: %v", err)
	}
	if err := cg.Add(os.Getpid()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Add to removed: %v", err)
	}
	// Remove never removes a hierarchy root nor our own cgroup's ancestors.
	self, _ := ForPid(os.Getpid())
	root := &Cgroup{mode: self.mode, paths: Paths{V1: map[string]string{"freezer": "/"}}, v1: map[string]string{"freezer": self.v1["freezer"]}}
	if self.paths.V1["freezer"] == "/" {
		if err := root.Remove(); err != nil {
			t.Errorf("remove root: %v", err)
		}
		if _, err := os.Stat(self.v1["freezer"]); err != nil {
			t.Errorf("root gone: %v", err)
		}
	}
}

func TestCreateBadPaths(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, p := range []Paths{
		{Unified: "/../etc"},
		{V1: map[string]string{"freezer": "relative"}},
		{V1: map[string]string{"nosuchctrl": "/ctrcr-test-x"}},
	} {
		if cg, err := Create(p); err == nil {
			cg.Remove()
			t.Errorf("Create(%+v) succeeded", p)
		} else {
			t.Logf("Create(%+v): %v", p, err)
		}
	}
}

func TestKill(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, tc := range []struct {
		name     string
		v1       []string
		unified  bool
		freezeIt bool
	}{
		{"v1", []string{"freezer"}, false, false},
		{"v1 frozen", []string{"freezer"}, false, true},
		{"v2", nil, true, false},
		{"v2 frozen", nil, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cg := newTestCgroup(t, childPaths(t, tc.v1, tc.unified))
			var cmds []*exec.Cmd
			for i := 0; i < 3; i++ {
				cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
				startCmd(t, cg, cmd)
				cmds = append(cmds, cmd)
			}
			if tc.freezeIt {
				if err := cg.Freeze(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			if err := cg.Kill(); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range cmds {
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				select {
				case err := <-done:
					if !strings.Contains(fmt.Sprint(err), "killed") {
						t.Errorf("pid %d: %v", cmd.Process.Pid, err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("pid %d not killed", cmd.Process.Pid)
				}
			}
			t.Logf("killed and reaped 3 busy loops in %v", time.Since(start))
			if fr, err := cg.Frozen(); err != nil || fr {
				t.Errorf("frozen after kill: %v %v", fr, err)
			}
		})
	}
}

func TestCreateUnifiedControllers(t *testing.T) {
	testutil.RequiresRoot(t)
	p := childPaths(t, []string{"freezer"}, true)
	// A controller no ancestor offers: refused before anything is
	// written to an ancestor, and nothing is left behind.
	bad := p
	bad.UnifiedControllers = []string{"nosuchctrl"}
	if cg, err := Create(bad); !errors.Is(err, ErrNoController) {
		if cg != nil {
			cg.Remove()
		}
		t.Fatalf("Create with unoffered controller: %v", err)
	} else {
		t.Logf("unoffered controller: %v", err)
	}
	cg := newTestCgroup(t, p) // same paths: the failed Create left nothing
	want, _ := readString(cg.Dir(""), "cgroup.controllers")
	pid := startIn(t, cg, "sleep", "60")
	got, err := ForPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Paths().UnifiedControllers, " ") != want {
		t.Errorf("ForPid controllers %q, cgroup.controllers %q", got.Paths().UnifiedControllers, want)
	}
}
