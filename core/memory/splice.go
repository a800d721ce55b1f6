package memory

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image"
)

// Syscall is one system call to run inside the task (Syscaller).
type Syscall struct {
	What string // names the call in errors
	Nr   uint64
	Args [6]uint64
}

// Syscaller runs system calls inside the stopped task whose pages are
// moved, and reads and writes its memory. The dump implements it with
// its (crash-safe) injector, on the task's tracer thread.
type Syscaller interface {
	// Calls runs calls in order in one go, stopping at the first failure;
	// it returns their results, or, on a failure, the results of the
	// calls before it and the failure naming it.
	Calls(calls []Syscall) ([]uint64, error)
	// MaxCalls is the most calls one Calls takes.
	MaxCalls() int
	// Scratch is memory of the task calls may write results into (at
	// least 8*spliceMaxPipes bytes).
	Scratch() uint64
	// Poke writes b into the task's memory at addr; Peek reads it.
	Poke(b []byte, addr uint64) error
	Peek(b []byte, addr uint64) error
}

// SpliceSink is a Sink that also takes pages straight from a pipe
// (image.PagesWriter): n bytes, the pages from vaddr, spliced from pipeFd.
type SpliceSink interface {
	Sink
	SplicePages(vaddr uint64, pipeFd int, n int) error
	// SpliceRuns is SplicePages for each run in order, up to par pipes
	// spliced at once.
	SpliceRuns(runs []image.SpliceRun, par int) error
}

// spliceDrainers is how many pipes are spliced into the image at once
// (CTRCR_SPLICE_PAR changes it, for comparisons).
var spliceDrainers = envInt("CTRCR_SPLICE_PAR", 2)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// The splice mover's pipes: spliceMaxPipes pipes of up to splicePipeSize
// each, in two sets: one is filled by a batch of injected vmsplice calls
// while ctr-cr drains the other into the image by splice. A pipe is made
// as large as allowed: splicePipeSize with CAP_SYS_RESOURCE (root), else
// spliceSmallPipe (the most F_SETPIPE_SZ gives on a default
// fs.pipe-max-size; we never change that sysctl). Larger pipes mean fewer
// batches, each an injection round trip, which on a busy machine waits
// for the task to be scheduled (a 1 GiB dump: 8 batches instead of 64).
// A pipe holds references to the task's pages, no copy of them.
const (
	spliceMaxPipes  = 32
	splicePipeSize  = 8 << 20
	spliceSmallPipe = 1 << 20
	// iovecs a pipe's vmsplice takes at most (UIO_MAXIOV is 1024): a
	// pipe whose runs are small is filled that far only
	spliceIovecs   = 256
	spliceAreaSize = spliceMaxPipes * spliceIovecs * 16
	// the mapping: a page for the magic that marks it, then the iovecs
	spliceMapSize = PageSize + spliceAreaSize
)

// spliceIovecCap is spliceIovecs (a variable for tests: with 1 MiB pipes a
// pipe holds no more pages than iovecs, and the cap only binds with
// larger pipes).
var spliceIovecCap uint64 = spliceIovecs

// SpliceMover moves a stopped task's pages into the image without a copy
// in ctr-cr: the task, driven by injected calls, vmsplices its own pages
// into pipes (a reference to each page, no copy), and ctr-cr splices the
// pipes into the pages file (the one copy, into the page cache). Before,
// every page was copied twice: process_vm_readv into ctr-cr's buffer,
// then write into the page cache; the two copies were most of a large
// dump's system time.
//
// The mover owns, in the task, a mapping for the iovec arrays and the
// pipes' write ends; ctr-cr holds the read ends. Close removes them all;
// the task's address space and fd table are then as before.
//
// Crash safety (ctr-cr killed at any instant, the task runs on; an
// injected batch runs to its end even then, see ptrace/area.go): every
// batch leaves the task's fds below those it had as they were. Pipes are
// made, checked to have the numbers ctr-cr foresaw, moved above every fd
// the task has (close-on-exec) and their first numbers closed, all in
// one batch (openPipes), so the program's own opens get the numbers they
// would have got. What a crash can leave: the iovec mapping
// (spliceMapSize bytes, anonymous, at an address chosen first, marked by
// a magic) and up to spliceMaxPipes pipes (both ends) at those high
// numbers, holding references to the task's pages. Both are told to
// Leftovers (the dump's operation record) before they are made, and
// `ctr-cr cleanup`, or the sweep the next ctr-cr run starts with, closes
// and unmaps them (internal/oprec, Injected). vmsplice is
// called with SPLICE_F_NONBLOCK: a batch that ctr-cr's death left to run
// alone can never wait for room in a pipe.
type SpliceMover struct {
	sc   Syscaller
	lo   Leftovers
	area uint64   // the mapping in the task: its magic, then the iovecs
	wfds []uint64 // the pipes' write ends, in the task
	rfds []int    // the same pipes' read ends, in ctr-cr
	// taskRfds: the read ends in the task, kept so that the pipes
	// always have a reader (see openPipes)
	taskRfds []uint64
	// stray: fds a failed set-up batch left in the task, closed by Close
	stray []uint64
	slots []uint64 // pages each pipe holds
	// Fallbacks counts the runs that went through ctr-cr's buffer after
	// a batch of vmsplice failed (for tests and statistics).
	Fallbacks int
	// Spliced counts the pages that went through the pipes.
	Spliced uint64
	// Batches counts the vmsplice batches; Waited is the time spent
	// waiting for them, Drained the time splicing pipes into the sink
	// (for CTRCR_DEBUG_SPLICE).
	Batches         int
	Waited, Drained time.Duration
	broken          bool
	// leftover: a Close failed, something may be left in the task
	leftover bool
}

// piece is a part of a run that goes through one pipe.
type piece struct {
	addr, pages uint64
	pipe        int
}

// moveBatch is one batch of vmsplice calls: the pieces it puts in its
// set of pipes, the runs cursor it starts at (i, off: run i from its page
// off) and the one after it; done gets the batch's result.
type moveBatch struct {
	pieces       []piece
	i, next      int
	off, nextOff uint64
	done         chan error
}

// movable reports whether run goes through the pipes.
// Shared runs never do: vmsplice takes references to the pages as
// process_vm_readv does, and the kernel would break their copy-on-write
// sharing (see Run).
func movable(run Run) bool { return run.Readable && !run.Shared }

// pipeSets splits the pipes in two sets (one alone when there is one).
func (m *SpliceMover) pipeSets() [2][]int {
	var sets [2][]int
	n := len(m.wfds)
	for p := 0; p < n; p++ {
		if n > 1 && p >= n/2 {
			sets[1] = append(sets[1], p)
		} else {
			sets[0] = append(sets[0], p)
		}
	}
	if len(sets[1]) == 0 {
		sets[1] = sets[0]
	}
	return sets
}

// writeRuns writes runs to sink: the movable ones through the pipes, a
// batch (a set of pipes filled) at a time, the next batch running in the
// task while the last one is spliced; unreadable and captured runs, and
// all that follows a failed batch, through r's buffer.
func (m *SpliceMover) writeRuns(r *Reader, runs []Run, sink SpliceSink, st *Stats) error {
	iov := make([]byte, spliceAreaSize)
	sets := m.pipeSets()
	set := 0
	var inflight *moveBatch
	for i, off := 0, uint64(0); ; {
		if r.Ctx != nil && inflight == nil {
			if err := r.Ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
		}
		if inflight == nil {
			if i == len(runs) {
				return nil
			}
			if m.broken || !movable(runs[i]) {
				rest := runs[i] // off is 0 for a run the pipes never take
				rest.Addr += off * PageSize
				rest.Pages -= off
				if err := r.copyRuns([]Run{rest}, sink, st); err != nil {
					return err
				}
				i, off = i+1, 0
				continue
			}
			if inflight = m.start(runs, i, off, sets[set], iov); inflight == nil {
				return fmt.Errorf("splice mover: no room in its pipes") // cannot happen: a pipe holds a page
			}
			set ^= 1
			continue
		}
		b := inflight
		inflight = nil
		t0 := time.Now()
		err := <-b.done
		m.Waited += time.Since(t0)
		if err != nil {
			// nothing of this batch reached the image: the pipes are
			// dropped and its runs go through the buffer
			m.broken = true
			m.Fallbacks++
			if cerr := m.Close(); cerr != nil {
				return fmt.Errorf("%w (after vmsplice failed: %v)", cerr, err)
			}
			i, off = b.i, b.off
			continue
		}
		i, off = b.next, b.nextOff
		if i < len(runs) && movable(runs[i]) {
			inflight = m.start(runs, i, off, sets[set], iov)
			set ^= 1
		}
		t0 = time.Now()
		err = m.drain(b, sink, st)
		m.Drained += time.Since(t0)
		m.Batches++
		if err != nil {
			if inflight != nil {
				<-inflight.done
			}
			return err
		}
	}
}

// drain splices b's pieces from their pipes into sink.
func (m *SpliceMover) drain(b *moveBatch, sink SpliceSink, st *Stats) error {
	runs := make([]image.SpliceRun, len(b.pieces))
	var pages uint64
	for i, pc := range b.pieces {
		runs[i] = image.SpliceRun{Vaddr: pc.addr, PipeFd: m.rfds[pc.pipe], N: int(pc.pages * PageSize)}
		pages += pc.pages
	}
	if err := sink.SpliceRuns(runs, spliceDrainers); err != nil {
		return err
	}
	st.PagesWritten += pages
	m.Spliced += pages
	return nil
}

// start fills the pipes of set with the movable runs from run i, page off
// on: it writes their iovecs into the task's area and runs the batch of
// vmsplice calls in a goroutine (the injector's tracer thread does the
// work). It returns nil when no page fits.
func (m *SpliceMover) start(runs []Run, i int, off uint64, set []int, iov []byte) *moveBatch {
	b := &moveBatch{i: i, off: off, done: make(chan error, 1)}
	fill := make(map[int]uint64, len(set))
	niov := make(map[int]uint64, len(set))
	next, nextOff := i, off
	for k := 0; k < len(set) && next < len(runs) && movable(runs[next]); {
		p := set[k]
		room := m.slots[p] - fill[p]
		if room == 0 || niov[p] == spliceIovecCap {
			k++
			continue
		}
		run := runs[next]
		n := min(room, run.Pages-nextOff)
		addr := run.Addr + nextOff*PageSize
		b.pieces = append(b.pieces, piece{addr: addr, pages: n, pipe: p})
		e := iov[(uint64(p)*spliceIovecs+niov[p])*16:]
		binary.LittleEndian.PutUint64(e, addr)
		binary.LittleEndian.PutUint64(e[8:], n*PageSize)
		niov[p]++
		fill[p] += n
		nextOff += n
		if nextOff == run.Pages {
			next, nextOff = next+1, 0
		}
	}
	if len(b.pieces) == 0 {
		return nil
	}
	b.next, b.nextOff = next, nextOff
	var calls []Syscall
	var want []uint64
	for _, p := range set {
		if fill[p] == 0 {
			continue
		}
		calls = append(calls, Syscall{What: "vmsplice pages into a pipe", Nr: unix.SYS_VMSPLICE,
			Args: [6]uint64{m.wfds[p], m.area + PageSize + uint64(p)*spliceIovecs*16, niov[p], unix.SPLICE_F_NONBLOCK}})
		want = append(want, fill[p]*PageSize)
	}
	lo := uint64(set[0]) * spliceIovecs * 16
	hi := (uint64(set[len(set)-1]) + 1) * spliceIovecs * 16
	if err := m.sc.Poke(iov[lo:hi], m.area+PageSize+lo); err != nil {
		b.done <- err
		return b
	}
	go func() { b.done <- m.runVmsplice(calls, want) }()
	return b
}

// runVmsplice runs the vmsplice calls in one batch and checks that each
// took all its pages.
func (m *SpliceMover) runVmsplice(calls []Syscall, want []uint64) error {
	res, err := m.sc.Calls(calls)
	if err != nil {
		return err
	}
	for k, n := range res {
		if n != want[k] {
			return fmt.Errorf("vmsplice moved %d of %d bytes", n, want[k])
		}
	}
	return nil
}
