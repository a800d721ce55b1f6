package tests

// Process-tree C/R tests: the C cases tests/cases/t_*.c (each dumped and
// restored twice, checked from inside by the case root after "go" and from
// outside here), a pid namespace init dumped as its own tree, and real
// programs (a shell pipeline, tar, make) dumped mid-flight whose results
// must equal an uninterrupted run's.
//
// runTree is runCase for trees: the same cycles (dump, restore -d, ...,
// restore in the foreground), plus what a tree needs around them:
//   - before the first dump the tree is read from /proc (children of every
//     thread, recursively) and, for the C cases, compared with the listing
//     the case root wrote to WORKDIR/tree.before ("pid ppid pgid sid");
//   - after each dump every process of the tree is gone (zombies killed
//     with their parent are reparented to us, the subreaper, and reaped);
//   - after each restore every process is back with its threads (a zombie
//     as a zombie) and, after the last one, Case.Verify compares the tree
//     with the one before the first dump: same pids, ppids (but the
//     root's, which is now ctr-cr or us), pgids, sids, states (zombie,
//     stopped, other) and zombie exit codes;
//   - a cleanup kills (by pid, after checking they are the case's) every
//     process of the tree, even in other sessions, whatever happened.
//
// Under CTRCR_NOCR=1 no dump/restore is done: the programs run to the end
// and their results are checked the same way.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// realTimeout bounds a real program's run after "go" (make, tar).
const realTimeout = 180 * time.Second

// treeProc is one process of a tree as /proc/PID/stat shows it.
type treeProc struct {
	Pid, Ppid, Pgid, Sid int
	State                string // one letter
	ExitCode             int    // field 52: the wait status of a zombie
	Comm                 string
}

// class is what must not change across C/R: zombie, stopped, or other.
func (p treeProc) class() string {
	switch p.State {
	case "Z", "X":
		return "zombie"
	case "T":
		return "stopped"
	}
	return "running"
}

func (p treeProc) String() string {
	return fmt.Sprintf("%d (%s) ppid %d pgid %d sid %d state %s", p.Pid, p.Comm, p.Ppid, p.Pgid, p.Sid, p.State)
}

// readTreeProc reads /proc/pid/stat.
func readTreeProc(pid int) (treeProc, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return treeProc{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return treeProc{}, fmt.Errorf("pid %d: bad stat %q", pid, s)
	}
	f := strings.Fields(s[end+1:]) // f[0] is field 3
	if len(f) < 50 {
		return treeProc{}, fmt.Errorf("pid %d: short stat %q", pid, s)
	}
	p := treeProc{Pid: pid, State: f[0], Comm: s[open+1 : end]}
	p.Ppid, _ = strconv.Atoi(f[1])
	p.Pgid, _ = strconv.Atoi(f[2])
	p.Sid, _ = strconv.Atoi(f[3])
	p.ExitCode, _ = strconv.Atoi(f[49])
	return p, nil
}

// walkTree returns root and its descendants (the children of each of its
// threads, recursively), parents before children.
func walkTree(root int) ([]treeProc, error) {
	var out []treeProc
	queue := []int{root}
	seen := map[int]bool{}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		p, err := readTreeProc(pid)
		if err != nil {
			if pid == root {
				return nil, err
			}
			continue // ended meanwhile
		}
		out = append(out, p)
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, tk := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tk.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					queue = append(queue, c)
				}
			}
		}
	}
	return out, nil
}

func treePids(procs []treeProc) []int {
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.Pid)
	}
	return pids
}

func formatTree(procs []treeProc) string {
	var b strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&b, "  %v\n", p)
	}
	return b.String()
}

// readTreeFile parses a tree listing written by a case: "pid ppid pgid sid"
// per line.
func readTreeFile(path string) ([]treeProc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []treeProc
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var p treeProc
		if n, err := fmt.Sscanf(l, "%d %d %d %d", &p.Pid, &p.Ppid, &p.Pgid, &p.Sid); n != 4 || err != nil {
			return nil, fmt.Errorf("%s: bad line %q", path, l)
		}
		out = append(out, p)
	}
	return out, nil
}

// compareTrees lists how got differs from want. The root's parent must be
// rootParent (it changes across C/R), every other ppid as in want; with
// states, the state classes and zombie exit codes must be equal too.
func compareTrees(want, got []treeProc, root, rootParent int, states bool) []string {
	var diffs []string
	byPid := map[int]treeProc{}
	for _, p := range got {
		byPid[p.Pid] = p
	}
	for _, w := range want {
		g, ok := byPid[w.Pid]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("pid %d is missing (was %v)", w.Pid, w))
			continue
		}
		delete(byPid, w.Pid)
		wantPpid := w.Ppid
		if w.Pid == root {
			wantPpid = rootParent
		}
		if g.Ppid != wantPpid || g.Pgid != w.Pgid || g.Sid != w.Sid {
			diffs = append(diffs, fmt.Sprintf("pid %d: ppid/pgid/sid %d/%d/%d, want %d/%d/%d",
				w.Pid, g.Ppid, g.Pgid, g.Sid, wantPpid, w.Pgid, w.Sid))
		}
		if !states {
			continue
		}
		if g.class() != w.class() {
			diffs = append(diffs, fmt.Sprintf("pid %d: %s (state %s), was %s (state %s)",
				w.Pid, g.class(), g.State, w.class(), w.State))
		} else if w.class() == "zombie" && g.ExitCode != w.ExitCode {
			diffs = append(diffs, fmt.Sprintf("zombie %d: exit code %#x, was %#x", w.Pid, g.ExitCode, w.ExitCode))
		}
	}
	for _, g := range got {
		if _, extra := byPid[g.Pid]; extra {
			diffs = append(diffs, fmt.Sprintf("unexpected process %v", g))
		}
	}
	return diffs
}

// ---------------------------------------------------------------------------
// Running a tree.

// treeOpts says how a tree test differs from a plain C case.
type treeOpts struct {
	rootFile string // the tree to dump is rooted at the pid in WORKDIR/<rootFile> (default: the case root)
	treeFile bool   // the case writes WORKDIR/tree.before
	exact    bool   // the tree is stable between "ready" and "go": compare all of it (else the root only)
	// settle, if set, waits until the tree is ready to be dumped the
	// first time (after the case's "ready").
	settle func(t *testing.T, tr *treeRun)
	// beforeDump, if set, checks the tree right before each dump (e.g.
	// that a real program is still mid-flight).
	beforeDump func(t *testing.T, tr *treeRun, cycle int)
}

// treeRun is a started tree test.
type treeRun struct {
	*Run
	o      treeOpts
	root   int          // root of the dumped tree
	before []treeProc   // the tree right before the first dump
	seen   map[int]bool // every pid of the tree seen, for the cleanup
	sids   map[int]bool // sessions of the tree, to find its zombies
	fdLog  []string     // fds of the tree before the first dump
}

// startTree starts the case, registers the tree cleanup, finds the root of
// the tree to dump, lets the tree settle and records it.
func startTree(t *testing.T, c Case, o treeOpts) *treeRun {
	t.Helper()
	if c.Src != "" {
		// Safety net, run after every other cleanup: a failure before
		// the tree is recorded (e.g. in startCase, whose cleanup only
		// covers the root's session) must not leave a child that made
		// its own session running.
		bin := buildCase(t, c.Src, c.CFlags)
		t.Cleanup(func() { killRunning(bin) })
	}
	r := startCase(t, c)
	tr := &treeRun{Run: r, o: o, root: r.Pid, seen: map[int]bool{r.Pid: true}, sids: map[int]bool{}}
	// Registered after startCase's: runs first, while WORKDIR still
	// exists (isCase checks the cwd against it).
	t.Cleanup(tr.cleanup)
	if o.rootFile != "" {
		b, err := os.ReadFile(filepath.Join(r.Dir, o.rootFile))
		if err != nil {
			r.fatalf("", "root of the tree: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			r.fatalf("", "root of the tree: bad %s %q", o.rootFile, b)
		}
		tr.root = pid
		tr.seen[pid] = true
	}
	if o.settle != nil {
		o.settle(t, tr)
	}
	tr.before = tr.snapshot(t)
	t.Logf("tree before the first dump:\n%s", formatTree(tr.before))
	if o.treeFile {
		listed, err := readTreeFile(filepath.Join(r.Dir, "tree.before"))
		if err != nil {
			r.fatalf("", "%v", err)
		}
		if d := compareTrees(listed, tr.before, tr.root, listed[0].Ppid, false); len(d) > 0 {
			r.fatalf("", "tree.before and /proc disagree before the first dump:\n  %s\n/proc:\n%s",
				strings.Join(d, "\n  "), formatTree(tr.before))
		}
	}
	for _, p := range tr.before {
		tr.fdLog = append(tr.fdLog, fmt.Sprintf("%d (%s): %s", p.Pid, p.Comm, fdSummary(p.Pid)))
	}
	return tr
}

// snapshot walks the tree and remembers its pids and sessions.
func (tr *treeRun) snapshot(t *testing.T) []treeProc {
	t.Helper()
	procs, err := walkTree(tr.root)
	if err != nil {
		tr.fatalf("", "tree of %d: %v", tr.root, err)
	}
	for _, p := range procs {
		tr.seen[p.Pid] = true
		tr.sids[p.Sid] = true
	}
	return procs
}

// rootParent is the parent the root must have now: the one it had before
// the first dump, ctr-cr after the foreground restore, us after restore -d.
func (tr *treeRun) rootParent(restored bool) int {
	switch {
	case !restored:
		return tr.before[0].Ppid
	case tr.fg != nil:
		return tr.fg.Process.Pid
	default:
		return os.Getpid()
	}
}

// checkTree compares the tree now with the one before the first dump
// (exact) or checks the root alone.
func (tr *treeRun) checkTree(t *testing.T, when string, restored bool) {
	t.Helper()
	now := tr.snapshot(t)
	want := tr.before
	if !tr.o.exact {
		want, now = want[:1], now[:1]
	}
	if d := compareTrees(want, now, tr.root, tr.rootParent(restored), true); len(d) > 0 {
		tr.fatalf(tr.fgStderrText(), "%s: the tree differs from before the first dump:\n  %s\nnow:\n%s",
			when, strings.Join(d, "\n  "), formatTree(now))
	}
}

// cycles dumps and restores the tree c.Cycles times: restore -d but for
// the last, in the foreground (ctr-cr then is the root's parent and exits
// with its status). Nothing under CTRCR_NOCR.
func (tr *treeRun) cycles(t *testing.T) {
	t.Helper()
	if noCR {
		return
	}
	for i := 0; i < tr.c.Cycles; i++ {
		last := i == tr.c.Cycles-1
		all := tr.snapshot(t)
		snap := all // the processes that must come back
		if tr.o.exact {
			if d := compareTrees(tr.before, snap, tr.root, tr.rootParent(i > 0), true); len(d) > 0 {
				tr.fatalf("", "cycle %d: before the dump the tree differs from the first:\n  %s", i, strings.Join(d, "\n  "))
			}
		} else {
			snap = snap[:1]
		}
		if tr.o.beforeDump != nil {
			tr.o.beforeDump(t, tr, i)
		}
		tids := map[int][]int{}
		for _, p := range snap {
			if p.class() != "zombie" {
				ts, err := listTids(p.Pid)
				if err != nil {
					tr.fatalf("", "cycle %d: before dump: %v", i, err)
				}
				tids[p.Pid] = ts
			}
		}
		tr.Tids = tids[tr.root]

		img := filepath.Join(tr.imgBase, fmt.Sprintf("img%d", i))
		if err := os.MkdirAll(img, 0o755); err != nil {
			t.Fatal(err)
		}
		tr.Images = append(tr.Images, img)
		_, stderr, err := ctrcr(t, append([]string{"dump", "-t", strconv.Itoa(tr.root), "-D", img}, tr.c.DumpArgs...)...)
		if err != nil {
			tr.fatalf(stderr, "cycle %d: dump: %v", i, err)
		}
		if err := tr.waitTreeGone(all); err != nil {
			tr.fatalf(stderr, "cycle %d: after dump: %v", i, err)
		}
		if _, stderr, err := ctrcr(t, "show", img); err != nil {
			tr.fatalf(stderr, "cycle %d: show %s: %v", i, img, err)
		}

		if !last {
			_, stderr, err := ctrcr(t, append([]string{"restore", "-D", img, "-d"}, tr.c.RestoreArgs...)...)
			if err != nil {
				tr.fatalf(stderr, "cycle %d: restore -d: %v", i, err)
			}
			if err := waitTreeBack(snap, tids, nil); err != nil {
				tr.fatalf(stderr, "cycle %d: after restore -d: %v", i, err)
			}
			if tr.o.exact {
				tr.checkTree(t, fmt.Sprintf("cycle %d: after restore -d", i), true)
			}
			continue
		}
		tr.startForeground(img)
		if err := waitTreeBack(snap, tids, tr.fgDone); err != nil {
			tr.fatalf(tr.fgStderrText(), "cycle %d: after restore: %v", i, err)
		}
		if err := waitFile(tr.fgPidFile, backTimeout, tr.fgDone); err != nil {
			tr.fatalf(tr.fgStderrText(), "cycle %d: restore did not complete: %v", i, err)
		}
	}
}

// waitTreeGone waits until the dumped tree is gone: the root and every
// process of snap, and any zombie of the tree's sessions reparented to us
// (a process the tree started after the snapshot). Killed together with
// their parent, they are reparented to us, the subreaper, and must be
// reaped here before their pids can be restored.
func (tr *treeRun) waitTreeGone(snap []treeProc) error {
	if err := waitGone(tr.root, goneTimeout); err != nil {
		return err
	}
	if err := reapTree(treePids(snap), goneTimeout); err != nil {
		return err
	}
	tr.reapStrays()
	return nil
}

// reapStrays reaps zombie children of ours in the tree's sessions.
func (tr *treeRun) reapStrays() {
	me := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := readTreeProc(pid)
		if err == nil && p.Ppid == me && p.class() == "zombie" && tr.sids[p.Sid] {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// waitTreeBack waits until every process of snap is back: a zombie as a
// zombie, any other with (at least) its threads.
func waitTreeBack(snap []treeProc, tids map[int][]int, abort <-chan struct{}) error {
	for _, p := range snap {
		if p.class() != "zombie" {
			if err := waitBack(p.Pid, tids[p.Pid], backTimeout, abort); err != nil {
				return err
			}
			continue
		}
		deadline := time.Now().Add(backTimeout)
		for procState(p.Pid) != "Z" {
			if time.Now().After(deadline) {
				return fmt.Errorf("zombie %d not back after %v (state %q)", p.Pid, backTimeout, procState(p.Pid))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// verify runs the checks from outside after the last restore: the tree,
// then Case.Verify.
func (tr *treeRun) verify(t *testing.T) {
	t.Helper()
	tr.checkTree(t, "after the last restore", !noCR)
	if tr.c.Verify != nil {
		tr.c.Verify(t, tr.Run)
	}
}

// waitRootExit waits for the end of the root of the tree when it is the
// case process: reaped by us (no C/R) or by the foreground ctr-cr, which
// exits with its status.
func (tr *treeRun) waitRootExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	if noCR {
		status, err := waitChild(tr.Pid, timeout)
		if err != nil {
			tr.fatalf("", "after go: %v", err)
		}
		tr.reaped = true
		if !status.Exited() || status.ExitStatus() != 0 {
			tr.fatalf("", "case ended with %s", describeStatus(status))
		}
		return
	}
	select {
	case <-tr.fgDone:
	case <-time.After(timeout):
		tr.fatalf(tr.fgStderrText(), "ctr-cr restore did not exit within %v after go", timeout)
	}
	tr.reaped = true // ctr-cr is the parent of the case and has reaped it
	if tr.fgErr != nil {
		tr.fatalf(tr.fgStderrText(), "ctr-cr restore (foreground), i.e. the restored root: %v", tr.fgErr)
	}
}

// cleanup kills what is left of the tree: every pid seen in it and the
// tree under the root now, if they are still the case's processes, then
// reaps those reparented to us.
func (tr *treeRun) cleanup() {
	if procs, err := walkTree(tr.root); err == nil && isCase(tr.root, tr.Dir) {
		for _, p := range procs {
			tr.seen[p.Pid] = true
		}
	}
	pids := make([]int, 0, len(tr.seen))
	for pid := range tr.seen {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	var wait []int
	for _, pid := range append([]int{tr.root}, pids...) {
		switch st := procState(pid); {
		case st == "Z":
			wait = append(wait, pid)
		case st != "" && st != "X" && isCase(pid, tr.Dir):
			syscall.Kill(pid, syscall.SIGKILL)
			wait = append(wait, pid)
		}
	}
	for _, pid := range wait {
		waitGone(pid, 2*time.Second) // reaps those that are ours
	}
	tr.reapStrays()
}

// killRunning kills, by pid, the processes still running the program bin
// (argv[0]), a case binary this test binary built in its own directory,
// and reaps those that are ours.
func killRunning(bin string) {
	ents, _ := os.ReadDir("/proc")
	var killed []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if argv0, _, _ := bytes.Cut(cmdline, []byte{0}); string(argv0) == bin {
			syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, pid)
		}
	}
	for _, pid := range killed {
		waitGone(pid, 2*time.Second)
	}
}

// runTree runs a tree C case: start, dump/restore the tree twice, check it
// from outside, "go", and require the root's exit 0 with PASS last.
func runTree(t *testing.T, c Case) *treeRun {
	t.Helper()
	tr := startTree(t, c, treeOpts{treeFile: true, exact: true})
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, goTimeout)
	tr.requirePass(tr.fgStderrText())
	return tr
}

// ---------------------------------------------------------------------------
// Helpers for the checks from outside.

// fdTargets returns fd -> readlink target of /proc/pid/fd.
func fdTargets(t *testing.T, pid int) map[int]string {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fds of %d: %v", pid, err)
	}
	out := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); err == nil {
			out[fd] = l
		}
	}
	return out
}

// fdSummary is "fd=target ..." of pid, for the logs.
func fdSummary(pid int) string {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	var parts []string
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		parts = append(parts, e.Name()+"="+l)
	}
	return strings.Join(parts, " ")
}

// targetsMatching lists the fd targets of pid with the given prefix.
func targetsMatching(t *testing.T, pid int, prefix string) []string {
	t.Helper()
	var out []string
	for _, l := range fdTargets(t, pid) {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// treeMember returns the pid of process i+1 of WORKDIR/tree.before (the
// root is process 0).
func treeMember(t *testing.T, w *Run, i int) int {
	t.Helper()
	procs, err := readTreeFile(filepath.Join(w.Dir, "tree.before"))
	if err != nil {
		t.Fatal(err)
	}
	if i+1 >= len(procs) {
		t.Fatalf("tree.before has %d processes, want at least %d", len(procs), i+2)
	}
	return procs[i+1].Pid
}

// statusField returns the value of "Key:" in /proc/pid/status.
func statusField(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return ""
}

// requireTools fails (never skips) when a program the test runs is missing.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is needed by this test (build-essential, tar, gzip): %v", n, err)
		}
	}
}

// ---------------------------------------------------------------------------
// The C cases.

// TestTree_ThreeLevels: three levels, two sessions, four groups; ids,
// parent-death signals, memory and counters of every member kept; the
// groups are signalled as groups after restore; exit statuses reaped.
func TestTree_ThreeLevels(t *testing.T) {
	runTree(t, Case{Name: "t_tree3", Src: "t_tree3.c"})
}

// TestTree_OrphanSession: a session (and a group) whose leader has exited:
// its members keep sid/pgid = the dead leader's pid, which still names no
// process after restore; the root keeps PR_SET_CHILD_SUBREAPER.
func TestTree_OrphanSession(t *testing.T) {
	runTree(t, Case{Name: "t_orphan_session", Src: "t_orphan_session.c", Verify: func(t *testing.T, w *Run) {
		y := treeMember(t, w, 0)
		p, err := readTreeProc(y)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Sid)); err == nil {
			t.Errorf("the dead session leader %d exists after restore (%s)", p.Sid, procState(p.Sid))
		}
	}})
}

// TestTree_Zombies: zombies (one leading its own group, one killed by a
// signal, one the child of a live child) are zombies after restore with
// the same exit codes, and their parents reap them with the same statuses.
func TestTree_Zombies(t *testing.T) {
	runTree(t, Case{Name: "t_zombies", Src: "t_zombies.c"})
}

// TestTree_Stopped: a SIGSTOPped child stays stopped (a group stop, not
// traced) and does not run until SIGCONT.
func TestTree_Stopped(t *testing.T) {
	runTree(t, Case{Name: "t_stopped", Src: "t_stopped.c", Verify: func(t *testing.T, w *Run) {
		s := treeMember(t, w, 0)
		if st := statusField(t, s, "State"); !strings.HasPrefix(st, "T") {
			t.Errorf("stopped child %d: State %q, want T (stopped)", s, st)
		}
		if tr := statusField(t, s, "TracerPid"); tr != "0" {
			t.Errorf("stopped child %d: TracerPid %s", s, tr)
		}
	}})
}

// TestTree_PipeMB: 64 MiB through a 1 MiB pipe between two children, the
// pipe full at every dump; every byte and the checksum checked.
func TestTree_PipeMB(t *testing.T) {
	runTree(t, Case{Name: "t_pipe_mb", Src: "t_pipe_mb.c", Verify: func(t *testing.T, w *Run) {
		// The producer holds the data pipe only; the consumer holds it
		// and its report pipe to the root.
		p, c := treeMember(t, w, 0), treeMember(t, w, 1)
		pp, cp := targetsMatching(t, p, "pipe:"), targetsMatching(t, c, "pipe:")
		if len(pp) != 1 || len(cp) != 2 || !slices.Contains(cp, pp[0]) {
			t.Fatalf("producer and consumer do not hold one pipe: %v / %v", pp, cp)
		}
		if rp := targetsMatching(t, w.Pid, pp[0]); len(rp) > 0 {
			t.Errorf("the root holds the data pipe %s, it had closed it", pp[0])
		}
	}})
}

// TestTree_FIFO: a FIFO opened by path by a writer and a reader, bytes
// queued at dump; the reader gets exactly them, then the new ones, then EOF.
func TestTree_FIFO(t *testing.T) {
	runTree(t, Case{Name: "t_fifo", Src: "t_fifo.c", Verify: func(t *testing.T, w *Run) {
		fifo := filepath.Join(w.Dir, "fifo")
		for i := 0; i < 2; i++ {
			pid := treeMember(t, w, i)
			if got := targetsMatching(t, pid, fifo); len(got) != 1 {
				t.Errorf("pid %d holds %d fds of %s, want 1", pid, len(got), fifo)
			}
		}
	}})
}

// TestTree_Socketpairs: stream, dgram and seqpacket socketpairs between a
// parent and a child with messages queued both ways, buffer sizes and
// SO_PASSCRED kept; new messages flow (with credentials) after restore.
func TestTree_Socketpairs(t *testing.T) {
	runTree(t, Case{Name: "t_socketpairs", Src: "t_socketpairs.c", Verify: func(t *testing.T, w *Run) {
		for _, pid := range []int{w.Pid, treeMember(t, w, 0)} {
			if got := targetsMatching(t, pid, "socket:"); len(got) != 3 {
				t.Errorf("pid %d holds %d sockets, want 3: %v", pid, len(got), got)
			}
		}
	}})
}

// TestTree_SharedOffset: one open file description in two processes: the
// offset stays shared (concurrent writes neither overlap nor get lost).
func TestTree_SharedOffset(t *testing.T) {
	runTree(t, Case{Name: "t_shared_offset", Src: "t_shared_offset.c", Verify: func(t *testing.T, w *Run) {
		path := filepath.Join(w.Dir, "shared.dat")
		var pos []string
		for _, pid := range []int{w.Pid, treeMember(t, w, 0)} {
			for fd, l := range fdTargets(t, pid) {
				if l != path {
					continue
				}
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
				if err != nil {
					t.Fatal(err)
				}
				pos = append(pos, strings.Fields(string(b))[1]) // "pos: N"
			}
		}
		if len(pos) != 2 || pos[0] != pos[1] || pos[0] != "320" {
			t.Errorf("offsets of %s in the two processes: %v, want [320 320]", path, pos)
		}
	}})
}

// TestTree_SharedAnon: MAP_SHARED anonymous memory written by one process
// is read by the other, before and after restore (also pages never touched
// before the dump); MAP_PRIVATE copies stay apart.
func TestTree_SharedAnon(t *testing.T) {
	runTree(t, Case{Name: "t_shared_anon", Src: "t_shared_anon.c", Verify: func(t *testing.T, w *Run) {
		var inos []string
		for _, pid := range []int{w.Pid, treeMember(t, w, 0)} {
			maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(string(maps), "\n") {
				f := strings.Fields(l)
				if len(f) < 6 || !strings.HasPrefix(f[5], "/dev/zero") || f[1][3] != 's' {
					continue
				}
				var lo, hi uint64
				fmt.Sscanf(f[0], "%x-%x", &lo, &hi)
				if hi-lo == 2<<20 {
					inos = append(inos, f[4])
				}
			}
		}
		if len(inos) != 2 || inos[0] != inos[1] {
			t.Errorf("the 2 MiB shared region in the two processes: inodes %v, want one object", inos)
		}
	}})
}

// TestTree_PidNS: the init of a pid namespace and its two children dumped
// as a tree (not the case root, their parent): restored with pids 1, 2, 3
// inside and the same pids outside, one namespace, sessions and groups kept;
// the namespace still forks. The restored init's parent is ctr-cr (or us
// after restore -d), no longer the case root, so the init reports through
// WORKDIR/ns.result, which the case root turns into PASS/FAIL.
func TestTree_PidNS(t *testing.T) {
	tr := startTree(t, Case{Name: "t_pidns", Src: "t_pidns.c"}, treeOpts{rootFile: "dumpme", treeFile: true, exact: true})
	nsInode := func(pid int) string {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	check := func(when string) {
		mine := nsInode(os.Getpid())
		var ns string
		inner := map[string]bool{}
		for i, p := range tr.before {
			nspid := strings.Fields(statusField(t, p.Pid, "NSpid"))
			if len(nspid) != 2 || nspid[0] != strconv.Itoa(p.Pid) || inner[nspid[1]] ||
				(i == 0) != (nspid[1] == "1") || !slices.Contains([]string{"1", "2", "3"}, nspid[1]) {
				t.Errorf("%s: NSpid of %d is %v, want [%d 1] for the init, [%d 2|3] for the others",
					when, p.Pid, nspid, p.Pid, p.Pid)
			}
			if len(nspid) == 2 {
				inner[nspid[1]] = true
			}
			n := nsInode(p.Pid)
			if n == mine || (ns != "" && n != ns) {
				t.Errorf("%s: pid %d is in pid namespace %s (ours %s, the init's %s)", when, p.Pid, n, mine, ns)
			}
			ns = n
		}
	}
	check("before the first dump")
	tr.cycles(t)
	tr.verify(t)
	check("after the last restore")

	tr.requestGo()
	if !noCR {
		// The foreground ctr-cr is the init's parent: it exits with the
		// init's status.
		select {
		case <-tr.fgDone:
		case <-time.After(goTimeout):
			tr.fatalf(tr.fgStderrText(), "the restored ns init did not end within %v after go", goTimeout)
		}
		if tr.fgErr != nil {
			tr.fatalf(tr.fgStderrText(), "ctr-cr restore (foreground), i.e. the restored ns init: %v", tr.fgErr)
		}
	}
	status, err := waitChild(tr.Pid, goTimeout)
	if err != nil {
		tr.fatalf(tr.fgStderrText(), "case root after go: %v", err)
	}
	tr.reaped = true
	if !status.Exited() || status.ExitStatus() != 0 {
		tr.fatalf(tr.fgStderrText(), "case root ended with %s", describeStatus(status))
	}
	tr.requirePass(tr.fgStderrText())
}

// ---------------------------------------------------------------------------
// Real programs.

// TestTree_Pipeline: sh -c 'producer | gzip -1 | sha256sum > sum' dumped
// and restored mid-flight (the producer paces itself and never writes its
// last MiB before go); the sum must equal an uninterrupted run's.
func TestTree_Pipeline(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "sh", "gzip", "sha256sum")
	const mib = "32"
	prod := buildCase(t, "t_producer.c", nil)
	t.Cleanup(func() { killRunning(prod) })

	ref, err := exec.Command("/bin/sh", "-c", prod+" - "+mib+" | gzip -1 | sha256sum").Output()
	if err != nil {
		t.Fatalf("reference pipeline: %v", err)
	}
	comm := filepath.Base(prod)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	sum := ""
	tr := startTree(t, Case{
		Name: "Pipeline",
		Cmd:  []string{"/bin/sh", "-c", prod + " {WORKDIR} " + mib + " | gzip -1 | sha256sum > {WORKDIR}/sum"},
	}, treeOpts{
		exact: true,
		settle: func(t *testing.T, tr *treeRun) {
			sum = filepath.Join(tr.Dir, "sum")
			waitTreeShape(t, tr, []string{"sh", comm, "gzip", "sha256sum"})
		},
		beforeDump: func(t *testing.T, tr *treeRun, cycle int) {
			if fi, err := os.Stat(sum); err != nil || fi.Size() != 0 {
				tr.fatalf("", "cycle %d: the pipeline is not mid-flight: sum %v %v", cycle, fi, err)
			}
		},
	})
	t.Logf("fds before the first dump:\n  %s", strings.Join(tr.fdLog, "\n  "))
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, realTimeout)
	got, err := os.ReadFile(sum)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ref) {
		t.Fatalf("pipeline result %q, uninterrupted run %q", got, ref)
	}
}

// waitTreeShape waits until the root's comm is want[0] and the tree has
// processes with each of the other comms in want (a shell may stand between
// a program and the one it runs).
func waitTreeShape(t *testing.T, tr *treeRun, want []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var comms []string
	for {
		procs, err := walkTree(tr.root)
		if err != nil {
			tr.fatalf("", "tree of %d: %v", tr.root, err)
		}
		comms = comms[:0]
		for _, p := range procs {
			comms = append(comms, p.Comm)
		}
		ok := comms[0] == want[0]
		for _, w := range want[1:] {
			ok = ok && slices.Contains(comms[1:], w)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tr.fatalf("", "the tree is %v, want %v", comms, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// makeDataTree writes a deterministic directory tree under dir: nfiles
// files of varied sizes (some of several MiB) in nested directories, about
// total bytes of compressible text, fixed modes.
func makeDataTree(t *testing.T, dir string, nfiles int, total int64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("alpha beta gamma delta process tree session group zombie pipe socket fifo memory page signal thread")
	sizes := make([]int64, nfiles)
	var sum int64
	for i := range sizes {
		if i%100 == 7 { // a few large files
			sizes[i] = 1<<20 + rng.Int64N(3<<20)
		} else {
			sizes[i] = rng.Int64N(24 << 10)
		}
		sum += sizes[i]
	}
	for i := range sizes { // scale to the total
		sizes[i] = sizes[i] * total / sum
	}
	buf := make([]byte, 0, 4<<20)
	for i, size := range sizes {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%40), fmt.Sprintf("e%d", i%7))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		buf = buf[:0]
		for int64(len(buf)) < size {
			buf = append(buf, words[rng.IntN(len(words))]...)
			if rng.IntN(10) == 0 {
				buf = strconv.AppendUint(append(buf, ' '), rng.Uint64(), 36)
			}
			buf = append(buf, " \n"[rng.IntN(2)])
		}
		name := filepath.Join(sub, fmt.Sprintf("file%04d.txt", i))
		if err := os.WriteFile(name, buf[:size], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// modes fixed whatever the umask
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tarArgs is a reproducible "tar czf ARCHIVE -C DIR .".
func tarArgs(archive, dir string) []string {
	return []string{"tar", "--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0", "--numeric-owner",
		"--format=gnu", "-czf", archive, "-C", dir, "."}
}

// TestTree_Tar: tar czf of a 2000-file, 60 MiB tree (tar, the sh it runs
// gzip with, gzip) dumped and restored mid-archive; the archive must be
// byte-identical to an uninterrupted run's. tar paces itself with
// --checkpoint-action=sleep=1 every 6 MiB so that it is still archiving at
// each dump.
func TestTree_Tar(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "sh", "tar", "gzip", "cp")
	src := filepath.Join(t.TempDir(), "src")
	makeDataTree(t, src, 2000, 60<<20)

	args := tarArgs("{WORKDIR}/out.tgz", "{WORKDIR}/tree")
	args = append(args[:1], append([]string{"--checkpoint=600", "--checkpoint-action=sleep=1"}, args[1:]...)...)
	script := "cp -a " + src + " {WORKDIR}/tree && echo ready && exec " + shellJoin(args)
	var out string
	tr := startTree(t, Case{Name: "Tar", Cmd: []string{"/bin/sh", "-c", script}, ReadyTimeout: 60 * time.Second}, treeOpts{
		exact: true,
		settle: func(t *testing.T, tr *treeRun) {
			out = filepath.Join(tr.Dir, "out.tgz")
			waitTreeShape(t, tr, []string{"tar", "gzip"})
			deadline := time.Now().Add(30 * time.Second)
			for {
				if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
					return
				}
				if time.Now().After(deadline) {
					tr.fatalf("", "%s stays empty", out)
				}
				time.Sleep(5 * time.Millisecond)
			}
		},
		beforeDump: func(t *testing.T, tr *treeRun, cycle int) {
			fi, err := os.Stat(out)
			if err != nil {
				tr.fatalf("", "cycle %d: %v", cycle, err)
			}
			t.Logf("cycle %d: dumping tar with %d bytes of archive written", cycle, fi.Size())
		},
	})
	t.Logf("fds before the first dump:\n  %s", strings.Join(tr.fdLog, "\n  "))
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, realTimeout)

	ref := filepath.Join(tr.Dir, "ref.tgz")
	if b, err := exec.Command(tarArgs(ref, filepath.Join(tr.Dir, "tree"))[0], tarArgs(ref, filepath.Join(tr.Dir, "tree"))[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("reference tar: %v\n%s", err, b)
	}
	requireSameFile(t, out, ref)
}

// shellJoin quotes args for sh -c.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// requireSameFile fails unless the two files have the same bytes.
func requireSameFile(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		i := 0
		for i < len(a) && i < len(b) && a[i] == b[i] {
			i++
		}
		t.Fatalf("%s (%d bytes, sha256 %x) differs from the uninterrupted run's %s (%d bytes, sha256 %x) at byte %d",
			got, len(a), sha256.Sum256(a), want, len(b), sha256.Sum256(b), i)
	}
}

// makeProject writes a small C project: nsrc files each with a large
// generated function (slow enough to compile that make -j2 is mid-build
// at each dump), a main calling them all, and a Makefile building the
// objects and linking prog reproducibly.
func makeProject(t *testing.T, dir string, nsrc int) []string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var objs []string
	var mainC strings.Builder
	mainC.WriteString("#include <stdio.h>\n")
	for i := 0; i < nsrc; i++ {
		var b strings.Builder
		fmt.Fprintf(&b, "unsigned long f%02d(unsigned long x)\n{\n\tunsigned long a = x, b = x ^ %#x, c = %d;\n", i, i*2654435761, i)
		for j := 0; j < 700; j++ {
			switch j % 4 {
			case 0:
				fmt.Fprintf(&b, "\ta = a * %dUL + (b >> %d);\n", 2*j+1, j%13+1)
			case 1:
				fmt.Fprintf(&b, "\tif ((a ^ c) & %#x) b += a << %d; else c ^= b + %d;\n", 1<<(j%16), j%7+1, j)
			case 2:
				fmt.Fprintf(&b, "\tc = (c + a) * %dUL ^ (b >> %d);\n", 2*j+3, j%11+1)
			default:
				fmt.Fprintf(&b, "\tfor (int k = 0; k < %d; k++) a += (b ^ k) * %dUL;\n", j%5+2, j)
			}
		}
		b.WriteString("\treturn a ^ b ^ c;\n}\n")
		name := fmt.Sprintf("f%02d", i)
		if err := os.WriteFile(filepath.Join(dir, name+".c"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, name+".o")
		fmt.Fprintf(&mainC, "unsigned long %s(unsigned long);\n", name)
	}
	mainC.WriteString("int main(void)\n{\n\tunsigned long s = 1;\n")
	for i := 0; i < nsrc; i++ {
		fmt.Fprintf(&mainC, "\ts = f%02d(s) + %d;\n", i, i)
	}
	mainC.WriteString("\tprintf(\"%lx\\n\", s);\n\treturn 0;\n}\n")
	if err := os.WriteFile(filepath.Join(dir, "main.c"), []byte(mainC.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	objs = append(objs, "main.o")
	mk := "CC = gcc\n" +
		"CFLAGS = -O2 -g0 -fno-ident -ffile-prefix-map=$(CURDIR)=.\n" +
		"OBJS = " + strings.Join(objs, " ") + "\n" +
		"prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n" +
		"%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestTree_Make: make -j2 of a 30-file C project (make, gcc, cc1, as, ...)
// dumped and restored mid-build; the objects and the program must be
// byte-identical to a clean build's, and the program must run. The tree
// changes all the time (make starts compilers, which end), so only the root
// is compared and awaited after each restore; after each dump every process
// seen in the tree, and any zombie of its session reparented to us, is
// reaped.
func TestTree_Make(t *testing.T) {
	testutil.RequiresRoot(t)
	requireTools(t, "sh", "make", "gcc", "as", "ld", "cp")
	const nsrc = 30
	src := filepath.Join(t.TempDir(), "proj")
	objs := makeProject(t, src, nsrc)

	countObjs := func(dir string) int {
		n := 0
		for _, o := range objs {
			if _, err := os.Stat(filepath.Join(dir, o)); err == nil {
				n++
			}
		}
		return n
	}
	script := "cp -a " + src + " {WORKDIR}/proj && mkdir {WORKDIR}/tmp && export TMPDIR={WORKDIR}/tmp && echo ready && exec make -j2 -C {WORKDIR}/proj"
	var proj string
	tr := startTree(t, Case{Name: "Make", Cmd: []string{"/bin/sh", "-c", script}, ReadyTimeout: 60 * time.Second}, treeOpts{
		settle: func(t *testing.T, tr *treeRun) {
			proj = filepath.Join(tr.Dir, "proj")
			deadline := time.Now().Add(60 * time.Second)
			for countObjs(proj) == 0 {
				if time.Now().After(deadline) {
					tr.fatalf("", "no object file after 60 s")
				}
				time.Sleep(5 * time.Millisecond)
			}
		},
		beforeDump: func(t *testing.T, tr *treeRun, cycle int) {
			n := countObjs(proj)
			procs, _ := walkTree(tr.root)
			var comms []string
			for _, p := range procs {
				comms = append(comms, p.Comm)
			}
			t.Logf("cycle %d: dumping make with %d/%d objects built, tree %v", cycle, n, len(objs), comms)
			if n == len(objs) {
				tr.fatalf("", "cycle %d: the build is not mid-way any more (all %d objects exist)", cycle, n)
			}
		},
	})
	t.Logf("fds before the first dump:\n  %s", strings.Join(tr.fdLog, "\n  "))
	tr.cycles(t)
	tr.verify(t)
	tr.requestGo()
	tr.waitRootExit(t, realTimeout)

	ref := filepath.Join(tr.Dir, "ref")
	if b, err := exec.Command("cp", "-a", src, ref).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, b)
	}
	cmd := exec.Command("make", "-j2", "-C", ref)
	cmd.Env = append(os.Environ(), "TMPDIR="+filepath.Join(tr.Dir, "tmp"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference build: %v\n%s", err, b)
	}
	for _, f := range append(slices.Clone(objs), "prog") {
		requireSameFile(t, filepath.Join(proj, f), filepath.Join(ref, f))
	}
	got, err := exec.Command(filepath.Join(proj, "prog")).Output()
	if err != nil {
		t.Fatalf("the built program: %v", err)
	}
	want, err := exec.Command(filepath.Join(ref, "prog")).Output()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the built program prints %q, the reference %q (%v)", got, want, err)
	}
}
