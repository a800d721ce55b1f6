package tests

// Memory cases (tests/cases/m_*.c): VMA flags and protections, guard
// regions, hugetlb, the huge zero page and aio rings. Each checks its state
// from inside after the restores; the Verify hooks add what is better seen
// from outside.

import (
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
