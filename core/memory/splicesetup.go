package memory

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// pipesPerBatch is how many pipes one set-up batch makes: each costs
// seven calls (pipe2, two checks, two moves, two closes).
const pipesPerBatch = 4

// setupCalls is the most calls a set-up batch has.
const setupCalls = 7 * pipesPerBatch

// futex(2) operation and flag (linux/futex.h).
const (
	futexCmpRequeue = 4
	futexPrivate    = 128
)

// errNoRoom: no more pipes fit under the task's fd limit.
var errNoRoom = errors.New("splice mover: no room for more pipes under the task's fd limit")

// Leftovers is told, before the mover makes them, of the pipes and the
// mapping it puts in the task, which a crash of ctr-cr would leave there
// (the dump writes them in its operation record, see internal/oprec's
// Injected), and, once Close took them all back, that they are gone.
type Leftovers interface {
	// WillMakePipes: pipes about to be made, as (read end, write end)
	// fd numbers in the task.
	WillMakePipes(pairs [][2]int) error
	// WillMap: size bytes about to be mapped at addr, whose first bytes
	// will be magic.
	WillMap(addr, size uint64, magic []byte) error
	Gone()
}

// OpenSpliceMover prepares the pipes in the task (pid) through sc,
// telling lo (if not nil) of each before it is made. It fails when the
// task cannot have any (e.g. no fd free below its RLIMIT_NOFILE, a fd
// table that changed under it); the dump then copies pages as before.
// Nothing it made is left behind on failure.
func OpenSpliceMover(pid int, sc Syscaller, lo Leftovers) (_ *SpliceMover, err error) {
	if sc.MaxCalls() < setupCalls {
		return nil, errors.New("splice mover: batches too small")
	}
	m := &SpliceMover{sc: sc, lo: lo}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	for len(m.wfds) < spliceMaxPipes {
		n := min(pipesPerBatch, spliceMaxPipes-len(m.wfds))
		if err := m.openPipes(pid, pidfd, n); err != nil {
			if !errors.Is(err, errNoRoom) || len(m.wfds) == 0 {
				return nil, err
			}
			break // with fewer pipes than asked, the ones made serve
		}
	}
	return m, m.mapArea(pid)
}

// mapArea maps the iovec area in the task at an address chosen (and told
// to m.lo) first, and marks it with a magic of its own, by which a
// cleanup knows it (see Leftovers).
func (m *SpliceMover) mapArea(pid int) error {
	addr, err := procfs.FreeGap(pid, spliceMapSize)
	if err != nil {
		return fmt.Errorf("splice mover: %w", err)
	}
	magic := make([]byte, 16)
	if _, err := rand.Read(magic); err != nil {
		return err
	}
	if m.lo != nil {
		if err := m.lo.WillMap(addr, spliceMapSize, magic); err != nil {
			return err
		}
	}
	res, err := m.sc.Calls([]Syscall{{What: "mmap iovec area for vmsplice", Nr: unix.SYS_MMAP,
		Args: [6]uint64{addr, spliceMapSize, unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0}}})
	if err != nil {
		return err
	}
	m.area = res[0]
	if m.area != addr {
		return fmt.Errorf("splice mover: iovec area mapped at %#x, want %#x", m.area, addr)
	}
	return m.sc.Poke(magic, m.area)
}

// openPipes makes n pipes in the task in one batch: pipe2 n times, checks that each fd got the number foreseen from
// the task's fd table (FUTEX_CMP_REQUEUE on the fd pipe2 stored fails
// with EAGAIN when it differs: a fd table changed by someone else), moves
// both ends above every fd (F_DUPFD_CLOEXEC) and closes the first
// numbers, which the program may use. Then ctr-cr takes copies of the
// read ends (pidfd_getfd). The task keeps its read ends until Close: a
// pipe with no reader would answer a vmsplice with EPIPE and SIGPIPE,
// which, were ctr-cr killed while the task runs a batch of them, would
// reach the program. After a failure what the batch made is closed again
// (m.broken if that fails too).
func (m *SpliceMover) openPipes(pid, pidfd, n int) error {
	used, limit, err := fdTable(pid)
	if err != nil {
		return err
	}
	// the numbers pipe2 gives: the lowest free, read end first
	want := make([]uint64, 0, 2*n)
	var top uint64
	for fd := uint64(0); len(want) < 2*n; fd++ {
		if !used[fd] {
			want = append(want, fd)
		}
	}
	for fd := range used {
		top = max(top, fd)
	}
	base := max(top, want[2*n-1]) + 1
	if base+uint64(2*n) > limit {
		return fmt.Errorf("%w (%d)", errNoRoom, limit)
	}
	if m.lo != nil {
		// F_DUPFD_CLOEXEC from base, above every fd: pipe i's ends get
		// base+2i (read) and base+2i+1 (write)
		pairs := make([][2]int, n)
		for i := range pairs {
			pairs[i] = [2]int{int(base) + 2*i, int(base) + 2*i + 1}
		}
		if err := m.lo.WillMakePipes(pairs); err != nil {
			return err
		}
	}
	scratch := m.sc.Scratch()
	fill := make([]byte, 8*pipesPerBatch)
	for i := range fill {
		fill[i] = 0xff
	}
	if err := m.sc.Poke(fill, scratch); err != nil {
		return err
	}
	var calls []Syscall
	for i := 0; i < n; i++ {
		calls = append(calls, Syscall{What: "pipe2 for vmsplice", Nr: unix.SYS_PIPE2, Args: [6]uint64{scratch + uint64(8*i), unix.O_CLOEXEC}})
	}
	for j, fd := range want {
		calls = append(calls, Syscall{What: fmt.Sprintf("check the vmsplice pipe has fd %d", fd), Nr: unix.SYS_FUTEX,
			Args: [6]uint64{scratch + uint64(4*j), futexCmpRequeue | futexPrivate, 0, 0, scratch + 8*pipesPerBatch + 8, fd}})
	}
	for _, fd := range want {
		calls = append(calls, Syscall{What: "move a vmsplice pipe above the task's fds", Nr: unix.SYS_FCNTL, Args: [6]uint64{fd, unix.F_DUPFD_CLOEXEC, base}})
	}
	calls = append(calls, closeCalls(want)...)
	res, err := m.sc.Calls(calls)
	if err != nil {
		return m.undoOpen(calls, res, n, err)
	}
	moved := res[3*n : 5*n]
	for i := 0; i < n; i++ {
		m.wfds = append(m.wfds, moved[2*i+1])
		m.taskRfds = append(m.taskRfds, moved[2*i])
	}
	for i := 0; i < n; i++ {
		if err := m.takeReadEnd(pidfd, moved[2*i]); err != nil {
			return err
		}
	}
	return nil
}

// undoOpen closes in the task what a failed openPipes batch left open:
// the fds of the pipe2 calls that ran (read back from the scratch), the
// copies made, less those its closes took.
func (m *SpliceMover) undoOpen(calls []Syscall, res []uint64, n int, callErr error) error {
	fds := make([]byte, 8*n)
	if err := m.sc.Peek(fds, m.sc.Scratch()); err != nil {
		m.broken = true
		return errors.Join(callErr, err)
	}
	open := map[uint64]bool{}
	for k, c := range calls {
		if k > len(res) {
			break // not run
		}
		switch c.Nr {
		case unix.SYS_CLOSE:
			delete(open, c.Args[0]) // (a failed close releases the fd too)
		case unix.SYS_PIPE2:
			if k < len(res) {
				i := (c.Args[0] - m.sc.Scratch()) / 8
				open[uint64(binary.LittleEndian.Uint32(fds[8*i:]))] = true
				open[uint64(binary.LittleEndian.Uint32(fds[8*i+4:]))] = true
			}
		case unix.SYS_FCNTL:
			if k < len(res) {
				open[res[k]] = true
			}
		}
	}
	for fd := range open {
		m.stray = append(m.stray, fd) // closed by Close
	}
	return callErr
}

// takeReadEnd duplicates a pipe's read end (fd tfd in the task) into
// ctr-cr and makes the pipe as large as allowed.
func (m *SpliceMover) takeReadEnd(pidfd int, tfd uint64) error {
	fd, err := unix.PidfdGetfd(pidfd, int(tfd), 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd of the vmsplice pipe: %w", err)
	}
	m.rfds = append(m.rfds, fd)
	size, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, splicePipeSize)
	if err != nil {
		size, err = unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, spliceSmallPipe)
	}
	if err != nil {
		// keep the size it has (16 pages by default)
		size, err = unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return fmt.Errorf("pipe size: %w", err)
		}
	}
	m.slots = append(m.slots, uint64(min(size, splicePipeSize)/PageSize))
	return nil
}

// fdTable returns the fds open in the task (its fd table, read while it
// is stopped) and its RLIMIT_NOFILE soft limit.
func fdTable(pid int) (map[uint64]bool, uint64, error) {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, 0, err
	}
	names, err := d.Readdirnames(-1)
	own := uint64(d.Fd())
	d.Close()
	if err != nil {
		return nil, 0, err
	}
	used := map[uint64]bool{}
	for _, name := range names {
		if fd, err := strconv.ParseUint(name, 10, 32); err == nil {
			used[fd] = true
		}
	}
	if pid == os.Getpid() {
		delete(used, own) // (the tests': the listing's own fd is closed)
	}
	var rl unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &rl); err != nil {
		return nil, 0, fmt.Errorf("fd limit of pid %d: %w", pid, err)
	}
	return used, rl.Cur, nil
}

// closeCalls returns calls closing fds in the task.
func closeCalls(fds []uint64) []Syscall {
	calls := make([]Syscall, 0, len(fds))
	for _, fd := range fds {
		calls = append(calls, Syscall{What: "close vmsplice pipe", Nr: unix.SYS_CLOSE, Args: [6]uint64{fd}})
	}
	return calls
}

// Close closes the pipes (pages still in them are dropped) and unmaps the
// iovec area in the task. Safe to call twice.
func (m *SpliceMover) Close() error {
	for _, fd := range m.rfds {
		unix.Close(fd)
	}
	m.rfds = nil
	// a pipe's two ends in one batch (the pairs' batches hold an even
	// number of calls): a crash between batches leaves whole pairs,
	// which a cleanup knows (internal/oprec)
	var pairs []Syscall
	for i := range m.wfds {
		pairs = append(pairs, closeCalls([]uint64{m.taskRfds[i], m.wfds[i]})...)
	}
	if m.area != 0 {
		pairs = append(pairs, Syscall{What: "munmap vmsplice iovec area", Nr: unix.SYS_MUNMAP, Args: [6]uint64{m.area, spliceMapSize}})
	}
	errs := m.runAll(closeCalls(m.stray))
	errs = append(errs, m.runAll(pairs)...)
	m.taskRfds, m.wfds, m.stray, m.area = nil, nil, nil, 0
	if len(errs) > 0 {
		m.leftover = true // what is left stays recorded
	} else if m.lo != nil && !m.leftover {
		m.lo.Gone()
	}
	return errors.Join(errs...)
}

// runAll runs calls in batches of an even number of calls, going on
// after a failed one, and returns the failures.
func (m *SpliceMover) runAll(calls []Syscall) []error {
	var errs []error
	for len(calls) > 0 {
		n := min(len(calls), max(m.sc.MaxCalls()&^1, 1))
		res, err := m.sc.Calls(calls[:n])
		if err != nil {
			// a batch stops at a failure: go on after the failed call
			errs = append(errs, err)
			n = min(len(res)+1, n)
		}
		calls = calls[n:]
	}
	return errs
}
