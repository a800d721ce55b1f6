package dump

import (
	"fmt"
	"io"
	"os"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

// findCowShared records, for every live process of the tree whose parent
// is in the tree too, the pages it still has from the fork
// (mm.cow_parent_runs; memory.ForkPages): in each VMA it inherited
// unchanged, the pages whose frame is its parent's at the same address,
// or, where the parent has written its own since, the frame its siblings
// share. Those pages are not read into its pages file (Reader.Skip); the
// latter are saved once, in the parent's pages-cowbase-PID.img, from one
// of the children. The restore gives them back shared. Runs with the whole
// tree seized, before any page is read, so the frames cannot change in
// between.
func (d *dumper) findCowShared() error {
	// parents before their children: a parent's own cow_parent_runs
	// bound what its children may share (memory.ForkPages)
	done := map[*task]bool{}
	for len(done) < len(d.tasks) {
		progress := false
		for _, p := range d.tasks {
			if done[p] {
				continue
			}
			if pp := parentOf(d.tasks, p); pp != nil && !done[pp] {
				continue
			}
			done[p], progress = true, true
			if err := d.findCowChildren(p); err != nil {
				return err
			}
		}
		if !progress {
			return fmt.Errorf("process tree has a cycle")
		}
	}
	return nil
}

// findCowChildren finds what p's live children still have from the fork.
func (d *dumper) findCowChildren(p *task) error {
	if p.zombie || p.mm == nil {
		return nil
	}
	var kids []*task
	for _, t := range d.tasks {
		if t != p && t.ppid == p.pid && !t.zombie && t.mm != nil {
			kids = append(kids, t)
		}
	}
	if len(kids) == 0 {
		return nil
	}
	if err := d.findCowFamily(p, kids); err != nil {
		return fmt.Errorf("pid %d: memory shared with its children: %w", p.pid, err)
	}
	return nil
}

// cowFamily holds the files findCowFamily reads and writes.
type cowFamily struct {
	files []*os.File          // opened pagemaps and mems, closed at the end
	pm    map[int]io.ReaderAt // pagemap by pid
	base  *image.PagesWriter  // pages-cowbase-PID.img, made at the first base run
	buf   []byte
}

func (f *cowFamily) open(path string) (*os.File, error) {
	o, err := os.Open(path)
	if err == nil {
		f.files = append(f.files, o)
	}
	return o, err
}

func (f *cowFamily) pagemap(pid int) (io.ReaderAt, error) {
	if r, ok := f.pm[pid]; ok {
		return r, nil
	}
	o, err := f.open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	f.pm[pid] = o
	return o, nil
}

func (f *cowFamily) close() {
	for _, o := range f.files {
		o.Close()
	}
}

// findCowFamily finds what p's children kids still have from the fork, VMA
// by VMA of p.
func (d *dumper) findCowFamily(p *task, kids []*task) (err error) {
	fam := &cowFamily{pm: map[int]io.ReaderAt{}}
	defer fam.close()
	defer func() {
		if fam.base != nil {
			if cerr := fam.base.Close(); err == nil {
				err = cerr
			}
		}
	}()
	pv := p.mm.Vmas
	next := make([]int, len(kids)) // per kid: its first VMA not yet passed
	for _, v := range pv {
		if !memory.CowEligible(v) {
			continue
		}
		var members []*task
		var readers []io.ReaderAt
		for k, t := range kids {
			kv := t.mm.Vmas
			for next[k] < len(kv) && kv[next[k]].Start < v.Start {
				next[k]++
			}
			i := next[k]
			if i == len(kv) || kv[i].NoPages || !memory.CowSameVma(v, kv[i]) {
				continue
			}
			r, err := fam.pagemap(t.pid)
			if err != nil {
				return err
			}
			members, readers = append(members, t), append(readers, r)
		}
		if len(members) == 0 {
			continue
		}
		ppm, err := fam.pagemap(p.pid)
		if err != nil {
			return err
		}
		runs, base, err := memory.ForkPages(ppm, readers, v, p.mm.CowParentRuns)
		if err != nil {
			return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
		}
		for k, t := range members {
			t.mm.CowParentRuns = append(t.mm.CowParentRuns, runs[k]...)
		}
		if err := d.saveCowBase(fam, p, members, base); err != nil {
			return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
		}
	}
	return nil
}

// saveCowBase writes the pages of base (the children's shared pages that
// p no longer has), read from the child each names, to p's
// pages-cowbase-PID.img.
func (d *dumper) saveCowBase(fam *cowFamily, p *task, members []*task, base []memory.BaseRun) error {
	if len(base) == 0 {
		return nil
	}
	if fam.base == nil {
		w, err := d.w.CreatePages(cowBaseName(p.pid))
		if err != nil {
			return err
		}
		fam.base = w
		fam.buf = make([]byte, 1<<20)
	}
	mems := map[int]*os.File{}
	for _, b := range base {
		t := members[b.Kid]
		m := mems[t.pid]
		if m == nil {
			var err error
			if m, err = fam.open(fmt.Sprintf("/proc/%d/mem", t.pid)); err != nil {
				return err
			}
			mems[t.pid] = m
		}
		addr, end := b.Vaddr, b.Vaddr+b.NrPages*memory.PageSize
		for addr < end {
			n := min(end-addr, uint64(len(fam.buf)))
			if _, err := m.ReadAt(fam.buf[:n], int64(addr)); err != nil {
				return fmt.Errorf("read pid %d memory at %#x: %w", t.pid, addr, err)
			}
			if err := fam.base.WritePages(addr, fam.buf[:n]); err != nil {
				return err
			}
			addr += n
		}
	}
	return nil
}

// cowBaseName is the <name> of the pages file holding the pages p's
// children share that p has no longer.
func cowBaseName(pid int) string { return fmt.Sprintf("cowbase-%d", pid) }

// kcmpVM compares address spaces (KCMP_VM).
const kcmpVM = 1

// refuseSharedMm refuses two processes of the tree that share one address
// space (clone with CLONE_VM but not CLONE_THREAD, e.g. a vfork child):
// each would come back with an address space of its own, no longer
// seeing the other's writes. Checked first, before any syscall is
// injected: an injection in one of them changes the other's memory too.
func (d *dumper) refuseSharedMm() error {
	ids := sharedIDs(d.tasks, kcmpVM)
	first := map[uint32]int{}
	for _, t := range d.tasks {
		if t.zombie {
			continue
		}
		id := ids[t.pid]
		if other, ok := first[id]; ok {
			return fmt.Errorf("pid %d: shares its address space with pid %d (a process made with CLONE_VM but not CLONE_THREAD, e.g. by vfork): not supported", t.pid, other)
		}
		first[id] = t.pid
	}
	return nil
}
