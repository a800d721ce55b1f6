package memory

import (
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Copy-on-write sharing between a parent and its forked child: a private
// anonymous page neither has written since the fork is one physical page
// mapped by both. The dump finds such pages (SharedWithParent) in VMAs
// the child inherited unchanged (CowEligible, CowSameVma); the restore
// fills the parent's VMA before it forks the child, so the child inherits
// the pages copy-on-write again instead of getting a copy of its own.

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

// CowAlone reports whether vmas[i] has no neighbour it could merge with
// when mapped on its own before them: an adjacent private anonymous VMA
// with the same protection, flags and name. Such a pair stays apart only
// through how it was made (restore keeps it apart, see staysApart), which
// mapping one of them early would undo.
func CowAlone(vmas []*imagepb.Vma, i int) bool {
	v := vmas[i]
	mergeable := func(n *imagepb.Vma) bool {
		switch n.Kind {
		case imagepb.VmaKind_VMA_ANON_PRIVATE, imagepb.VmaKind_VMA_HEAP, imagepb.VmaKind_VMA_STACK:
		default:
			return false
		}
		return !n.Shared && n.Prot == v.Prot && n.VmFlags == v.VmFlags
	}
	if i > 0 && vmas[i-1].End == v.Start && mergeable(vmas[i-1]) {
		return false
	}
	if i+1 < len(vmas) && vmas[i+1].Start == v.End && mergeable(vmas[i+1]) {
		return false
	}
	return true
}

func hasFlag(flags, f string) bool {
	for i := 0; i+len(f) <= len(flags); i += 3 {
		if flags[i:i+len(f)] == f && (i+len(f) == len(flags) || flags[i+len(f)] == ' ') {
			return true
		}
	}
	return false
}

// SharedWithParent returns the runs of pages of VMA v (the same range in
// both) that the child (pagemap child) maps to the same physical page as
// its parent (pagemap parent): present, anonymous, not the zero page, not
// mapped once only. The frame numbers are only visible to CAP_SYS_ADMIN;
// without them no page is found shared (each process keeps its copy).
func SharedWithParent(child, parent io.ReaderAt, v *imagepb.Vma) ([]*imagepb.PagemapEntry, error) {
	zf := loadZeroFrames()
	const window = 4096
	cw := make([]byte, 8*window)
	pw := make([]byte, 8*window)
	var runs []*imagepb.PagemapEntry
	for addr := v.Start; addr < v.End; {
		n := min((v.End-addr)/PageSize, window)
		off := int64(addr / PageSize * 8)
		if _, err := child.ReadAt(cw[:n*8], off); err != nil {
			return nil, fmt.Errorf("read child pagemap at %#x: %w", addr, err)
		}
		if _, err := parent.ReadAt(pw[:n*8], off); err != nil {
			return nil, fmt.Errorf("read parent pagemap at %#x: %w", addr, err)
		}
		for i := uint64(0); i < n; i++ {
			c := binary.LittleEndian.Uint64(cw[i*8:])
			p := binary.LittleEndian.Uint64(pw[i*8:])
			pfn := c & pmPfnMask
			same := c&pmPresent != 0 && p&pmPresent != 0 && c&(pmSwapped|pmFilePage|pmExclusive|pmGuard) == 0 &&
				pfn != 0 && pfn == p&pmPfnMask && !zf.zero(pfn)
			if !same {
				continue
			}
			pa := addr + i*PageSize
			if k := len(runs); k > 0 && runs[k-1].Vaddr+runs[k-1].NrPages*PageSize == pa {
				runs[k-1].NrPages++
				continue
			}
			runs = append(runs, &imagepb.PagemapEntry{Vaddr: pa, NrPages: 1})
		}
		addr += n * PageSize
	}
	return runs, nil
}

// SkipRuns is a Sink that passes to Next only the parts of each run outside
// the sorted, non-overlapping runs skip (pages the image holds elsewhere).
type SkipRuns struct {
	Next Sink
	Skip []*imagepb.PagemapEntry
	i    int // first run of Skip that may still matter (runs come in order)
	// Skipped counts the pages dropped.
	Skipped uint64
}

// WritePages implements Sink.
func (s *SkipRuns) WritePages(vaddr uint64, data []byte) error {
	end := vaddr + uint64(len(data))
	for vaddr < end {
		for s.i < len(s.Skip) && s.Skip[s.i].Vaddr+s.Skip[s.i].NrPages*PageSize <= vaddr {
			s.i++
		}
		if s.i == len(s.Skip) || s.Skip[s.i].Vaddr >= end {
			return s.Next.WritePages(vaddr, data)
		}
		r := s.Skip[s.i]
		if r.Vaddr > vaddr {
			n := r.Vaddr - vaddr
			if err := s.Next.WritePages(vaddr, data[:n]); err != nil {
				return err
			}
			vaddr, data = r.Vaddr, data[n:]
			continue
		}
		n := min(r.Vaddr+r.NrPages*PageSize, end) - vaddr
		s.Skipped += n / PageSize
		vaddr, data = vaddr+n, data[n:]
	}
	return nil
}
