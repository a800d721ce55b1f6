package memory

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Copy-on-write sharing between a parent and its forked child: a private
// anonymous page neither has written since the fork is one physical page
// mapped by both; once the parent writes its own, the children still
// share the old one among themselves. The dump finds such pages
// (ForkPages) in VMAs the children inherited unchanged (CowEligible,
// CowSameVma); the restore fills the parent's VMA with what the children
// had from the fork before it forks them, so they inherit the pages
// copy-on-write again instead of getting a copy each.

// pmExclusive is pagemap's PM_MMAP_EXCLUSIVE: the page is mapped once only.
const pmExclusive = 1 << 56

// CowEligible reports whether the pages of v may be restored shared with
// the parent: a private anonymous VMA (plain, heap or stack) that is
// writable (mapped with its final protection, no mprotect afterwards), has
// no guard pages and none of the flags that fork does not carry over as
// they are or that the restore sets up later: MADV_DONTFORK, WIPEONFORK,
// MAP_DROPPABLE, mseal, guard pages, hugetlb, mlock (which, made after
// the fork, would fault every page in for writing: a copy).
func CowEligible(v *imagepb.Vma) bool {
	switch v.Kind {
	case imagepb.VmaKind_VMA_ANON_PRIVATE, imagepb.VmaKind_VMA_HEAP, imagepb.VmaKind_VMA_STACK:
	default:
		return false
	}
	if v.Shared || v.Prot&unix.PROT_WRITE == 0 || len(v.GuardRegions) > 0 || v.HugetlbPageSize != 0 {
		return false
	}
	for _, f := range []string{"dc", "wf", "dp", "sl", "gu", "ht", "lo", "lf"} {
		if hasFlag(v.VmFlags, f) {
			return false
		}
	}
	return true
}

// CowSameVma reports whether child VMA c is the parent's VMA p as fork
// copied it: same range, kind, protection, flags and name.
func CowSameVma(p, c *imagepb.Vma) bool {
	return p.Start == c.Start && p.End == c.End && p.Kind == c.Kind && p.Prot == c.Prot &&
		p.VmFlags == c.VmFlags && p.Name == c.Name && p.Growsdown == c.Growsdown && p.Account == c.Account && !p.Shared && !c.Shared
}

func hasFlag(flags, f string) bool {
	for i := 0; i+len(f) <= len(flags); i += 3 {
		if flags[i:i+len(f)] == f && (i+len(f) == len(flags) || flags[i+len(f)] == ' ') {
			return true
		}
	}
	return false
}

// BaseRun is a run of pages that a parent's children share among
// themselves but the parent no longer has (it wrote its own copy after
// forking them): the parent must hold child Kid's page there while it
// forks them, and its own afterwards.
type BaseRun struct {
	Vaddr, NrPages uint64
	Kid            int
}

// ForkPages finds, in VMA v (the same range in the parent, pagemap
// parent, and in each child, pagemaps kids), the page each child still
// has from the fork: for each page, the parent's frame if a child maps it,
// else the frame most children map if at least two do. It returns, per
// child, the runs of pages that are that frame (kidRuns) and the runs
// where the frame is not the parent's (base, with a child that maps it).
// Where the parent's own page is one it shares with its own parent
// (parentShared, its cow_parent_runs, ascending), only that page counts:
// it must keep it. Frames are only visible to CAP_SYS_ADMIN: without them
// nothing is found.
func ForkPages(parent io.ReaderAt, kids []io.ReaderAt, v *imagepb.Vma, parentShared []*imagepb.PagemapEntry) (kidRuns [][]*imagepb.PagemapEntry, base []BaseRun, err error) {
	zf := loadZeroFrames()
	frame := func(e uint64) uint64 {
		pfn := e & pmPfnMask
		if e&pmPresent == 0 || e&(pmSwapped|pmFilePage|pmExclusive|pmGuard) != 0 || zf.zero(pfn) {
			return 0
		}
		return pfn
	}
	const window = 4096
	pw := make([]byte, 8*window)
	kw := make([][]byte, len(kids))
	for k := range kw {
		kw[k] = make([]byte, 8*window)
	}
	kidRuns = make([][]*imagepb.PagemapEntry, len(kids))
	frames := make([]uint64, len(kids))
	for addr := v.Start; addr < v.End; {
		n := min((v.End-addr)/PageSize, window)
		off := int64(addr / PageSize * 8)
		if _, err := parent.ReadAt(pw[:n*8], off); err != nil {
			return nil, nil, fmt.Errorf("read the parent's pagemap at %#x: %w", addr, err)
		}
		for k, r := range kids {
			if _, err := r.ReadAt(kw[k][:n*8], off); err != nil {
				return nil, nil, fmt.Errorf("read child %d's pagemap at %#x: %w", k, addr, err)
			}
		}
		for i := uint64(0); i < n; i++ {
			pa := addr + i*PageSize
			for k := range kids {
				frames[k] = frame(binary.LittleEndian.Uint64(kw[k][i*8:]))
			}
			for len(parentShared) > 0 && parentShared[0].Vaddr+parentShared[0].NrPages*PageSize <= pa {
				parentShared = parentShared[1:]
			}
			f, kid := forkFrame(frame(binary.LittleEndian.Uint64(pw[i*8:])), frames)
			if f == 0 || kid >= 0 && len(parentShared) > 0 && parentShared[0].Vaddr <= pa {
				continue
			}
			for k, g := range frames {
				if g == f {
					kidRuns[k] = addPage(kidRuns[k], pa)
				}
			}
			if kid >= 0 {
				if b := len(base); b > 0 && base[b-1].Kid == kid && base[b-1].Vaddr+base[b-1].NrPages*PageSize == pa {
					base[b-1].NrPages++
				} else {
					base = append(base, BaseRun{Vaddr: pa, NrPages: 1, Kid: kid})
				}
			}
		}
		addr += n * PageSize
	}
	return kidRuns, base, nil
}

// forkFrame picks the frame of one page the children had from the fork:
// the parent's (p) if a child maps it (kid -1), else the frame mapped by
// the most children, at least two (kid: the first of them); 0 if none.
func forkFrame(p uint64, frames []uint64) (f uint64, kid int) {
	if p != 0 && slices.Contains(frames, p) {
		return p, -1
	}
	best, bestN, bestK := uint64(0), 1, -1
	for k, g := range frames {
		if g == 0 || g == best || slices.Index(frames, g) < k {
			continue // none, or counted from its first child already
		}
		n := 0
		for _, h := range frames[k:] {
			if h == g {
				n++
			}
		}
		if n > bestN {
			best, bestN, bestK = g, n, k
		}
	}
	return best, bestK
}

// addPage appends the page at pa to runs, extending the last run.
func addPage(runs []*imagepb.PagemapEntry, pa uint64) []*imagepb.PagemapEntry {
	if k := len(runs); k > 0 && runs[k-1].Vaddr+runs[k-1].NrPages*PageSize == pa {
		runs[k-1].NrPages++
		return runs
	}
	return append(runs, &imagepb.PagemapEntry{Vaddr: pa, NrPages: 1})
}

// skip reports whether the page at pa is in r.Skip; pages are asked for
// in ascending order, so the runs before pa are dropped as it goes.
func (r *Reader) skip(pa uint64) bool {
	for len(r.Skip) > 0 && r.Skip[0].Vaddr+r.Skip[0].NrPages*PageSize <= pa {
		r.Skip = r.Skip[1:]
	}
	return len(r.Skip) > 0 && r.Skip[0].Vaddr <= pa
}
