package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
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
}

// The splice mover's pipes: spliceMaxPipes pipes of up to splicePipeSize
// each (the most F_SETPIPE_SZ gives without CAP_SYS_RESOURCE on a default
// fs.pipe-max-size; we never change that sysctl), in two sets: one is
// filled by a batch of injected vmsplice calls while ctr-cr drains the
// other into the image by splice.
const (
	spliceMaxPipes = 32
	splicePipeSize = 1 << 20
	spliceIovecs   = splicePipeSize / PageSize // a pipe slot holds one page: one iovec a page at most
	spliceAreaSize = spliceMaxPipes * spliceIovecs * 16
)

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
// Crash safety (ctr-cr killed at any instant, the task runs on): the
// write ends live at fd numbers above every fd the task had, close-on-
// exec, so that the program's own opens get the numbers they would have
// got; the pipes have no reader once ctr-cr is gone. What a crash can
// leave is listed in the README ("what a killed dump leaves"): the iovec
// mapping (spliceAreaSize bytes, anonymous), up to spliceMaxPipes such
// write ends holding references to up to spliceMaxPipes*splicePipeSize
// bytes of the task's pages until it exits, and, only when the crash
// falls between the two setup batches (pipe2, then the move upwards),
// the pipes at the lowest free fd numbers.
type SpliceMover struct {
	sc    Syscaller
	area  uint64   // the iovec arrays, mapped in the task
	wfds  []uint64 // the pipes' write ends, in the task
	rfds  []int    // the same pipes' read ends, in ctr-cr
	slots []uint64 // pages each pipe holds
	// Fallbacks counts the runs that went through ctr-cr's buffer after
	// a batch of vmsplice failed (for tests and statistics).
	Fallbacks int
	// Spliced counts the pages that went through the pipes.
	Spliced uint64
	broken  bool
}

// OpenSpliceMover prepares the pipes in the task (pid) through sc. It
// fails when the task cannot have them (e.g. no fd free below its
// RLIMIT_NOFILE); the dump then copies pages as before. Nothing it made
// is left behind on failure.
func OpenSpliceMover(pid int, sc Syscaller) (_ *SpliceMover, err error) {
	k := min(spliceMaxPipes, sc.MaxCalls()-1)
	if k < 1 {
		return nil, errors.New("splice mover: batches too small")
	}
	m := &SpliceMover{sc: sc}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	// pipe2 writes its two fds into the scratch; -1 marks the pairs not
	// made, so that a failed batch leaves nothing open behind
	fdsAt := sc.Scratch()
	fdsArea := make([]byte, 8*k)
	for i := range fdsArea {
		fdsArea[i] = 0xff
	}
	if err := sc.Poke(fdsArea, fdsAt); err != nil {
		return nil, err
	}
	calls := []Syscall{{What: "mmap iovec area for vmsplice", Nr: unix.SYS_MMAP,
		Args: [6]uint64{0, spliceAreaSize, unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS, ^uint64(0), 0}}}
	for i := 0; i < k; i++ {
		calls = append(calls, Syscall{What: "pipe2 for vmsplice", Nr: unix.SYS_PIPE2, Args: [6]uint64{fdsAt + uint64(8*i), unix.O_CLOEXEC}})
	}
	res, callErr := sc.Calls(calls)
	if len(res) == 0 {
		return nil, callErr
	}
	m.area = res[0]
	if err := sc.Peek(fdsArea, fdsAt); err != nil {
		return nil, errors.Join(callErr, err)
	}
	var taskRfds, taskWfds []uint64
	for i := 0; i < k; i++ {
		r := int32(binary.LittleEndian.Uint32(fdsArea[8*i:]))
		w := int32(binary.LittleEndian.Uint32(fdsArea[8*i+4:]))
		if r < 0 || w < 0 {
			break
		}
		taskRfds = append(taskRfds, uint64(r))
		taskWfds = append(taskWfds, uint64(w))
	}
	if len(taskWfds) == 0 {
		return nil, errors.Join(callErr, errors.New("splice mover: no pipe made"))
	}
	// with fewer pipes than asked (no more fds free), the ones made serve
	err = m.takeReadEnds(pid, taskRfds)
	if err == nil {
		err = m.moveWriteEndsUp(pid, taskWfds)
	}
	// the task keeps only the write ends, moved up (or none)
	if cerr := m.closeTaskFds(append(taskRfds, taskWfds...)); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// moveWriteEndsUp duplicates the write ends wfds (fds in the task) to
// numbers above every fd the task has (close-on-exec) and records the
// copies in m.wfds; the originals are left to the caller to close. Pipes
// whose copy would not fit under the task's fd limit are dropped.
func (m *SpliceMover) moveWriteEndsUp(pid int, wfds []uint64) error {
	base, limit, err := fdRoom(pid)
	if err != nil {
		return err
	}
	n := len(wfds)
	if limit > base {
		n = min(n, int(limit-base))
	} else {
		n = 0
	}
	if n < 1 {
		return errors.New("splice mover: no fd free above the task's")
	}
	for _, fd := range m.rfds[n:] {
		unix.Close(fd)
	}
	m.rfds, m.slots = m.rfds[:n], m.slots[:n]
	calls := make([]Syscall, n)
	for i, w := range wfds[:n] {
		calls[i] = Syscall{What: "move a vmsplice pipe above the task's fds", Nr: unix.SYS_FCNTL, Args: [6]uint64{w, unix.F_DUPFD_CLOEXEC, base}}
	}
	res, err := m.sc.Calls(calls)
	m.wfds = append(m.wfds, res...) // those made are closed by Close
	if err != nil {
		return err
	}
	return nil
}

// fdRoom returns one above the highest fd open in the task (its fd table
// read while it is stopped) and its RLIMIT_NOFILE soft limit.
func fdRoom(pid int) (base, limit uint64, err error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		if n, err := strconv.ParseUint(e.Name(), 10, 32); err == nil && n+1 > base {
			base = n + 1
		}
	}
	var rl unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &rl); err != nil {
		return 0, 0, fmt.Errorf("fd limit of pid %d: %w", pid, err)
	}
	return base, rl.Cur, nil
}

// takeReadEnds duplicates the pipes' read ends (fds in the task) into
// ctr-cr and makes each pipe as large as allowed.
func (m *SpliceMover) takeReadEnds(pid int, taskRfds []uint64) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	for _, tfd := range taskRfds {
		fd, err := unix.PidfdGetfd(pidfd, int(tfd), 0)
		if err != nil {
			return fmt.Errorf("pidfd_getfd of the vmsplice pipe: %w", err)
		}
		m.rfds = append(m.rfds, fd)
		size, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, splicePipeSize)
		if err != nil {
			// keep the size it has (16 pages by default)
			size, err = unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
			if err != nil {
				return fmt.Errorf("pipe size: %w", err)
			}
		}
		m.slots = append(m.slots, uint64(min(size, splicePipeSize)/PageSize))
	}
	return nil
}

// closeTaskFds closes fds in the task, in batches; with more, the last
// batch also runs the calls in more (one batch fewer).
func (m *SpliceMover) closeTaskFds(fds []uint64, more ...Syscall) error {
	var errs []error
	calls := make([]Syscall, 0, len(fds)+len(more))
	for _, fd := range fds {
		calls = append(calls, Syscall{What: "close vmsplice pipe", Nr: unix.SYS_CLOSE, Args: [6]uint64{fd}})
	}
	calls = append(calls, more...)
	for len(calls) > 0 {
		n := min(len(calls), m.sc.MaxCalls())
		if _, err := m.sc.Calls(calls[:n]); err != nil {
			errs = append(errs, err)
		}
		calls = calls[n:]
	}
	return errors.Join(errs...)
}

// Close closes the pipes (pages still in them are dropped) and unmaps the
// iovec area in the task. Safe to call twice.
func (m *SpliceMover) Close() error {
	for _, fd := range m.rfds {
		unix.Close(fd)
	}
	m.rfds = nil
	var unmap []Syscall
	if m.area != 0 {
		unmap = []Syscall{{What: "munmap vmsplice iovec area", Nr: unix.SYS_MUNMAP, Args: [6]uint64{m.area, spliceAreaSize}}}
	}
	err := m.closeTaskFds(m.wfds, unmap...)
	m.wfds = nil
	m.area = 0
	return err
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
		if err := <-b.done; err != nil {
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
		if err := m.drain(b, sink, st); err != nil {
			if inflight != nil {
				<-inflight.done
			}
			return err
		}
	}
}

// drain splices b's pieces from their pipes into sink.
func (m *SpliceMover) drain(b *moveBatch, sink SpliceSink, st *Stats) error {
	for _, pc := range b.pieces {
		if err := sink.SplicePages(pc.addr, m.rfds[pc.pipe], int(pc.pages*PageSize)); err != nil {
			return err
		}
		st.PagesWritten += pc.pages
		m.Spliced += pc.pages
	}
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
		if room == 0 {
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
			Args: [6]uint64{m.wfds[p], m.area + uint64(p)*spliceIovecs*16, niov[p], 0}})
		want = append(want, fill[p]*PageSize)
	}
	lo := uint64(set[0]) * spliceIovecs * 16
	hi := (uint64(set[len(set)-1]) + 1) * spliceIovecs * 16
	if err := m.sc.Poke(iov[lo:hi], m.area+lo); err != nil {
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
