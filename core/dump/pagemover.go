package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// spliceMinPages is the least number of pages of a process that go
// through the splice mover: 64 MiB (the measured crossover, quiet make
// bench: a tree of 20 processes of 8 MiB each dumped in 682 ms with the
// mover on each and 354 without; 256 MiB 182 against 381).
// CTRCR_SPLICE_MIN_PAGES=N sets another threshold.
//
// (The mover was off by default for a while: with it forced on small
// processes, the second dump of a restored postgres tree hung 3 times in
// 40, the thread let go past the stop that ends an injected run. The cause
// was in ptrace.Raw, see there: the stop's registers were read into a moved
// stack, read as zeros, and the stop taken for one elsewhere.)
const spliceDefaultMinPages = 16384

var spliceMinPages = spliceThreshold(os.Getenv("CTRCR_SPLICE_MIN_PAGES"))

// spliceThreshold is spliceMinPages for env, a number of pages (""
// or not a number: the default).
func spliceThreshold(env string) uint64 {
	if n, err := strconv.ParseUint(env, 10, 64); err == nil {
		return n
	}
	return spliceDefaultMinPages
}

// noSplice turns the splice mover off (CTRCR_NO_SPLICE=1): every page then
// goes through ctr-cr's buffer, as before. For comparisons and tests.
var noSplice = os.Getenv("CTRCR_NO_SPLICE") != ""

// pageMover is a splice mover with the injector it runs its calls by: an
// injection area of its own (ptrace.NewRemote, crash-safe like the one
// collectCore uses and removed before the pages are read).
type pageMover struct {
	t      *task
	remote *ptrace.Remote
	mover  *memory.SpliceMover
	// for CTRCR_DEBUG_SPLICE: when the set-up began, and its time
	opened   time.Time
	openTook time.Duration
}

// openMover sets a splice mover up in t when its pages that can go
// through pipes (readable, not shared) are many enough. It returns nil
// when they are few or the mover cannot be set up (no free fd in the
// task, ...): copying them still works. A failure to take back what it
// made in the task is an error.
func (d *dumper) openMover(t *task, runs []memory.Run) (*pageMover, error) {
	if noSplice || t.p == nil || d.opts.PagesSink != nil {
		// (a page server's stream cannot be hashed from a mapping: the
		// pages would be read out of the pipes again, see
		// PagesWriter.SplicePages, for nothing saved)
		return nil, nil
	}
	var pages uint64
	for _, run := range runs {
		if run.Readable && !run.Shared {
			pages += run.Pages
		}
	}
	if pages < spliceMinPages {
		return nil, nil
	}
	pm := &pageMover{t: t, opened: time.Now()}
	defer func() { pm.openTook = time.Since(pm.opened) }()
	var err error
	t.tr.Do(func() { pm.remote, err = ptrace.NewRemote(t.p) })
	if err != nil {
		debugSplice(err)
		return nil, nil
	}
	if pm.mover, err = memory.OpenSpliceMover(t.pid, taskCalls{pm}, &moverLeftovers{pid: t.pid}); err != nil {
		debugSplice(err)
		pm.mover = nil // OpenSpliceMover took back what it made
		if cerr := pm.close(d); cerr != nil {
			return nil, cerr
		}
		return nil, nil
	}
	return pm, nil
}

// close removes the mover's pipes and mapping and the injector from the
// task, which is then as before.
func (pm *pageMover) close(d *dumper) error {
	var err error
	tc := time.Now()
	defer func() {
		if debugSpliceOn {
			fmt.Fprintf(os.Stderr, "splice mover: pid %d: set up in %v, removed in %v\n", pm.t.pid, pm.openTook.Round(time.Millisecond), time.Since(tc).Round(time.Millisecond))
		}
	}()
	if pm.mover != nil {
		if debugSpliceOn {
			fmt.Fprintf(os.Stderr, "splice mover: pid %d: %d pages through pipes in %d batches (waited %v for them, %v splicing), %d fallbacks\n",
				pm.t.pid, pm.mover.Spliced, pm.mover.Batches, pm.mover.Waited.Round(time.Millisecond), pm.mover.Drained.Round(time.Millisecond), pm.mover.Fallbacks)
		}
		err = pm.mover.Close()
	}
	pm.t.tr.Do(func() {
		d.mu.Lock()
		d.st.InjectedSyscalls += pm.remote.Calls()
		d.mu.Unlock()
		err = errors.Join(err, pm.remote.Close())
	})
	if err != nil {
		return fmt.Errorf("remove the vmsplice pipes: %w", err)
	}
	return nil
}

// debugSpliceOn (CTRCR_DEBUG_SPLICE=1) reports on stderr why the mover
// was not used, and how many pages it moved.
var debugSpliceOn = os.Getenv("CTRCR_DEBUG_SPLICE") != ""

func debugSplice(err error) {
	if debugSpliceOn {
		fmt.Fprintln(os.Stderr, "splice mover not used:", err)
	}
}

// taskCalls runs a mover's calls in its task by its injector, on the
// task's tracer thread.
type taskCalls struct{ pm *pageMover }

func (c taskCalls) Calls(calls []memory.Syscall) ([]uint64, error) {
	var b ptrace.Batch
	for _, s := range calls {
		b.Add(s.What, s.Nr, s.Args[:]...)
	}
	var res []uint64
	var err error
	c.pm.t.tr.Do(func() { res, err = c.pm.remote.Batch(0, &b) })
	return res, err
}

// MaxCalls: the batch table has half the scratch page.
func (c taskCalls) MaxCalls() int { return ptrace.ScratchSize / 2 / ptrace.BatchEntrySize }

// Scratch: the first half of the scratch page (the table has the other).
func (c taskCalls) Scratch() uint64 { return c.pm.remote.Scratch }

func (c taskCalls) Poke(b []byte, addr uint64) error { return c.pm.remote.Mem.WriteAt(b, addr) }
func (c taskCalls) Peek(b []byte, addr uint64) error { return c.pm.remote.Mem.ReadAt(b, addr) }
