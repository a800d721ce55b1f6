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

	"github.com/ctr-cr/ctr-cr/internal/testutil"
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

// TestCR_MemCowForkLeaveRunning: dump --leave-running keeps the sharing
// of the tree it leaves running (reading the pages with process_vm_readv
// pinned them, and the kernel gave every process a copy of each shared
// page: a tree that shared 256 MiB held 1.25 GiB after the dump, and as
// much more during it), checked from outside by frame and from inside.
func TestCR_MemCowForkLeaveRunning(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "m_cowfork_lr", Src: "m_cowfork.c"})
	for i := 0; i < 2; i++ {
		img := filepath.Join(t.TempDir(), "img")
		if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running"); err != nil {
			r.fatalf(stderr, "dump --leave-running %d: %v", i, err)
		}
		requireRunningUntraced(t, r.Pid)
		verifyCowFrames(5)(t, r)
	}
	finishChild(t, r)
}

// verifyCowFrames checks from outside that each of the n processes of the
// case maps nearly all of the region (256 MiB at the address in
// WORKDIR/region) to physical pages another process of the case maps too
// (the root: but for the 4 MiB it wrote after the forks).
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
		procs := append([]int{w.Pid}, descendants(w.Pid)...)
		if len(procs) != n {
			t.Fatalf("%d processes, want %d", len(procs), n)
		}
		frames := map[int][]uint64{}
		users := map[uint64]int{}
		for _, pid := range procs {
			f, err := regionFrames(pid, addr, pages)
			if err != nil {
				t.Fatal(err)
			}
			frames[pid] = f
			for _, x := range f {
				if x != 0 {
					users[x]++
				}
			}
		}
		for _, pid := range procs {
			shared := 0
			for _, x := range frames[pid] {
				if x != 0 && users[x] > 1 {
					shared++
				}
			}
			want := pages - 64
			if pid == w.Pid {
				want -= 1024
			}
			t.Logf("pid %d: %d of %d pages of the region on frames other processes map too", pid, shared, pages)
			if shared < want {
				t.Errorf("pid %d: only %d of %d pages of the region are shared, want %d", pid, shared, pages, want)
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

// TestNegative_MemSharedVM: a process made with clone(CLONE_VM) without
// CLONE_THREAD shares its parent's address space: the dump refuses it
// (two processes would come back with one memory each), naming both pids,
// and the tree runs on (the two still share their memory).
func TestNegative_MemSharedVM(t *testing.T) {
	testutil.RequiresRoot(t)
	r := startCase(t, Case{Name: "m_sharedvm", Src: "m_sharedvm.c"})
	kids := descendants(r.Pid)
	if len(kids) != 1 {
		t.Fatalf("%d children, want 1", len(kids))
	}
	img := filepath.Join(t.TempDir(), "img")
	_, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img)
	requireExitCode(t, err, stderr, 1)
	requireNoPanic(t, stderr)
	if !strings.Contains(stderr, "address space") || !strings.Contains(stderr, strconv.Itoa(r.Pid)) || !strings.Contains(stderr, strconv.Itoa(kids[0])) {
		t.Errorf("dump error does not name the shared address space and both pids %d, %d:\n%s", r.Pid, kids[0], stderr)
	}
	requireRunningUntraced(t, r.Pid)
	finishChild(t, r)
}
