package restore

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

// Copy-on-write sharing with the parent (mm.cow_parent_runs): the pages a
// child shared with its parent at the dump are only in the parent's
// image. Every process of the tree is forked from its parent's stub; the
// VMAs holding such pages ("early" VMAs) are mapped and filled in the
// parent right after it is created, before it forks anything, so that its
// children inherit them copy-on-write as the originals had. A child then
// drops what it must not have (the early VMAs it does not keep, the
// parent's pages where it has none) and writes its own pages over the
// rest. Everything else of the memory is restored later, as without
// sharing (restoreMemory skips the early VMAs).

// cowState is a process's part in that plan.
type cowState struct {
	// keep: its VMAs (by start) holding pages shared with its parent.
	keep map[uint64]*imagepb.Vma
	// shared: cow_parent_runs, ascending.
	shared []*imagepb.PagemapEntry
	// early: the VMAs mapped and filled before it forks, ascending: those
	// it keeps and those its children keep.
	early []*imagepb.Vma
	// base: pages its children share that it no longer has
	// (pages-cowbase-PID.img): it holds them while it forks the children,
	// its own afterwards (finishCowBases).
	base []*imagepb.PagemapEntry
	// staged: early is in place in the task.
	staged bool
}

// planCow checks every process's cow_parent_runs against its VMAs and its
// parent's and builds the plan: a run must lie in one VMA that the
// process inherited unchanged from its parent (same range, protection,
// flags) and that may be mapped early (memory.CowEligible).
func (t *tree) planCow() error {
	t.cow = map[int32]*cowState{}
	byPid := map[int32]*proc{}
	for _, p := range t.procs {
		byPid[p.pst.Pid] = p
	}
	state := func(pid int32) *cowState {
		s := t.cow[pid]
		if s == nil {
			s = &cowState{keep: map[uint64]*imagepb.Vma{}}
			t.cow[pid] = s
		}
		return s
	}
	for _, c := range t.procs {
		if c.mm == nil || len(c.mm.CowParentRuns) == 0 {
			continue
		}
		pid := c.pst.Pid
		bad := func(format string, args ...any) error {
			return fmt.Errorf("mm-%d.img: pages shared with the parent: %w: %s", pid, image.ErrCorrupt, fmt.Sprintf(format, args...))
		}
		p := byPid[c.pst.Ppid]
		if p == nil || p.mm == nil || p == c {
			return bad("parent %d is not a live process of the image", c.pst.Ppid)
		}
		cs, ps := state(pid), state(p.pst.Pid)
		var prevEnd uint64
		for _, run := range c.mm.CowParentRuns {
			if run.NrPages == 0 || run.NrPages > 1<<36 || run.Vaddr%memory.PageSize != 0 || run.Vaddr >= 1<<57 || run.Vaddr < prevEnd {
				return bad("run %#x+%d pages: not page-aligned, empty, or out of order", run.Vaddr, run.NrPages)
			}
			end := run.Vaddr + run.NrPages*memory.PageSize
			prevEnd = end
			i := vmaIndex(c.mm.Vmas, run.Vaddr)
			if i < 0 || end > c.mm.Vmas[i].End {
				return bad("run %#x+%d pages is not inside one VMA", run.Vaddr, run.NrPages)
			}
			v := c.mm.Vmas[i]
			j := vmaIndex(p.mm.Vmas, v.Start)
			if !memory.CowEligible(v) || j < 0 || !memory.CowSameVma(p.mm.Vmas[j], v) {
				return bad("run %#x+%d pages: its VMA %#x-%#x is not one inherited unchanged from parent %d", run.Vaddr, run.NrPages, v.Start, v.End, p.pst.Pid)
			}
			cs.shared = append(cs.shared, run)
			if cs.keep[v.Start] == nil {
				cs.keep[v.Start] = v
				cs.early = addEarly(cs.early, v)
			}
			ps.early = addEarly(ps.early, p.mm.Vmas[j])
		}
	}
	return t.planCowBases()
}

// cowBaseName is the <name> of the pages file of pid's cowbase pages.
func cowBaseName(pid int32) string { return fmt.Sprintf("cowbase-%d", pid) }

// planCowBases loads each process's cowbase pagemap: its runs must lie in
// VMAs that its children keep (early ones).
func (t *tree) planCowBases() error {
	if t.img == nil {
		return nil
	}
	for _, p := range t.procs {
		name := cowBaseName(p.pst.Pid)
		if !t.img.Has("pagemap-" + name + ".img") {
			continue
		}
		_, runs, err := t.img.Pagemap(name)
		if err != nil {
			return err
		}
		st := t.cow[p.pst.Pid]
		var prevEnd uint64
		for _, run := range runs {
			if run.Vaddr < prevEnd {
				return fmt.Errorf("pagemap-%s.img: %w: runs out of order at %#x", name, image.ErrCorrupt, run.Vaddr)
			}
			prevEnd = run.Vaddr + run.NrPages*memory.PageSize
			if st == nil || p.mm == nil || !covered(st.early, run) {
				return fmt.Errorf("pagemap-%s.img: %w: run %#x+%d pages is not in VMAs its children share", name, image.ErrCorrupt, run.Vaddr, run.NrPages)
			}
		}
		if st != nil && runsOverlap(runs, st.shared) {
			// it would lose the page it keeps from its own parent
			return fmt.Errorf("pagemap-%s.img: %w: runs over pages it shares with its parent", name, image.ErrCorrupt)
		}
		if st != nil {
			st.base = runs
		}
	}
	return nil
}

// runsOverlap reports whether a page is in both a and b (each ascending).
func runsOverlap(a, b []*imagepb.PagemapEntry) bool {
	for i, j := 0, 0; i < len(a) && j < len(b); {
		ae, be := a[i].Vaddr+a[i].NrPages*memory.PageSize, b[j].Vaddr+b[j].NrPages*memory.PageSize
		if a[i].Vaddr < be && b[j].Vaddr < ae {
			return true
		}
		if ae <= be {
			i++
		} else {
			j++
		}
	}
	return false
}

// covered reports whether run lies in the VMAs of vmas (sorted, maybe one
// after the other).
func covered(vmas []*imagepb.Vma, run *imagepb.PagemapEntry) bool {
	if run.NrPages == 0 || run.NrPages > 1<<36 || run.Vaddr >= 1<<57 {
		return false
	}
	pos, end := run.Vaddr, run.Vaddr+run.NrPages*memory.PageSize
	for pos < end {
		i := vmaIndex(vmas, pos)
		if i < 0 {
			return false
		}
		pos = vmas[i].End
	}
	return true
}

// finishCowBases gives every process with cowbase pages, once all its
// children are forked, its own pages there: the children keep the ones
// they share.
func (t *tree) finishCowBases() error {
	for _, r := range t.tasks {
		if r.cow == nil || len(r.cow.base) == 0 || r.exited {
			continue
		}
		b := r.batch(0)
		for _, run := range r.cow.base {
			b.add(fmt.Sprintf("drop the children's pages %#x+%d", run.Vaddr, run.NrPages), unix.SYS_MADVISE, run.Vaddr, run.NrPages*memory.PageSize, unix.MADV_DONTNEED)
		}
		if _, err := b.run(); err != nil {
			return fmt.Errorf("pid %d: %w", r.pr.pst.Pid, err)
		}
		for _, run := range r.cow.base {
			if _, err := fillRange(r.mem, r.pr.pmap, r.pr.pages.Raw(), run.Vaddr, run.Vaddr+run.NrPages*memory.PageSize); err != nil {
				return fmt.Errorf("pid %d: %w", r.pr.pst.Pid, err)
			}
		}
	}
	return nil
}

// fillCowBase writes r's cowbase pages (what its children share) into
// its early VMAs, checking the file's checksum.
func (r *restorer) fillCowBase() error {
	if len(r.cow.base) == 0 {
		return nil
	}
	name := cowBaseName(r.pr.pst.Pid)
	pages, err := r.img.OpenPages(name)
	if err != nil {
		return err
	}
	defer pages.Close()
	if _, err := memory.Fill(memAt{r.mem}, r.cow.base, pages); err != nil {
		return fmt.Errorf("pages-%s.img: %w", name, err)
	}
	return pages.Verify()
}

// vmaIndex returns the index of the VMA of vmas (sorted) containing addr,
// or -1.
func vmaIndex(vmas []*imagepb.Vma, addr uint64) int {
	i, _ := slices.BinarySearchFunc(vmas, addr, func(v *imagepb.Vma, a uint64) int {
		switch {
		case v.End <= a:
			return -1
		case v.Start > a:
			return 1
		}
		return 0
	})
	if i < len(vmas) && vmas[i].Start <= addr && addr < vmas[i].End {
		return i
	}
	return -1
}

// addEarly adds v to the ascending list early once.
func addEarly(early []*imagepb.Vma, v *imagepb.Vma) []*imagepb.Vma {
	i, found := slices.BinarySearchFunc(early, v.Start, func(e *imagepb.Vma, s uint64) int {
		return cmp.Compare(e.Start, s)
	})
	if found {
		return early
	}
	return slices.Insert(early, i, v)
}

// stageCow puts r's early VMAs in place right after r was created by a
// fork from the task from (nil for the root), which it copied: the early
// VMAs of from that r keeps from its parent stay (when from is its parent
// or has its parent's memory), the others are unmapped; the missing ones
// are mapped; then every early VMA gets r's contents.
func (t *tree) stageCow(r, from *restorer, fromParentMemory bool) error {
	if r.pr.core == nil || r.pr.mm == nil {
		return nil // a zombie: exits with what it inherited
	}
	st := t.cow[r.pr.pst.Pid]
	var inherited []*imagepb.Vma
	if from != nil && from.cow != nil && from.cow.staged {
		inherited = from.cow.early
	}
	if st == nil && len(inherited) == 0 {
		return nil
	}
	kept := map[uint64]bool{}
	b := r.batch(0)
	for _, v := range inherited {
		if st != nil && fromParentMemory && st.keep[v.Start] != nil {
			kept[v.Start] = true
			continue
		}
		b.add(fmt.Sprintf("vma %#x-%#x: munmap the parent's early copy", v.Start, v.End), unix.SYS_MUNMAP, v.Start, v.End-v.Start)
	}
	if st == nil {
		_, err := b.run()
		return err
	}
	var apart []*imagepb.Vma
	for i, v := range st.early {
		switch {
		case kept[v.Start]:
			// the parent's pages where r has none of its own or shared
			zapOutside(b, v, st.shared)
		case i > 0 && staysApart(st.early[i-1], v):
			// next to another early VMA it must not merge with
			apart = append(apart, v)
		default:
			if _, err := r.mapVma(b, v, nil); err != nil {
				return fmt.Errorf("vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
			}
		}
	}
	if _, err := b.run(); err != nil {
		return err
	}
	protect, err := r.mapApart(apart)
	if err != nil {
		return err
	}
	if len(protect) > 0 {
		pb := r.batch(0)
		for _, v := range protect {
			pb.add(fmt.Sprintf("vma %#x-%#x: mprotect", v.Start, v.End), unix.SYS_MPROTECT, v.Start, v.End-v.Start, uint64(v.Prot))
		}
		if _, err := pb.run(); err != nil {
			return err
		}
	}
	r.cow = st
	for _, v := range st.early {
		if st.keep[v.Start] != nil && !kept[v.Start] {
			// forked from a task without the parent's memory: a copy
			if err := r.copyFromParent(v, st.shared); err != nil {
				return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
			}
		}
		// (counted in PagesRestored by restoreMemory's pass)
		if _, err := fillRange(r.mem, r.pr.pmap, r.pr.pages.Raw(), v.Start, v.End); err != nil {
			return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
		}
	}
	if err := r.fillCowBase(); err != nil {
		return err
	}
	st.staged = true
	return nil
}

// zapOutside adds to b the MADV_DONTNEED of every part of v outside the
// runs shared (ascending): those pages of the parent are not r's (r has
// its own there, written next, or none).
func zapOutside(b *callBatch, v *imagepb.Vma, shared []*imagepb.PagemapEntry) {
	pos := v.Start
	zap := func(end uint64) {
		if end > pos {
			b.add(fmt.Sprintf("vma %#x-%#x: drop the parent's pages %#x-%#x", v.Start, v.End, pos, end), unix.SYS_MADVISE, pos, end-pos, unix.MADV_DONTNEED)
		}
	}
	for _, s := range shared {
		end := s.Vaddr + s.NrPages*memory.PageSize
		if end <= v.Start || s.Vaddr >= v.End {
			continue
		}
		zap(max(s.Vaddr, v.Start))
		pos = min(end, v.End)
	}
	zap(v.End)
}

// pageWriter is where staged pages go: the task's /proc/PID/mem.
type pageWriter interface {
	WriteAt(b []byte, addr uint64) error
}

// fillRange writes the pages of the image runs pmap (whose contents follow
// each other in pages) that lie in [lo, hi) to dst, and returns how many.
func fillRange(dst pageWriter, pmap []*imagepb.PagemapEntry, pages io.ReaderAt, lo, hi uint64) (uint64, error) {
	const chunk = 4 << 20
	var buf []byte
	var off, total uint64
	for _, e := range pmap {
		size := e.NrPages * memory.PageSize
		start, end := max(e.Vaddr, lo), min(e.Vaddr+size, hi)
		for a := start; a < end; {
			n := min(end-a, chunk)
			if buf == nil {
				buf = make([]byte, chunk)
			}
			b := buf[:n]
			if _, err := pages.ReadAt(b, int64(off+a-e.Vaddr)); err != nil {
				return total, fmt.Errorf("read pages at offset %d: %w", off+a-e.Vaddr, err)
			}
			if err := dst.WriteAt(b, a); err != nil {
				return total, fmt.Errorf("write %d bytes at %#x: %w", n, a, err)
			}
			total += n / memory.PageSize
			a += n
		}
		off += size
	}
	return total, nil
}

// copyFromParent copies the runs shared (ascending) that lie in v from
// the parent's memory, already staged, into r's.
func (r *restorer) copyFromParent(v *imagepb.Vma, shared []*imagepb.PagemapEntry) error {
	p := r.parent
	if p == nil || p.cow == nil || !p.cow.staged || p.mem == nil {
		return fmt.Errorf("the parent's memory is not in place to copy the shared pages from")
	}
	const chunk = 4 << 20
	buf := make([]byte, chunk)
	for _, s := range shared {
		start, end := max(s.Vaddr, v.Start), min(s.Vaddr+s.NrPages*memory.PageSize, v.End)
		for a := start; a < end; {
			n := min(end-a, chunk)
			if err := p.mem.ReadAt(buf[:n], a); err != nil {
				return fmt.Errorf("read the parent's page at %#x: %w", a, err)
			}
			if err := r.mem.WriteAt(buf[:n], a); err != nil {
				return err
			}
			a += n
		}
	}
	return nil
}

// isEarly reports whether v was mapped and filled by stageCow.
func (s *cowState) isEarly(v *imagepb.Vma) bool {
	if s == nil || !s.staged {
		return false
	}
	_, found := slices.BinarySearchFunc(s.early, v.Start, func(e *imagepb.Vma, a uint64) int { return cmp.Compare(e.Start, a) })
	return found
}

// mergesIntoNext reports whether vmas[i], mapped in place, would merge
// with the next VMA, already there because it was mapped early: it must
// then be kept apart (mapApart), as the original was.
func (s *cowState) mergesIntoNext(vmas []*imagepb.Vma, i int) bool {
	return i+1 < len(vmas) && s.isEarly(vmas[i+1]) && staysApart(vmas[i], vmas[i+1])
}

// fillDst is where a pass over the pages in file order goes (lazy.go's
// fill of what cannot come lazily): dst, minus the early VMAs, whose pages
// are in place already (the pass still reads them, for the checksum).
func (r *restorer) fillDst(dst io.WriterAt) io.WriterAt {
	if r.cow == nil || !r.cow.staged || len(r.cow.early) == 0 {
		return dst
	}
	return skipEarly{dst, r.cow.early}
}

// skipEarly drops the parts of writes that fall in early VMAs.
type skipEarly struct {
	next  io.WriterAt
	early []*imagepb.Vma // ascending
}

func (s skipEarly) WriteAt(b []byte, off int64) (int, error) {
	size := len(b)
	addr := uint64(off)
	for _, v := range s.early {
		end := addr + uint64(len(b))
		if addr >= end {
			break
		}
		if v.End <= addr || v.Start >= end {
			continue
		}
		if v.Start > addr {
			n := v.Start - addr
			if _, err := s.next.WriteAt(b[:n], int64(addr)); err != nil {
				return 0, err
			}
			b, addr = b[n:], v.Start
		}
		n := min(v.End, end) - addr
		b, addr = b[n:], addr+n
	}
	if len(b) > 0 {
		if _, err := s.next.WriteAt(b, int64(addr)); err != nil {
			return 0, err
		}
	}
	return size, nil
}
