package tests

// Pre-copy (issue 16): pre-dump rounds while the case runs and changes its
// memory, then a dump against the last round, restored from that tip: the
// case checks every page from inside.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// premigStep makes the p_premig case run its next step and waits for it.
func premigStep(t *testing.T, r *Run, n int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.Dir, fmt.Sprintf("step%d", n)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("log: step %d done", n)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(r.Out)
		if strings.Contains(string(b), want) {
			return
		}
		if strings.Contains(string(b), "FAIL") {
			r.fatalf("", "step %d failed", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.fatalf("", "step %d not done in time", n)
}

// premigRounds runs pre-dump, step, pre-dump, step (after cycle 0: one
// more pre-dump and step), dump on r and returns the image directories
// (the last one the tip).
func premigRounds(t *testing.T, r *Run, cycle int, step *int) []string {
	t.Helper()
	pid := strconv.Itoa(r.Pid)
	dirs := []string{
		filepath.Join(r.imgBase, fmt.Sprintf("c%d-pre1", cycle)),
		filepath.Join(r.imgBase, fmt.Sprintf("c%d-pre2", cycle)),
		filepath.Join(r.imgBase, fmt.Sprintf("c%d-dump", cycle)),
	}
	_, stderr, err := ctrcr(t, "pre-dump", "-t", pid, "-D", dirs[0])
	if err != nil {
		r.fatalf(stderr, "cycle %d: pre-dump: %v", cycle, err)
	}
	// the case holds its own userfaultfd on some memory until step 2
	if own := strings.Contains(stderr, "registered with another userfaultfd (the program's own)"); own != (cycle == 0) {
		r.fatalf(stderr, "cycle %d: pre-dump: warning about the program's own userfaultfd: %v", cycle, own)
	}
	*step++
	premigStep(t, r, *step)
	if _, stderr, err := ctrcr(t, "pre-dump", "-t", pid, "-D", dirs[1], "--parent-path", "../"+filepath.Base(dirs[0])); err != nil {
		r.fatalf(stderr, "cycle %d: pre-dump --parent-path: %v", cycle, err)
	} else if stderr != "" {
		t.Logf("pre-dump stderr:\n%s", stderr)
	}
	*step++
	premigStep(t, r, *step)
	if cycle > 0 {
		// a chain one round deeper
		pre3 := filepath.Join(r.imgBase, fmt.Sprintf("c%d-pre3", cycle))
		if _, stderr, err := ctrcr(t, "pre-dump", "-t", pid, "-D", pre3, "--parent-path", "../"+filepath.Base(dirs[1])); err != nil {
			r.fatalf(stderr, "cycle %d: third pre-dump: %v", cycle, err)
		}
		dirs = []string{dirs[0], dirs[1], pre3, dirs[2]}
		*step++
		premigStep(t, r, *step)
	}
	parent := dirs[len(dirs)-2]
	tip := dirs[len(dirs)-1]
	stdout, stderr, err := ctrcr(t, "dump", "-t", pid, "-D", tip, "--parent-path", "../"+filepath.Base(parent), "--print-stats")
	if err != nil {
		r.fatalf(stderr, "cycle %d: dump --parent-path: %v", cycle, err)
	}
	var st struct {
		PagesWritten    uint64 `json:"pages_written"`
		PagesFromParent uint64 `json:"pages_from_parent"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &st); err != nil {
		t.Fatalf("dump --print-stats: %v: %q", err, stdout)
	}
	// 5-10% of the 32 MiB region is written per step: most pages must
	// come from the parent, or the tracking does not work
	if stderr != "" {
		t.Logf("dump stderr:\n%s", stderr)
	}
	if st.PagesFromParent < 2*st.PagesWritten {
		t.Fatalf("cycle %d: final dump wrote %d pages and left %d to the parent: the dirty tracking did not cut the copy", cycle, st.PagesWritten, st.PagesFromParent)
	}
	t.Logf("cycle %d: final dump: %d pages written, %d from the parent", cycle, st.PagesWritten, st.PagesFromParent)
	if err := waitGone(r.Pid, goneTimeout); err != nil {
		r.fatalf(stderr, "cycle %d: after dump: %v", cycle, err)
	}
	out, stderr, err := ctrcr(t, "show", tip)
	if want := fmt.Sprintf("pre-copy chain: %d parent image(s)", len(dirs)-1); err != nil || !strings.Contains(out, want) {
		r.fatalf(stderr, "cycle %d: show %s: %v\n%s", cycle, tip, err, out)
	}
	return dirs
}

// TestCR_PreCopyChain: two cycles of pre-dump, pre-dump --parent-path (a
// third one in the second cycle), dump --parent-path and restore from the
// tip, the case changing its
// memory between the rounds (writes, MADV_DONTNEED, munmap + mmap at the
// same place, mremap swaps and moves, fork COW, mprotect, its own
// userfaultfd, new mappings); it checks every page from inside.
func TestCR_PreCopyChain(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, Case{Name: "p_premig", Src: "p_premig.c"})
	step := 0
	for cycle := 0; cycle < 2; cycle++ {
		tids, err := listTids(r.Pid)
		if err != nil {
			t.Fatal(err)
		}
		dirs := premigRounds(t, r, cycle, &step)
		tip := dirs[len(dirs)-1]
		if cycle == 0 {
			if _, stderr, err := ctrcr(t, "restore", "-D", tip, "-d"); err != nil {
				r.fatalf(stderr, "restore -d: %v", err)
			}
			if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
				r.fatalf("", "after restore -d: %v", err)
			}
			continue
		}
		r.startForeground(tip)
		if err := waitBack(r.Pid, tids, backTimeout, r.fgDone); err != nil {
			r.fatalf(r.fgStderrText(), "after restore: %v", err)
		}
		if err := waitFile(r.fgPidFile, backTimeout, r.fgDone); err != nil {
			r.fatalf(r.fgStderrText(), "restore did not complete: %v", err)
		}
	}
	r.finishForeground()
}

// TestNegative_PreCopyBrokenChain: a dump against a missing parent fails
// and leaves the case running; a restore from a tip whose parent is
// missing, damaged or replaced fails with a clear error before anything
// runs; the intact chain then restores.
func TestNegative_PreCopyBrokenChain(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, Case{Name: "p_premig", Src: "p_premig.c"})
	pid := strconv.Itoa(r.Pid)
	bad := filepath.Join(r.imgBase, "bad")
	_, stderr, err := ctrcr(t, "dump", "-t", pid, "-D", bad, "--parent-path", "../nowhere")
	if err == nil || !strings.Contains(stderr, "image chain") || !strings.Contains(stderr, "missing") {
		t.Fatalf("dump against a missing parent: err %v, stderr:\n%s", err, stderr)
	}
	if err := unix.Kill(r.Pid, 0); err != nil || procState(r.Pid) == "t" {
		t.Fatalf("case not running after the refused dump: %v %q", err, procState(r.Pid))
	}
	step := 0
	dirs := premigRounds(t, r, 0, &step)
	tip, parent, grand := dirs[2], dirs[1], dirs[0]
	pages := filepath.Join(parent, "pages-"+pid+".img")
	restoreFails := func(what, want string) {
		t.Helper()
		_, stderr, err := ctrcr(t, "restore", "-D", tip, "-d")
		if err == nil {
			t.Fatalf("%s: restore succeeded", what)
		}
		if !strings.Contains(stderr, want) || !strings.Contains(stderr, "image chain") {
			t.Fatalf("%s: want an image chain error with %q, got:\n%s", what, want, stderr)
		}
		if unix.Kill(r.Pid, 0) == nil {
			t.Fatalf("%s: pid %d runs after the failed restore", what, r.Pid)
		}
	}
	if err := flipBit(pages); err != nil {
		t.Fatal(err)
	}
	restoreFails("damaged parent", "checksum")
	if err := flipBit(pages); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(grand, grand+".moved"); err != nil {
		t.Fatal(err)
	}
	restoreFails("missing grandparent", "missing")
	if err := os.Rename(grand+".moved", grand); err != nil {
		t.Fatal(err)
	}
	// the parent replaced by another image (here: the grandparent)
	if err := os.Rename(parent, parent+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := copyDir(grand, parent); err != nil {
		t.Fatal(err)
	}
	restoreFails("replaced parent", "not the image this one was dumped against")
	os.RemoveAll(parent)
	if err := os.Rename(parent+".moved", parent); err != nil {
		t.Fatal(err)
	}
	// a pre-dump image is not restorable by itself
	if _, stderr, err := ctrcr(t, "restore", "-D", parent, "-d"); err == nil || !strings.Contains(stderr, "pre-dump image") {
		t.Fatalf("restore of a pre-dump image: err %v, stderr:\n%s", err, stderr)
	}
	// intact again: restores, and the case's checks pass
	r.startForeground(tip)
	if err := waitFile(r.fgPidFile, backTimeout, r.fgDone); err != nil {
		r.fatalf(r.fgStderrText(), "restore did not complete: %v", err)
	}
	r.finishForeground()
}
