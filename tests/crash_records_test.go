package tests

// ctr-cr killed (SIGKILL through the CTRCR_FAULT hook, internal/fault) in
// the middle of a process dump: the target runs on, or was killed only
// after a complete, synced image exists; what the crash left (partial
// image, network lock, connections in repair mode) goes with `ctr-cr
// cleanup` (internal/oprec). See docs/crash.md.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// ctrcrKilledAt runs ctr-cr with CTRCR_FAULT=point and requires that it
// died by SIGKILL there; it returns ctr-cr's output.
func ctrcrKilledAt(t *testing.T, point string, args ...string) string {
	t.Helper()
	return testutil.CtrCrKilledAt(t, ctrcrTimeout, point, args...)
}

// imageFiles lists the image files (*.img and the inventory being
// written) in dir.
func imageFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".img") || strings.HasSuffix(e.Name(), ".img.tmp") {
			names = append(names, e.Name())
		}
	}
	return names
}

// requireNoRecords requires that no operation record of a dead ctr-cr is
// left (a record of a live one is another operation under way: another
// test binary, a user's ctr-cr on a shared host).
func requireNoRecords(t *testing.T) {
	t.Helper()
	testutil.RequireNoOpRecords(t)
}

// TestCrash_DumpBeforeKill: ctr-cr killed after it wrote the image and
// just before it would kill the target: the image is complete (the kill
// comes only after every file, pages included, is written and synced), the
// target is still alive and untraced, and once the target is gone the
// image restores and passes its check.
func TestCrash_DumpBeforeKill(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without ctr-cr")
	}
	r := startCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
	tids, err := listTids(r.Pid)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	ctrcrKilledAt(t, "dump:before-kill", "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err != nil {
		t.Fatalf("killed just before the target's kill, the image is not complete: %v (files: %v)", err, imageFiles(t, img))
	}
	// the target outlives its tracer (core/ptrace: no thread is left on
	// borrowed code, registers or mask); it is ended here so that the
	// image can be restored with its pids
	if ws, err := waitChild(r.Pid, 300*time.Millisecond); err == nil {
		r.reaped = true
		t.Fatalf("the target ended after its tracer's death: %s", describeStatus(ws))
	}
	killAndReap(r.Pid)
	if out, err := exec.Command(testutil.BuildCtrCr(t), "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err != nil {
		t.Fatalf("cleanup removed the complete image: %v", err)
	}
	requireNoRecords(t)
	// the image is as good as a finished dump's
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
		t.Fatalf("restore of the image the crash left: %v\n%s", err, stderr)
	}
	if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
		t.Fatal(err)
	}
	r.reaped = true // the restored case is not our child
	r.requestGo()
	if err := waitGone(r.Pid, goTimeout); err != nil {
		t.Fatal(err)
	}
	r.requirePass("")
}

// TestCrash_DumpMidWrite: ctr-cr killed while it writes a --leave-running
// dump's image (every file but the inventory written, the tree released
// already): the target runs on untraced;
// `cleanup --dry-run` names the partial image and changes nothing;
// `cleanup` removes it (the files the dump wrote, not the directory's
// other files) and its record; a dump into the same directory then works
// and restores.
func TestCrash_DumpMidWrite(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without ctr-cr")
	}
	r := startCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
	tids, err := listTids(r.Pid)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(img, "notes.txt")
	if err := os.WriteFile(keep, []byte("the user's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctrcrKilledAt(t, "dump:writing", "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running")
	left := imageFiles(t, img)
	if len(left) == 0 {
		t.Fatal("the crash left no partial image: the fault point is not mid-write")
	}
	requireRunningUntraced(t, r.Pid)
	bin := testutil.BuildCtrCr(t)
	out, err := exec.Command(bin, "cleanup", "--dry-run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "would remove the partial image in "+img) {
		t.Fatalf("cleanup --dry-run: %v, want it to name the partial image in %s:\n%s", err, img, out)
	}
	if now := imageFiles(t, img); len(now) != len(left) {
		t.Fatalf("cleanup --dry-run changed the image directory: %v, was %v", now, left)
	}
	out, err = exec.Command(bin, "cleanup").CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	t.Logf("cleanup:\n%s", out)
	if now := imageFiles(t, img); len(now) != 0 {
		t.Fatalf("cleanup left the partial image's files: %v", now)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("cleanup removed a file the dump did not write: %v", err)
	}
	requireNoRecords(t)
	if out, _ := exec.Command(bin, "cleanup").CombinedOutput(); !strings.Contains(string(out), "nothing to clean up") {
		t.Errorf("a second cleanup found more: %s", out)
	}
	// the directory takes a whole dump again
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img); err != nil {
		t.Fatalf("dump after cleanup: %v\n%s", err, stderr)
	}
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ctrcr(t, "restore", "-D", img, "-d"); err != nil {
		t.Fatalf("restore: %v\n%s", err, stderr)
	}
	if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
		t.Fatal(err)
	}
	r.requestGo()
	if err := waitGone(r.Pid, goTimeout); err != nil {
		t.Fatal(err)
	}
	r.requirePass("")
}

// TestCrash_TCPDumpLocked: ctr-cr killed during a --tcp-established dump,
// with the connection locked (nftables): the lock table is still there
// (the crash itself undoes nothing) and the connection silent; `cleanup`
// removes it, after which the process finds its connection carrying data
// both ways, the message queued before included.
func TestCrash_TCPDumpLocked(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without ctr-cr")
	}
	r := startCase(t, Case{Name: "e_inet_est", Src: "e_inet_est.c", NetNS: true})
	img := filepath.Join(t.TempDir(), "img")
	ctrcrKilledAt(t, "dump:netlocked", "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--tcp-established")
	if n := lockTables(t, r.NetNS); len(n) != 1 {
		t.Fatalf("after the crash: lock tables %v, want the dump's one", n)
	}
	requireRunningUntraced(t, r.Pid)
	out, err := exec.Command(testutil.BuildCtrCr(t), "cleanup").CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	t.Logf("cleanup:\n%s", out)
	if n := lockTables(t, r.NetNS); len(n) != 0 {
		t.Fatalf("cleanup left lock tables: %v", n)
	}
	if now := imageFiles(t, img); len(now) != 0 {
		t.Errorf("cleanup left the partial image's files: %v", now)
	}
	requireNoRecords(t)
	finishChild(t, r)
}

// TestConcurrent_DumpDirBusy: a dump into a directory another dump is
// writing (its flock held) is refused as busy, writes nothing there and
// leaves its target running untraced; once the directory is free the dump
// works.
func TestConcurrent_DumpDirBusy(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without ctr-cr")
	}
	r := startCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
	img := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	requireExitCode(t, err, stderr, 1)
	if !strings.Contains(stderr, "busy") {
		t.Errorf("dump into a directory being written: want a busy error:\n%s", stderr)
	}
	if f := imageFiles(t, img); len(f) != 0 {
		t.Errorf("the refused dump wrote %v", f)
	}
	requireRunningUntraced(t, r.Pid)
	syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
	if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running"); err != nil {
		t.Fatalf("dump once the directory is free: %v\n%s", err, stderr)
	}
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}

// cgroupFrozen reports whether the freezer of cgroup dir (v1 or v2)
// reports it frozen.
func cgroupFrozen(t *testing.T, dir string) bool {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(dir, "freezer.state")); err == nil {
		return strings.TrimSpace(string(b)) != "THAWED"
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), "frozen 1")
}

// TestCrash_DumpFrozenCgroup: ctr-cr killed while the cgroup of
// --freeze-cgroup is frozen: it stays frozen (the crash undoes nothing)
// until `ctr-cr cleanup` thaws it; the process then runs on and passes.
func TestCrash_DumpFrozenCgroup(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1: nothing to check without ctr-cr")
	}
	cg := freezerCgroup(t)
	r := startCase(t, Case{Name: "a_tls_threads", Src: "a_tls_threads.c"})
	moveTree(t, cg, r)
	ctrcrKilledAt(t, "dump:frozen", "dump", "-t", strconv.Itoa(r.Pid), "-D", filepath.Join(t.TempDir(), "img"), "--freeze-cgroup", cg)
	if !cgroupFrozen(t, cg) {
		t.Fatal("the cgroup is not frozen after the crash: the fault point is not while frozen")
	}
	out, err := exec.Command(testutil.BuildCtrCr(t), "cleanup").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "thaw cgroup") {
		t.Fatalf("cleanup: %v, want it to thaw %s:\n%s", err, cg, out)
	}
	if cgroupFrozen(t, cg) {
		t.Fatalf("cleanup left %s frozen", cg)
	}
	requireNoRecords(t)
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}
