// Package memory dumps and restores a task's address space: it classifies
// every VMA, decides which pages must be saved (present or swapped anonymous
// pages that are not the shared zero page; COWed pages of private file
// mappings; the contents of shared anonymous and memfd objects), streams them
// into the image with large reads into one reused buffer, and on restore
// rebuilds the mappings and writes the pages back.
package memory

import (
	"strings"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// PageSize is the only page size the engine handles (x86-64 base pages).
const PageSize = 4096

// Classify names the kind of a VMA from its /proc/PID/smaps entry.
func Classify(v *procfs.SmapsEntry) imagepb.VmaKind {
	switch v.Path {
	case "[vsyscall]":
		return imagepb.VmaKind_VMA_VSYSCALL
	case "[vdso]":
		return imagepb.VmaKind_VMA_VDSO
	case "[vvar]", "[vvar_vclock]":
		return imagepb.VmaKind_VMA_VVAR
	case "[heap]":
		return imagepb.VmaKind_VMA_HEAP
	case "[stack]":
		return imagepb.VmaKind_VMA_STACK
	}
	if v.Inode != 0 {
		switch {
		case strings.HasPrefix(v.Path, "/memfd:"):
			return imagepb.VmaKind_VMA_MEMFD
		case v.Shared && v.Deleted && (v.Path == "/dev/zero" || strings.HasPrefix(v.Path, "/dev/zero")):
			return imagepb.VmaKind_VMA_ANON_SHARED
		case v.Shared:
			return imagepb.VmaKind_VMA_FILE_SHARED
		default:
			return imagepb.VmaKind_VMA_FILE_PRIVATE
		}
	}
	if v.Shared {
		return imagepb.VmaKind_VMA_ANON_SHARED
	}
	return imagepb.VmaKind_VMA_ANON_PRIVATE
}

// Special reports kinds that are not rebuilt from pages: the kernel-provided
// vDSO/vvar (remapped with ARCH_MAP_VDSO_64) and vsyscall (fixed, untouchable).
func Special(k imagepb.VmaKind) bool {
	return k == imagepb.VmaKind_VMA_VDSO || k == imagepb.VmaKind_VMA_VVAR || k == imagepb.VmaKind_VMA_VSYSCALL
}

// privatePages reports kinds whose private pages are dumped through the
// task's pagemap.
func privatePages(v *imagepb.Vma) bool {
	if v.Shared || Special(v.Kind) {
		return false
	}
	return true
}

// Madvise maps smaps VmFlags that madvise can reproduce to the advice.
var Madvise = []struct {
	Flag   string
	Advice uint64
}{
	{"rr", 1},  // MADV_RANDOM
	{"sr", 2},  // MADV_SEQUENTIAL
	{"mg", 12}, // MADV_MERGEABLE (KSM)
	{"hg", 14}, // MADV_HUGEPAGE
	{"nh", 15}, // MADV_NOHUGEPAGE
	{"dd", 16}, // MADV_DONTDUMP
	{"dc", 10}, // MADV_DONTFORK
	{"wf", 18}, // MADV_WIPEONFORK
}
