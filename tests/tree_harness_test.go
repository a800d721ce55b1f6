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
	"fmt"
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

// finishNsInit ends a tree whose root is a pid namespace init restored in
// the foreground (t_pidns.h): it asks for go, waits for the foreground
// ctr-cr (the init's parent, which exits with its status), reaps the case
// root and requires its PASS.
func (tr *treeRun) finishNsInit() {
	tr.requestGo()
	if !noCR {
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
