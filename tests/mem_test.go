package tests

// Memory cases (tests/cases/m_*.c): VMA flags and protections, guard
// regions, hugetlb, the huge zero page and aio rings. Each checks its state
// from inside after the restores; the Verify hooks add what is better seen
// from outside.

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestCR_MemVmFlags: madvise flags (rr, sr, dc, dd, hg, nh, mg, wf and
// their undoing) and mprotect'ed protections of private and shared file
// mappings and of anonymous ones, with the VMAs they split, come back with
// the same maps lines and VmFlags; VM_MAYWRITE of shared file mappings
// (O_RDWR vs O_RDONLY fd) is kept.
func TestCR_MemVmFlags(t *testing.T) {
	runCase(t, Case{Name: "m_vmflags", Src: "m_vmflags.c"})
}

// TestCR_MemBigPages: 512 MiB of patterned pages (half THP) with sparse,
// zero, PROT_NONE, read-only and guarded regions and a forked child sharing
// pages copy-on-write come back exactly after two cycles: the dump moves
// the readable pages through pipes (vmsplice in the task, splice into the
// image) and the rest through its buffer, in one pages file.
func TestCR_MemBigPages(t *testing.T) {
	runCase(t, Case{Name: "m_bigpages", Src: "m_bigpages.c"})
}

// TestCR_MemHugeZeroPage: a 1 GiB MADV_HUGEPAGE region only read (the
// kernel's huge zero page) plus a few written pages gives a small image,
// and reads back zero with the written pages intact.
func TestCR_MemHugeZeroPage(t *testing.T) {
	requireHugeZeroPage(t)
	runCase(t, Case{
		Name: "m_hugezero", Src: "m_hugezero.c",
		Verify: func(t *testing.T, w *Run) {
			for _, img := range w.Images {
				if size := dirSize(t, img); size > 32<<20 {
					t.Errorf("image %s is %d MiB: the huge zero page was dumped as data", img, size>>20)
				}
			}
		},
	})
}

// requireHugeZeroPage skips unless THP may be used on madvise'd memory and
// read faults may map the huge zero page.
func requireHugeZeroPage(t *testing.T) {
	t.Helper()
	en, err1 := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	zp, err2 := os.ReadFile("/sys/kernel/mm/transparent_hugepage/use_zero_page")
	if err1 != nil || err2 != nil || strings.Contains(string(en), "[never]") || strings.TrimSpace(string(zp)) != "1" {
		t.Skipf("THP/huge zero page not in use here (enabled %q, use_zero_page %q)", strings.TrimSpace(string(en)), strings.TrimSpace(string(zp)))
	}
}

// dirSize is the total size of the regular files in dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

// TestCR_MemGuardPages: guard pages (MADV_GUARD_INSTALL) in anonymous and
// private file mappings, a VMA of guard pages only, and a VMA whose guard
// was removed again come back exactly (same guard pages, VmFlags "gu");
// guard pages still fault, their neighbours keep their contents.
func TestCR_MemGuardPages(t *testing.T) {
	runCase(t, Case{Name: "m_guard", Src: "m_guard.c"})
}

// TestCR_MemHugetlb: a private anonymous MAP_HUGETLB mapping comes back
// with its page size, flags and contents (huge pages reserved for the
// test through vm.nr_hugepages, restored afterwards).
func TestCR_MemHugetlb(t *testing.T) {
	reserveHugePages(t, 8)
	runCase(t, Case{Name: "m_hugetlb", Src: "m_hugetlb.c"})
}

// TestCR_MemHugetlbShared: a shared anonymous hugetlb mapping comes back
// as a shared object of huge pages, with its contents, beside a private
// one.
func TestCR_MemHugetlbShared(t *testing.T) {
	reserveHugePages(t, 12)
	t.Setenv("M_HUGETLB_SHARED", "1")
	runCase(t, Case{Name: "m_hugetlb_shared", Src: "m_hugetlb.c"})
}

// TestNegative_MemHugetlbFile: a hugetlbfs file mapping (here a
// memfd_create(MFD_HUGETLB)) is refused by name, and the process runs on
// unchanged.
func TestNegative_MemHugetlbFile(t *testing.T) {
	reserveHugePages(t, 8)
	t.Setenv("M_HUGETLB_MEMFD", "1")
	requireDumpRefused(t, Case{Name: "m_hugetlb_memfd", Src: "m_hugetlb.c"}, "MFD_HUGETLB")
}

// reserveHugePages raises vm.nr_hugepages (2 MiB pages) by n for the test
// and puts the old value back afterwards; it skips when the kernel cannot
// provide them.
func reserveHugePages(t *testing.T, n int) {
	t.Helper()
	testutil.RequiresRoot(t)
	const path = "/proc/sys/vm/nr_hugepages"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no hugetlb: %v", err)
	}
	old, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %q", path, b)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, []byte(strconv.Itoa(old)), 0); err != nil {
			t.Errorf("put %s back to %d: %v", path, old, err)
		}
	})
	if err := os.WriteFile(path, []byte(strconv.Itoa(old+n)), 0); err != nil {
		t.Skipf("reserve huge pages: %v", err)
	}
	b, _ = os.ReadFile(path)
	if got, _ := strconv.Atoi(strings.TrimSpace(string(b))); got < old+n {
		t.Skipf("the kernel gave %d huge pages, wanted %d", got, old+n)
	}
}

// requireDumpRefused starts c, requires its dump to fail with exit 1 and
// a message naming pid and kind, without panic and without a complete
// image, and the process to run on untraced and finish with PASS.
func requireDumpRefused(t *testing.T, c Case, kind string) {
	t.Helper()
	requireRefusedDump(t, c, func(t *testing.T, stderr string, pid int) {
		if !strings.Contains(stderr, kind) || !strings.Contains(stderr, strconv.Itoa(pid)) {
			t.Errorf("dump error does not name pid %d and %q:\n%s", pid, kind, stderr)
		}
	})
}

// TestNegative_MemAio: a process with an aio context is refused by name
// ("aio ring") and its context still works afterwards.
func TestNegative_MemAio(t *testing.T) {
	requireDumpRefused(t, Case{Name: "m_aio", Src: "m_aio.c"}, "aio ring")
}

// TestNegative_MemAioInFlight: an aio context with a request in flight
// (IOCB_CMD_POLL on an empty pipe) is refused by name, and the request is
// still pending afterwards and completes when the pipe gets data.
func TestNegative_MemAioInFlight(t *testing.T) {
	requireDumpRefused(t, Case{Name: "m_aio_inflight", Src: "m_aio.c", CFlags: []string{"-DPOLL_PENDING"}}, "aio ring")
}

// TestCR_MemBigFill: 48 MiB of private anonymous memory plus read-only
// and PROT_NONE regions with pages come back byte for byte. Restore fills
// the big region two ways at once (the task reads most of it from the
// image itself, ctr-cr writes the tail beside it with process_vm_writev)
// and the others through /proc/PID/mem: --print-stats shows the task's
// share below the whole.
func TestCR_MemBigFill(t *testing.T) {
	runCase(t, Case{
		Name: "m_bigfill", Src: "m_bigfill.c",
		RestoreArgs: []string{"--print-stats"},
		AfterRestore: func(t *testing.T, cycle int, stdout string) {
			m := statsLine(t, "restore", stdout)
			restored, _ := m["pages_restored"].(float64)
			taskRead, _ := m["pages_task_read"].(float64)
			if restored < (56<<20)/4096 || taskRead < (24<<20)/4096 || taskRead > restored-(16<<20)/4096 {
				t.Errorf("restore: %v pages restored, %v of them read by the task: want the task to read most of the big region and ctr-cr to write the rest", restored, taskRead)
			}
		},
	})
}
