package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

// premig is the pre-copy side of a dump round (issue 16): the parent image
// it writes only the changes against, and the dirty tracking of each
// process (memory.ScanWritten).
type premig struct {
	parent     *image.Reader // nil: a first round
	parentPath string        // as given, relative to the new image
	parentSum  []byte        // SHA-256 of the parent's inventory.img
	rec        *imagepb.PremigTracker
	warn       func(format string, args ...any)

	mu      sync.Mutex
	tracked map[int]*tracked     // pid: its userfaultfd, held by this ctr-cr
	reuse   map[int]memory.Spans // pid: its pages the parent stands for
	spec    map[int]*specScan    // pid: scans started at the freeze (premigspec.go)
	stats   struct{ fromParent, dirty uint64 }
	used    bool // some page was left to the parent
}

// openPremig validates the parent image (and its whole chain: a missing or
// altered ancestor fails here, before the tree is touched) and takes the
// userfaultfds its holder keeps. parentPath is relative to dir.
func openPremig(dir, parentPath string, warn func(string, ...any), pagesElsewhere bool) (*premig, error) {
	pm := &premig{parentPath: parentPath, warn: warn, tracked: map[int]*tracked{}, reuse: map[int]memory.Spans{}}
	if parentPath == "" {
		return pm, nil
	}
	pdir := image.ParentDir(dir, parentPath)
	o := image.OpenOptions{PagesElsewhere: pagesElsewhere}
	p, err := image.OpenWith(pdir, o)
	if err != nil {
		return nil, fmt.Errorf("parent image %s: %w: %w", pdir, image.ErrChain, err)
	}
	if _, err := image.OpenChainWith(p, o); err != nil {
		return nil, err
	}
	if pm.parentSum, err = image.InventorySum(pdir); err != nil {
		return nil, err
	}
	pm.parent = p
	pm.rec = p.Inventory().GetPremigTracker()
	if pm.rec == nil {
		warn("parent image %s has no dirty tracking armed (a dump, or a kernel without it): every page is copied", pdir)
		return pm, nil
	}
	if pm.tracked, err = fetchTracked(pm.rec); err != nil {
		warn("dirty tracking of parent image %s lost (%v): every page is copied", pdir, err)
		pm.tracked, pm.rec = map[int]*tracked{}, nil
	}
	return pm, nil
}

// close drops this ctr-cr's copies of the userfaultfds (the holder keeps
// the tracking alive).
func (pm *premig) close() {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.waitScans()
	closeTracked(pm.tracked)
	pm.tracked = map[int]*tracked{}
}

// trackable reports VMAs whose pages are tracked: private ones with pages
// read through the pagemap (not hugetlb, SysV or kernel-made).
func trackable(v *imagepb.Vma) bool {
	if v.Shared || memory.Special(v.Kind) {
		return false
	}
	switch v.Kind {
	case imagepb.VmaKind_VMA_SYSV_SHM, imagepb.VmaKind_VMA_HUGETLB_ANON:
		return false
	}
	flags := " " + v.VmFlags + " "
	return !strings.Contains(flags, " ht ") && !strings.Contains(flags, " dp ")
}

// anonKind reports VMA kinds that hold anonymous pages only (no page of a
// mapped file).
func anonKind(k imagepb.VmaKind) bool {
	switch k {
	case imagepb.VmaKind_VMA_ANON_PRIVATE, imagepb.VmaKind_VMA_HEAP, imagepb.VmaKind_VMA_STACK:
		return true
	}
	return false
}

// prepare registers the trackable VMAs of process pid (frozen) with its
// userfaultfd, finds the pages the parent image holds unchanged (left out
// of this image: vmas, writeParentmap) and which pages were written since
// the last round (rearm: and protects them again). Without a userfaultfd
// for pid nothing is left out.
func (pm *premig) prepare(pid int, mm *imagepb.MmEntry, rearm bool) error {
	pm.mu.Lock()
	tk := pm.tracked[pid]
	pm.mu.Unlock()
	if tk == nil {
		return nil
	}
	pmf, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return err
	}
	defer pmf.Close()
	// spans: registered with our userfaultfd now (scanned, re-armed);
	// kept: registered already before this round. A mapping registered
	// only now is new, or lost its registration since: mremap drops the
	// registration of a moved VMA and of any VMA the moved part merges
	// into, whose pages keep their uffd-wp bits and look unwritten when
	// written (the case p_premig.c's H region): none of its pages is
	// taken from the parent.
	var spans, kept, keptFile memory.Spans
	foreign := 0
	for _, v := range mm.Vmas {
		if !trackable(v) {
			continue
		}
		registered := strings.Contains(" "+v.VmFlags+" ", " uw ")
		err := memory.RegisterWP(tk.fd, v.Start, v.End)
		switch {
		case err == nil:
			spans = append(spans, memory.Span{Start: v.Start, End: v.End})
			switch {
			case registered && anonKind(v.Kind):
				kept = append(kept, memory.Span{Start: v.Start, End: v.End})
			case registered:
				keptFile = append(keptFile, memory.Span{Start: v.Start, End: v.End})
			}
			v.VmFlags = dropFlag(v.VmFlags, "uw") // ours, not the program's
		case errors.Is(err, unix.EBUSY):
			foreign++
		case errors.Is(err, unix.ESRCH):
			// the userfaultfd's mm is gone: the process exec'd
			pm.warn("pid %d: its address space changed since the parent round (exec): every page is copied", pid)
			pm.untrack(pid)
			return nil
		}
	}
	trace("pid %d RegisterWP", pid)
	if foreign > 0 {
		pm.warn("pid %d: %d mapping(s) registered with another userfaultfd (the program's own): their pages are copied in full", pid, foreign)
	}
	// first what the parent stands for (before re-arming, which makes
	// every page look unwritten), then what was written (re-armed)
	var guess *specScan
	if !rearm {
		guess = pm.guessed(pid, kept, keptFile)
	}
	trace("pid %d guessed scans used: %v", pid, guess != nil)
	var reuse memory.Spans
	if pm.parent != nil && len(kept)+len(keptFile) > 0 {
		have, err := pm.parentHave(pid)
		if err != nil {
			return err
		}
		var clean memory.Spans
		if guess != nil {
			clean = guess.clean
		} else if clean, err = memory.ScanReusable(int(pmf.Fd()), kept, false); err == nil {
			var cleanFile memory.Spans
			cleanFile, err = memory.ScanReusable(int(pmf.Fd()), keptFile, true)
			clean = clean.Union(cleanFile)
		}
		if err != nil {
			pm.warn("pid %d: %v: every page is copied", pid, err)
			pm.untrack(pid)
			return nil
		}
		reuse = clean.Intersect(have)
	}
	var written memory.Spans
	if guess != nil {
		// the guess scanned the mappings registered before; the rest
		// (registered now) are all written
		written, err = memory.ScanWritten(int(pmf.Fd()), spans.Subtract(kept.Union(keptFile)), rearm)
		written = written.Union(guess.written)
	} else {
		written, err = memory.ScanWritten(int(pmf.Fd()), spans, rearm)
	}
	if err != nil {
		pm.warn("pid %d: %v: every page is copied", pid, err)
		pm.untrack(pid)
		return nil
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.stats.dirty += written.Pages()
	if len(reuse) > 0 {
		pm.reuse[pid] = reuse
	}
	return nil
}

// untrack forgets pid's userfaultfd (its pages are all copied).
func (pm *premig) untrack(pid int) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if tk := pm.tracked[pid]; tk != nil {
		unix.Close(tk.fd)
		delete(pm.tracked, pid)
	}
}

// vmas returns the VMAs of pid whose pages are to be read: without the
// pages the parent stands for (pm may be nil).
func (pm *premig) vmas(pid int, vmas []*imagepb.Vma) []*imagepb.Vma {
	if pm == nil {
		return vmas
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return memory.Without(vmas, pm.reuse[pid])
}

// writeParentmap writes parentmap-<pid>.img: the pages the parent stands
// for.
func (pm *premig) writeParentmap(w *image.Writer, pid int) error {
	if pm == nil {
		return nil
	}
	pm.mu.Lock()
	reuse := pm.reuse[pid]
	pm.stats.fromParent += reuse.Pages()
	if len(reuse) > 0 {
		pm.used = true
	}
	pm.mu.Unlock()
	if len(reuse) == 0 {
		return nil
	}
	return w.WriteParentmap(pid, reuse.Runs())
}

// inventory records the parent in inv, when the image needs it (an image
// that took nothing from its parent stands alone).
func (pm *premig) inventory(inv *imagepb.Inventory) {
	if pm == nil || pm.parent == nil || !pm.used {
		return
	}
	inv.ParentPath, inv.ParentInventorySha256 = pm.parentPath, pm.parentSum
}

// parentPages returns the pages of pid the parent image has: in its pages
// file or, in turn, in its parent.
func parentPages(p *image.Reader, pid int) (memory.Spans, error) {
	name := strconv.Itoa(pid)
	var have memory.Spans
	if p.Has("pagemap-" + name + ".img") {
		_, runs, err := p.Pagemap(name)
		if err != nil {
			return nil, err
		}
		have = memory.SpansOf(runs)
	}
	runs, err := p.Parentmap(pid)
	if err != nil {
		return nil, err
	}
	return have.Union(memory.SpansOf(runs)), nil
}

// dropFlag removes the two-letter flag from a VmFlags string.
func dropFlag(flags, flag string) string {
	f := strings.Fields(flags)
	out := f[:0]
	for _, x := range f {
		if x != flag {
			out = append(out, x)
		}
	}
	return strings.Join(out, " ")
}

// openParent is openPremig for Dump: nil without opts.ParentPath.
func openParent(dir string, opts Options) (*premig, error) {
	if opts.ParentPath == "" {
		return nil, nil
	}
	warn := opts.Warn
	if warn == nil {
		warn = func(string, ...any) {}
	}
	return openPremig(dir, opts.ParentPath, warn, opts.PagesSink != nil)
}

// finish ends the round of a final dump: our copies of the userfaultfds
// are closed and, when the dump succeeded, the holder is ended, which
// ends the tracking (a failed dump keeps it for another try).
func (pm *premig) finish(err *error) {
	if pm == nil {
		return
	}
	pm.close()
	if *err == nil && pm.rec != nil {
		endHolder(pm.rec)
	}
}
