package tests

// Memory cases (tests/cases/m_*.c): VMA flags and protections, guard
// regions, hugetlb, the huge zero page and aio rings. Each checks its state
// from inside after the restores; the Verify hooks add what is better seen
// from outside.

import (
	"os"
	"strings"
	"testing"
)

// TestCR_MemVmFlags: madvise flags (rr, sr, dc, dd, hg, nh, mg, wf and
// their undoing) and mprotect'ed protections of private and shared file
// mappings and of anonymous ones, with the VMAs they split, come back with
// the same maps lines and VmFlags; VM_MAYWRITE of shared file mappings
// (O_RDWR vs O_RDONLY fd) is kept.
func TestCR_MemVmFlags(t *testing.T) {
	runCase(t, Case{Name: "m_vmflags", Src: "m_vmflags.c"})
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
