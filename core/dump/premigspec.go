package dump

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// The final dump of a pre-copy chain scans each tracked process's
// registered mappings for the pages its parent image can stand for
// (ScanReusable, the longest step of its memory dump) while the tree is
// frozen. Which mappings those are is only known from smaps, itself the
// longest read of the frozen window; so the dump guesses them from a
// smaps read just before the freeze, runs the scans on that guess once the
// tree is frozen and its registers and the like are collected, alongside
// the frozen smaps read, and prepare uses their result only when the frozen
// smaps names exactly the same registered mappings (else it scans again).
// The scans are read-only and run on the frozen tree: what is captured is
// the same as with scans after the smaps read, only sooner.

// specScan is the guess for one process and the scans run on it.
type specScan struct {
	kept, keptFile memory.Spans // registered anonymous / file-backed mappings, as guessed
	have           memory.Spans // the pages the parent chain holds (read before the freeze)
	haveErr        error

	done           chan struct{} // closed once the scans ended
	clean, written memory.Spans
	err            error
}

// speculate reads, before the freeze, the smaps and parent pages of every
// tracked process (for a final dump: the scans do not re-arm).
func (pm *premig) speculate() {
	if pm == nil || pm.parent == nil {
		return
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.spec = map[int]*specScan{}
	for pid := range pm.tracked {
		smaps, err := procfs.ReadSmaps(pid)
		if err != nil {
			continue
		}
		sp := &specScan{}
		for i := range smaps {
			s := &smaps[i]
			v := &imagepb.Vma{Shared: s.Shared, Kind: memory.Classify(s), VmFlags: strings.Join(s.VmFlags, " ")}
			if !trackable(v) || !s.HasFlag("uw") {
				continue
			}
			if anonKind(v.Kind) {
				sp.kept = append(sp.kept, memory.Span{Start: s.Start, End: s.End})
			} else {
				sp.keptFile = append(sp.keptFile, memory.Span{Start: s.Start, End: s.End})
			}
		}
		sp.have, sp.haveErr = parentPages(pm.parent, pid)
		pm.spec[pid] = sp
	}
}

// startScans starts the scans of every guess; the tree is frozen (and
// its injections done).
func (pm *premig) startScans() {
	if pm == nil {
		return
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for pid, sp := range pm.spec {
		sp.done = make(chan struct{})
		go func() {
			defer close(sp.done)
			sp.clean, sp.written, sp.err = scanGuess(pid, sp.kept, sp.keptFile)
		}()
	}
}

// scanGuess scans the guessed registered mappings of pid: the pages the
// parent may stand for, and those written since it.
func scanGuess(pid int, kept, keptFile memory.Spans) (clean, written memory.Spans, err error) {
	pmf, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, nil, err
	}
	defer pmf.Close()
	fd := int(pmf.Fd())
	if clean, err = memory.ScanReusable(fd, kept, false); err != nil {
		return nil, nil, err
	}
	cleanFile, err := memory.ScanReusable(fd, keptFile, true)
	if err != nil {
		return nil, nil, err
	}
	written, err = memory.ScanWritten(fd, kept.Union(keptFile), false)
	return clean.Union(cleanFile), written, err
}

// guessed returns the scans of pid's guess once they ended, if the guess
// named exactly the registered mappings kept and keptFile (nil: scan).
func (pm *premig) guessed(pid int, kept, keptFile memory.Spans) *specScan {
	pm.mu.Lock()
	sp := pm.spec[pid]
	pm.mu.Unlock()
	if sp == nil || sp.done == nil {
		return nil
	}
	<-sp.done
	if sp.err != nil || !slices.Equal(sp.kept, kept) || !slices.Equal(sp.keptFile, keptFile) {
		return nil
	}
	return sp
}

// parentHave returns the pages of pid the parent chain holds: as read
// before the freeze, or now.
func (pm *premig) parentHave(pid int) (memory.Spans, error) {
	pm.mu.Lock()
	sp := pm.spec[pid]
	pm.mu.Unlock()
	if sp != nil {
		return sp.have, sp.haveErr
	}
	return parentPages(pm.parent, pid)
}

// waitScans waits for the scans still running (a dump that ends early).
func (pm *premig) waitScans() {
	for _, sp := range pm.spec {
		if sp.done != nil {
			<-sp.done
		}
	}
}
