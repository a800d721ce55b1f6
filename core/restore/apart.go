package restore

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

// Two adjacent private anonymous VMAs with the same protection and flags
// are one VMA unless the kernel could not merge them (e.g. one was moved
// there with mremap, as glibc's realloc does: its page offset and anon_vma
// differ). Mapped in place one after the other they would merge, and the
// process would come back with one VMA where it had two. Such a VMA is
// mapped elsewhere, given an anon_vma by writing one byte, moved into
// place with mremap (which keeps the page offset of a faulted VMA) and its
// page dropped again: it then keeps apart from its neighbour as the
// original did.

// staysApart reports whether v must be kept from merging with prev, the
// VMA mapped before it.
func staysApart(prev, v *imagepb.Vma) bool {
	if prev == nil || prev.End != v.Start || !apartKind(prev) || !apartKind(v) {
		return false
	}
	return prev.Prot == v.Prot && prev.VmFlags == v.VmFlags && anonLabel(prev.Name) == anonLabel(v.Name)
}

// apartKind: a private anonymous VMA that the trick can place (it is
// mapped writable first: writable or VM_ACCOUNT ones only, so that the
// accounting comes out as the original's).
func apartKind(v *imagepb.Vma) bool {
	switch v.Kind {
	case imagepb.VmaKind_VMA_ANON_PRIVATE, imagepb.VmaKind_VMA_HEAP:
	default:
		return false
	}
	return !v.Shared && !v.Growsdown && (v.Prot&unix.PROT_WRITE != 0 || v.Account)
}

// anonLabel is what keeps anonymous VMAs apart by name: a
// PR_SET_VMA_ANON_NAME label; "[heap]" is only a position.
func anonLabel(name string) string {
	if strings.HasPrefix(name, "[anon:") {
		return name
	}
	return ""
}

// mapApart maps the VMAs of apart (see above) and adds their madvise flags;
// it returns those that must still be mprotect'ed once their pages are in.
func (r *restorer) mapApart(apart []*imagepb.Vma) ([]*imagepb.Vma, error) {
	if len(apart) == 0 {
		return nil, nil
	}
	temps := make([]uint64, len(apart))
	b := r.batch(0)
	for i, v := range apart {
		tmp, ok := freeRange(r.pr.mm.Vmas, v.End-v.Start, [][2]uint64{{r.ctl, r.ctl + ctlSize}})
		if !ok {
			return nil, fmt.Errorf("vma %#x-%#x: no free range to place it from", v.Start, v.End)
		}
		temps[i] = tmp
		b.add(fmt.Sprintf("vma %#x-%#x: mmap at %#x", v.Start, v.End, tmp), unix.SYS_MMAP, tmp, v.End-v.Start,
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uint64(0), 0)
		// one at a time: the next one may use the same free range
		if _, err := b.run(); err != nil {
			return nil, err
		}
		if err := r.mem.WriteAt([]byte{0}, tmp); err != nil {
			return nil, fmt.Errorf("vma %#x-%#x: fault in at %#x: %w", v.Start, v.End, tmp, err)
		}
		const mremapMaymove, mremapFixed = 1, 2
		b = r.batch(0)
		b.add(fmt.Sprintf("vma %#x-%#x: mremap from %#x", v.Start, v.End, tmp), unix.SYS_MREMAP, tmp, v.End-v.Start, v.End-v.Start, mremapMaymove|mremapFixed, v.Start)
		b.add(fmt.Sprintf("vma %#x-%#x: madvise DONTNEED", v.Start, v.End), unix.SYS_MADVISE, v.Start, memory.PageSize, unix.MADV_DONTNEED)
		addMadvise(b, v)
	}
	if _, err := b.run(); err != nil {
		return nil, err
	}
	var protect []*imagepb.Vma
	for _, v := range apart {
		if v.Prot != unix.PROT_READ|unix.PROT_WRITE {
			protect = append(protect, v)
		}
	}
	return protect, nil
}

// freeRange returns the start of a page-aligned range of size bytes that
// no VMA of vmas (sorted) and no range of avoid overlaps, in the lower half
// of the user address space.
func freeRange(vmas []*imagepb.Vma, size uint64, avoid [][2]uint64) (uint64, bool) {
	const lo, hi = 1 << 20, 1 << 46
	busy := make([][2]uint64, 0, len(vmas)+len(avoid))
	for _, v := range vmas {
		busy = append(busy, [2]uint64{v.Start, v.End})
	}
	busy = append(busy, avoid...)
	for start := uint64(lo); start+size <= hi; {
		clash := false
		for _, b := range busy {
			if start < b[1] && b[0] < start+size {
				start = (b[1] + memory.PageSize - 1) &^ (memory.PageSize - 1)
				clash = true
				break
			}
		}
		if !clash {
			return start, true
		}
	}
	return 0, false
}
