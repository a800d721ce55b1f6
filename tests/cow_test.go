package tests

// Copy-on-write sharing between a parent and its forked children
// (tests/cases/m_cowfork.c): the pages a child still shares with its
// parent since the fork come back shared, not as a copy per process.

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCR_MemCowFork: a parent fills 256 MiB of private anonymous memory
// and forks 4 children that each write a few pages (one with a second
// thread); after the restores every process sees its contents and the
// region is still shared: from inside, its private pages in
// /proc/self/smaps are its own written pages only; from outside, the
// children map the parent's physical pages (pagemap, as root).
func TestCR_MemCowFork(t *testing.T) {
	runCase(t, Case{Name: "m_cowfork", Src: "m_cowfork.c", Verify: verifyCowFrames(5)})
}

// TestCR_MemCowForkNested: the same with a grandchild forked by the first
// child after it wrote its pages: the grandchild shares with its parent
// what its parent shares with the root.
func TestCR_MemCowForkNested(t *testing.T) {
	runCase(t, Case{Name: "m_cowfork_nested", Src: "m_cowfork.c", CFlags: []string{"-DCOW_NESTED"}, Verify: verifyCowFrames(6)})
}

// verifyCowFrames checks from outside that each of the n processes of the
// case maps nearly all of the region (256 MiB at the address in
// WORKDIR/region) to the root's physical pages.
func verifyCowFrames(n int) func(t *testing.T, w *Run) {
	return func(t *testing.T, w *Run) {
		b, err := os.ReadFile(filepath.Join(w.Dir, "region"))
		if err != nil {
			t.Fatal(err)
		}
		addr, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		const pages = 256 << 20 >> 12
		root, err := regionFrames(w.Pid, addr, pages)
		if err != nil {
			t.Fatal(err)
		}
		procs := descendants(w.Pid)
		if len(procs) != n-1 {
			t.Fatalf("%d descendants, want %d", len(procs), n-1)
		}
		for _, pid := range procs {
			f, err := regionFrames(pid, addr, pages)
			if err != nil {
				t.Fatal(err)
			}
			same := 0
			for i := range f {
				if f[i] != 0 && f[i] == root[i] {
					same++
				}
			}
			t.Logf("pid %d: %d of %d pages on the root's frames", pid, same, pages)
			if same < pages-64 {
				t.Errorf("pid %d: only %d of %d pages of the region share the root's physical pages", pid, same, pages)
			}
		}
	}
}

// regionFrames reads the frame numbers of n pages at addr of pid (0 for a
// page not present).
func regionFrames(pid int, addr uint64, n int) ([]uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 8*n)
	if _, err := f.ReadAt(b, int64(addr/4096*8)); err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		e := binary.LittleEndian.Uint64(b[8*i:])
		if e&(1<<63) != 0 {
			out[i] = e & (1<<55 - 1)
		}
	}
	return out, nil
}
