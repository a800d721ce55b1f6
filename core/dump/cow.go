package dump

import (
	"fmt"
	"os"

	"github.com/ctr-cr/ctr-cr/core/memory"
)

// findCowShared records, for every live process of the tree whose parent
// is in the tree too, the pages it still shares copy-on-write with that
// parent (mm.cow_parent_runs): in each VMA it inherited unchanged, the
// pages whose frame is the parent's at the same address. Those pages are
// left out of its pages file (cowSink); the restore puts them back shared.
// Runs in the whole tree, seized, before any page is read, so the frames
// cannot change in between.
func (d *dumper) findCowShared() error {
	for _, t := range d.tasks {
		if t.zombie || t.mm == nil {
			continue
		}
		p := parentOf(d.tasks, t)
		if p == nil || p.zombie || p.mm == nil {
			continue
		}
		if err := findCowWith(t, p); err != nil {
			return fmt.Errorf("pid %d: memory shared with parent %d: %w", t.pid, p.pid, err)
		}
	}
	return nil
}

// findCowWith fills t.mm.CowParentRuns with the pages t shares with p.
func findCowWith(t, p *task) error {
	var cpm, ppm *os.File
	defer func() {
		if cpm != nil {
			cpm.Close()
			ppm.Close()
		}
	}()
	pv := p.mm.Vmas
	j := 0
	for i, v := range t.mm.Vmas {
		if v.NoPages || !memory.CowEligible(v) || !memory.CowAlone(t.mm.Vmas, i) {
			continue
		}
		for j < len(pv) && pv[j].Start < v.Start {
			j++
		}
		if j == len(pv) || !memory.CowSameVma(pv[j], v) || pv[j].NoPages || !memory.CowAlone(pv, j) {
			continue
		}
		if cpm == nil {
			var err error
			if cpm, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", t.pid)); err != nil {
				return err
			}
			if ppm, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", p.pid)); err != nil {
				cpm.Close()
				cpm = nil
				return err
			}
		}
		runs, err := memory.SharedWithParent(cpm, ppm, v)
		if err != nil {
			return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
		}
		t.mm.CowParentRuns = append(t.mm.CowParentRuns, runs...)
	}
	return nil
}

// cowSink is the sink of t's private pages: without the pages t shares
// with its parent, which the parent's image holds.
func cowSink(t *task, next memory.Sink) memory.Sink {
	if len(t.mm.CowParentRuns) == 0 {
		return next
	}
	return &memory.SkipRuns{Next: next, Skip: t.mm.CowParentRuns}
}
