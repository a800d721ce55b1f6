package tests

import (
	"errors"
	"fmt"
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

// Crash consistency of dump (issue 12 #11): ctr-cr is SIGKILLed
// (CTRCR_FAULT, internal/fault) at named points of a dump and at the N-th
// step of syscall injection (inject:N), and the target must run on
// unchanged: alive, not traced, every thread's signal mask as before (from
// /proc and checked by the target itself), its floating-point state intact
// (accumulators, rounding mode, bursts of arithmetic in registers: checked
// inside), counting on, its mappings as before but for areas the
// injector and the page mover may leave (anonymous, of their sizes), its
// fds as before but for the mover's pipes above them all.
//
// The sweep takes every stride-th step; CTRCR_CRASH_STRIDE=1 (make stress)
// takes every step.

// areaSize is ptrace.AreaSize: the anonymous mapping a crash may leave.
const areaSize = 0xb000

// moverAreaSize is the page mover's iovec mapping (memory.spliceMapSize),
// which a crash while pages are written may leave too.
const moverAreaSize = 0x21000

type crashTarget struct {
	t       *testing.T
	pid     int
	dir     string
	netns   string
	masks   map[string]string // tid -> SigBlk
	named   map[string]bool   // file-backed and special mappings
	anon    uint64            // bytes of anonymous mappings
	fds     map[int]string    // fd -> what it is (its /proc link)
	crashes int
	// mapsOwn: the target maps and unmaps anonymous memory and makes
	// threads itself (the Go runtime): only its named mappings are
	// compared, and the threads it had
	mapsOwn bool
	// settle is how long the target must live on after a --leave-running
	// sweep, and a tenth of it after each crash (the Go runtime finds a
	// damaged goroutine stack only when the GC next scans it)
	settle time.Duration
	// cleanup: after each crash `ctr-cr cleanup` runs, and then the maps
	// and the fd table must be exactly as at the start (no leftover)
	cleanup bool
	env     []string // for ctr-cr (dump, cleanup)
	cleaned int      // cleanup's actions done
	maps    string   // /proc/PID/maps at the start
}

// startCrashTarget starts crash_target with n extra threads (and a TCP echo
// connection in a fresh network namespace when tcp; catching every signal
// whose default is to ignore it when catch, so that injection cannot end
// runs with a signal stop and parks).
func startCrashTarget(t *testing.T, threads int, tcp, catch bool) *crashTarget {
	testutil.RequiresRoot(t)
	bin := buildCase(t, "crash_target.c", []string{"-lm"})
	dir := t.TempDir()
	args := []string{bin, dir, strconv.Itoa(threads)}
	netns := ""
	if tcp {
		netns = testutil.NewNetns(t)
		if out, err := exec.Command("nsenter", "--net="+netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("lo up: %v %s", err, out)
		}
		args = append(args, "7777")
	} else {
		args = append(args, "0")
	}
	if catch {
		args = append(args, "catch")
	}
	// (plus a spinner thread on CPUs with AVX2)
	return startCrashProc(t, dir, netns, args, threads+1+map[bool]int{true: 2}[tcp])
}

// startCrashProc starts argv (with its work directory dir, in netns) and
// waits for it to be ready, with at least threads threads.
func startCrashProc(t *testing.T, dir, netns string, args []string, threads int) *crashTarget {
	os.Chmod(dir, 0o755)
	ct := &crashTarget{t: t, dir: dir, netns: netns}
	argv := testutil.InNetns(ct.netns, args...)
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = out, out, dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ct.pid = cmd.Process.Pid
	t.Cleanup(func() { killAndReap(ct.pid) })
	if err := waitReady(t, ct.pid, filepath.Join(dir, "out"), 20*time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(args[0]), err, tail(filepath.Join(dir, "out"), 5))
	}
	ct.masks = ct.readMasks()
	if len(ct.masks) < threads {
		t.Fatalf("%s has %d threads, want %d", filepath.Base(args[0]), len(ct.masks), threads)
	}
	ct.named, ct.anon = ct.readMaps()
	ct.maps = ct.rawMaps()
	ct.fds = ct.readFds()
	return ct
}

// rawMaps is /proc/PID/maps as it is.
func (ct *crashTarget) rawMaps() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", ct.pid))
	if err != nil {
		ct.t.Fatalf("maps: %v", err)
	}
	return string(b)
}

// exactlyAsBefore reports how the maps and the fd table differ from the
// start's, with no leftover allowed.
func (ct *crashTarget) exactlyAsBefore() error {
	if now := ct.rawMaps(); now != ct.maps {
		return fmt.Errorf("maps now\n%s\nwere\n%s", now, ct.maps)
	}
	if now := ct.readFds(); fmt.Sprint(now) != fmt.Sprint(ct.fds) {
		return fmt.Errorf("fds now %v, were %v", now, ct.fds)
	}
	return nil
}

// readFds returns the target's fd table: fd -> its /proc/PID/fd link.
func (ct *crashTarget) readFds() map[int]string {
	dir := fmt.Sprintf("/proc/%d/fd", ct.pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		ct.t.Fatalf("fds: %v", err)
	}
	out := map[int]string{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out[n] = l
		}
	}
	return out
}

// fdsUnchanged reports how the fd table differs from the one at the
// start beyond what a crash may leave: every fd as it was, and new ones
// only pipes (the page mover's) numbered above all the program had.
func (ct *crashTarget) fdsUnchanged() error {
	now := ct.readFds()
	top := 0
	for fd, l := range ct.fds {
		top = max(top, fd)
		if now[fd] != l {
			return fmt.Errorf("fd %d is %q, was %q", fd, now[fd], l)
		}
	}
	if ct.mapsOwn {
		return nil // the Go runtime opens fds of its own
	}
	for fd, l := range now {
		if _, ok := ct.fds[fd]; !ok && (fd <= top || !strings.HasPrefix(l, "pipe:")) {
			return fmt.Errorf("new fd %d (%s), the program's highest was %d", fd, l, top)
		}
	}
	return nil
}

// anonLeftOk reports whether extra bytes of anonymous mappings are areas
// of the injector and the page mover, at most one each per crash.
func anonLeftOk(extra uint64, crashes int) bool {
	for m := uint64(0); m <= uint64(crashes); m++ {
		if rest := extra - m*moverAreaSize; m*moverAreaSize <= extra && rest%areaSize == 0 && rest/areaSize <= uint64(crashes) {
			return true
		}
	}
	return false
}

func (ct *crashTarget) readMasks() map[string]string {
	out := map[string]string{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", ct.pid))
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", ct.pid, e.Name()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "SigBlk:"); ok {
				out[e.Name()] = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(l, "TracerPid:"); ok && strings.TrimSpace(v) != "0" {
				out[e.Name()] += " traced by " + strings.TrimSpace(v)
			}
		}
	}
	return out
}

// masksAsBefore reports whether every thread has the signal mask it had
// and no tracer; a target that makes threads of its own (mapsOwn: the Go
// runtime) may have more, untraced.
func (ct *crashTarget) masksAsBefore(now map[string]string) bool {
	if !ct.mapsOwn {
		return fmt.Sprint(now) == fmt.Sprint(ct.masks)
	}
	for tid, m := range ct.masks {
		if now[tid] != m {
			return false
		}
	}
	for _, m := range now {
		if strings.Contains(m, "traced") {
			return false
		}
	}
	return true
}

// readMaps returns the named mappings (as lines) and the total size of the
// anonymous ones.
func (ct *crashTarget) readMaps() (map[string]bool, uint64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", ct.pid))
	if err != nil {
		ct.t.Fatalf("maps: %v", err)
	}
	named := map[string]bool{}
	var anon uint64
	if len(b) == 0 {
		ct.t.Fatalf("target gone (no mappings), state %s, output:\n%s", procState(ct.pid), crashOutput(filepath.Join(ct.dir, "out")))
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 {
			named[l] = true
			continue
		}
		var s, e uint64
		fmt.Sscanf(f[0], "%x-%x", &s, &e)
		anon += e - s
	}
	return named, anon
}

func (ct *crashTarget) count() (total, echo uint64) {
	b, _ := os.ReadFile(filepath.Join(ct.dir, "count"))
	fmt.Sscan(string(b), &total, &echo)
	return
}

// dump runs ctr-cr dump of the target with CTRCR_FAULT=fault; killed
// reports whether the fault point was reached (ctr-cr died of SIGKILL).
func (ct *crashTarget) dump(fault string, extra ...string) (killed bool, stderr string) {
	bin := testutil.BuildCtrCr(ct.t)
	img := filepath.Join(ct.t.TempDir(), "img")
	argv := testutil.InNetns(ct.netns, append([]string{bin, "dump", "-t", strconv.Itoa(ct.pid), "-D", img}, extra...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), append(ct.env, "CTRCR_FAULT="+fault)...)
	var eb strings.Builder
	cmd.Stderr = &eb
	err := cmd.Run()
	os.RemoveAll(img)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, eb.String()
		}
	}
	if err != nil {
		ct.t.Fatalf("dump with CTRCR_FAULT=%s failed: %v\n%s", fault, err, eb.String())
	}
	return false, eb.String()
}

// checkUnchanged checks the target after a crash of ctr-cr at fault.
func (ct *crashTarget) checkUnchanged(fault string) {
	t := ct.t
	t.Helper()
	ct.crashes++
	if ct.netns != "" {
		dropLockTables(t, ct.netns)
	}
	if ct.cleanup {
		// at once: a thread may still be in the injected area
		cmd := exec.Command(testutil.BuildCtrCr(t), "cleanup")
		cmd.Env = append(os.Environ(), ct.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: cleanup: %v\n%s", fault, err, out)
		} else {
			ct.cleaned += strings.Count(string(out), ": done")
		}
	}
	// A thread the crash caught in injected code finishes it, waits out
	// the park (500 ms) and returns by rt_sigreturn.
	deadline := time.Now().Add(5 * time.Second)
	var masks map[string]string
	for {
		if err := syscall.Kill(ct.pid, 0); err != nil {
			t.Fatalf("%s: target gone: %v\n%s", fault, err, crashOutput(filepath.Join(ct.dir, "out")))
		}
		if l := lastLine(filepath.Join(ct.dir, "out")); strings.HasPrefix(l, "FAIL") {
			t.Fatalf("%s: the target reports %s", fault, l)
		}
		masks = ct.readMasks()
		if ct.masksAsBefore(masks) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: thread masks (SigBlk) / tracer now\n%v\nwant\n%v\nstate %s, output:\n%s", fault, masks, ct.masks, procState(ct.pid), head(filepath.Join(ct.dir, "out"), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := procState(ct.pid); st == "t" || st == "T" || st == "Z" {
		t.Fatalf("%s: target in state %s", fault, st)
	}
	time.Sleep(ct.settle / 10)
	c0, e0 := ct.count()
	for {
		time.Sleep(30 * time.Millisecond)
		c1, e1 := ct.count()
		if c1 > c0 && (ct.netns == "" || e1 > e0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the target does not count on (%d %d -> %d %d)\n%s", fault, c0, e0, c1, e1, crashOutput(filepath.Join(ct.dir, "out")))
		}
	}
	named, anon := ct.readMaps()
	for l := range ct.named {
		if !named[l] {
			t.Fatalf("%s: mapping %q gone or changed", fault, l)
		}
	}
	for l := range named {
		if !ct.named[l] {
			t.Fatalf("%s: new mapping %q", fault, l)
		}
	}
	if !ct.mapsOwn && (anon < ct.anon || !anonLeftOk(anon-ct.anon, ct.crashes)) {
		t.Fatalf("%s: anonymous mappings %d bytes, were %d (leftover areas are %#x and %#x each)", fault, anon, ct.anon, areaSize, moverAreaSize)
	}
	// (a few looks: the target opens /dev/null for a moment now and
	// then, to check its lowest free fd)
	if err := settled(ct.fdsUnchanged); err != nil {
		t.Fatalf("%s: %v", fault, err)
	}
	if ct.cleanup {
		if err := settled(ct.exactlyAsBefore); err != nil {
			t.Fatalf("%s: after ctr-cr cleanup: %v", fault, err)
		}
	}
	if l := lastLine(filepath.Join(ct.dir, "out")); strings.HasPrefix(l, "FAIL") {
		t.Fatalf("%s: the target reports %s", fault, l)
	}
}

// settled runs check up to five times, 20 ms apart, until it passes.
func settled(check func() error) error {
	err := check()
	for i := 0; i < 4 && err != nil; i++ {
		time.Sleep(20 * time.Millisecond)
		err = check()
	}
	return err
}

// dropLockTables deletes the network lock tables a killed ctr-cr left in
// netns (their cleanup is ctr-cr cleanup's, not this test's subject).
func dropLockTables(t *testing.T, netns string) {
	out, err := exec.Command("nsenter", "--net="+netns, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "table" && strings.HasPrefix(f[2], "ctrcr") {
			exec.Command("nsenter", "--net="+netns, "nft", "delete", "table", f[1], f[2]).Run()
		}
	}
}

// crashOutput is what a target that died wrote: its first lines (a Go
// runtime's "fatal error" and the goroutine it names) and its last.
func crashOutput(path string) string {
	return head(path, 12) + "...\n" + tail(path, 5)
}

func crashStride(def int) int {
	if v, err := strconv.Atoi(os.Getenv("CTRCR_CRASH_STRIDE")); err == nil && v > 0 {
		return v
	}
	return def
}

// sweep kills ctr-cr at the named points and at every stride-th injection
// step of a dump with args, checking the target after each.
func (ct *crashTarget) sweep(stride int, args ...string) {
	points := []string{"dump:seized", "dump:collected", "dump:pages"}
	leave := false
	for _, a := range args {
		leave = leave || a == "--leave-running"
	}
	if leave {
		points = append(points, "dump:before-release")
	} else {
		points = append(points, "dump:before-kill")
	}
	for _, p := range points {
		if killed, stderr := ct.dump(p, args...); !killed {
			ct.t.Fatalf("%s: ctr-cr not killed there\n%s", p, stderr)
		}
		ct.checkUnchanged(p)
	}
	n := 1
	for ; ; n += stride {
		f := fmt.Sprintf("inject:%d", n)
		killed, _ := ct.dump(f, args...)
		if !killed {
			break
		}
		ct.checkUnchanged(f)
	}
	if n == 1 {
		ct.t.Fatal("no injection step reached")
	}
	if ct.settle > 0 && leave {
		time.Sleep(ct.settle)
		ct.checkUnchanged("the end of the sweep")
	}
	ct.t.Logf("killed ctr-cr at %d points, the target runs on unchanged", len(points)+(n-1)/stride)
}

func TestCrash_DumpSingleThread(t *testing.T) {
	ct := startCrashTarget(t, 0, false, false)
	ct.sweep(crashStride(3), "--leave-running")
	ct.sweep(crashStride(11))
}

// TestCrash_DumpCleanupExact: after each crash of the dump, `ctr-cr
// cleanup` takes back what injection left in the target (the injector's
// area, the page mover's pipes and iovec area): its maps and fd table
// are then exactly as before the dump. The target holds 4 MiB of private
// pages, so the dump moves them through pipes; every injection step of
// a --leave-running dump, every other one of a killing dump. A target
// that catches the signals that end injected runs ends them in the park,
// where cleanup finds a thread still in the area and waits.
func TestCrash_DumpCleanupExact(t *testing.T) {
	// records of their own: no other ctr-cr's sweep (another test's,
	// another version's) takes them
	// and the splice mover on (from 1 MiB: the target is small)
	env := []string{"CTRCR_OPS_DIR=" + t.TempDir(), "CTRCR_SPLICE_MIN_PAGES=256"}
	ct := startCrashTarget(t, 1, false, false)
	ct.cleanup, ct.env = true, env
	ct.sweep(crashStride(1), "--leave-running")
	ct.sweep(crashStride(2))
	t.Logf("cleanup took back %d items", ct.cleaned)
	if ct.cleaned == 0 {
		t.Fatal("cleanup found nothing to take back")
	}
	pk := startCrashTarget(t, 0, false, true)
	pk.cleanup, pk.env = true, env
	pk.sweep(crashStride(3), "--leave-running")
}

// TestCrash_DumpSingleThreadParked: a target that catches SIGURG,
// SIGWINCH and SIGCHLD (as Go programs do): injected runs end in the park.
func TestCrash_DumpSingleThreadParked(t *testing.T) {
	ct := startCrashTarget(t, 2, false, true)
	ct.sweep(crashStride(3), "--leave-running")
	ct.sweep(crashStride(11))
}

// TestCrash_DumpGo: a Go program (the runtime catches every signal:
// injected runs end in the park; goroutines preempted by SIGURG, the GC).
func TestCrash_DumpGo(t *testing.T) {
	ct := startGoCrashTarget(t)
	ct.sweep(crashStride(5), "--leave-running")
	ct.sweep(crashStride(17))
}

// TestCrash_DumpGoMainThread: a Go program whose main thread (where the
// injector maps and unmaps its area, from a boot frame) runs Go code on a
// small goroutine stack among the stacks of parked goroutines. A boot
// frame written below that thread's rsp, left by a crash, overwrote the
// top of the goroutine stack below it and the garbage collector died a
// little later ("traceback did not unwind completely"; docs/crash.md).
func TestCrash_DumpGoMainThread(t *testing.T) {
	ct := startGoCrashTarget(t, "m0")
	ct.sweep(crashStride(3), "--leave-running")
	ct.sweep(crashStride(13))
}

// TestNegative_GoBootFrameNoRoom: a Go program whose main thread runs a
// goroutine while the bottom of its main stack holds data (as after cgo
// code ran deep there): the injector finds no memory it may borrow for
// its boot frame (never below a goroutine's rsp), and the dump is
// refused, naming it; the program runs on unchanged.
func TestNegative_GoBootFrameNoRoom(t *testing.T) {
	ct := startGoCrashTarget(t, "m0", "dirty")
	pid := strconv.Itoa(ct.pid)
	refused := 0
	for i := 0; i < 10 && refused == 0; i++ {
		_, stderr, err := ctrcr(t, "dump", "-t", pid, "-D", filepath.Join(t.TempDir(), "img"), "--leave-running")
		if err == nil {
			continue // seized in a vDSO call, on the main stack: room below it
		}
		requireExitCode(t, err, stderr, 1)
		requireNoPanic(t, stderr)
		if !strings.Contains(stderr, "boot frame") || !strings.Contains(stderr, "goroutine's stack") || !strings.Contains(stderr, pid) {
			t.Fatalf("dump error does not name pid %s, the boot frame and the goroutine's stack:\n%s", pid, stderr)
		}
		refused++
		ct.checkUnchanged("refused dump")
	}
	if refused == 0 {
		t.Fatal("10 dumps with the main thread on a goroutine stack and the bottom of the main stack in use: none refused")
	}
}

// startGoCrashTarget starts crash_gotarget with args.
func startGoCrashTarget(t *testing.T, args ...string) *crashTarget {
	testutil.RequiresRoot(t)
	bin := buildGoCase(t, "crash_gotarget")
	dir := t.TempDir()
	ct := startCrashProc(t, dir, "", append([]string{bin, dir}, args...), 2)
	ct.mapsOwn = true
	ct.settle = time.Second
	ct.masks = ct.stableMasks()
	return ct
}

// stableMasks reads the masks of a target that makes threads itself until
// two reads 50 ms apart agree and no thread has every signal blocked: the
// Go runtime blocks all signals for a moment around the clone of a new
// thread, and a baseline taken then would make the check fail later for a
// mask the program changed itself.
func (ct *crashTarget) stableMasks() map[string]string {
	isTransient := func(m map[string]string) bool {
		for _, v := range m {
			if strings.HasPrefix(v, "fffffffffff") {
				return true
			}
		}
		return false
	}
	prev := ct.readMasks()
	for i := 0; i < 40; i++ {
		time.Sleep(50 * time.Millisecond)
		now := ct.readMasks()
		if fmt.Sprint(now) == fmt.Sprint(prev) && !isTransient(now) {
			return now
		}
		prev = now
	}
	ct.t.Fatalf("the target's thread masks do not settle: %v", prev)
	return nil
}

func TestCrash_DumpThreads(t *testing.T) {
	ct := startCrashTarget(t, 50, false, false)
	ct.sweep(crashStride(23), "--leave-running")
	ct.sweep(crashStride(97))
}

func TestCrash_DumpTCPServer(t *testing.T) {
	ct := startCrashTarget(t, 4, true, false)
	ct.sweep(crashStride(7), "--leave-running", "--tcp-established")
	ct.sweep(crashStride(29), "--tcp-established")
}

// killAfter runs a dump of the target and SIGKILLs ctr-cr after d (from
// outside, between any two of its instructions); killed reports whether
// it was still running then.
func (ct *crashTarget) killAfter(d time.Duration, extra ...string) bool {
	bin := testutil.BuildCtrCr(ct.t)
	img := filepath.Join(ct.t.TempDir(), "img")
	defer os.RemoveAll(img)
	argv := testutil.InNetns(ct.netns, append([]string{bin, "dump", "-t", strconv.Itoa(ct.pid), "-D", img}, extra...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		ct.t.Fatal(err)
	}
	timer := time.AfterFunc(d, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	if err != nil {
		ct.t.Fatalf("dump: %v", err)
	}
	return false
}

// killAnytime SIGKILLs ctr-cr from outside at moments spread over
// --leave-running dumps of the target (the moments between the fault
// points too), checking the target after each.
func (ct *crashTarget) killAnytime(n int) {
	t := ct.t
	if crashStride(0) == 1 {
		n *= 8
	}
	// how long a whole dump takes, to aim inside it
	start := time.Now()
	if ct.killAfter(time.Hour, "--leave-running") {
		t.Fatal("dump killed without a kill")
	}
	whole := time.Since(start)
	killed := 0
	for i := 0; i < n; i++ {
		d := time.Duration(int64(whole) * int64(i) / int64(n))
		if ct.killAfter(d, "--leave-running") {
			killed++
			ct.checkUnchanged(fmt.Sprintf("kill after %v", d))
		}
	}
	t.Logf("killed ctr-cr %d times within a %v dump, the target runs on unchanged", killed, whole)
}

// TestCrash_DumpKilledAnytime: ctr-cr is SIGKILLed from outside at
// moments spread over dumps of a multi-threaded target and of a Go program.
func TestCrash_DumpKilledAnytime(t *testing.T) {
	startCrashTarget(t, 8, false, false).killAnytime(20)
	startGoCrashTarget(t).killAnytime(20)
}
