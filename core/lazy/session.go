package lazy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Stats are a lazy restore's figures, for --print-stats.
type Stats struct {
	PagesLazy       uint64  `json:"lazy_pages"`            // pages left to come at the start
	PagesOnFault    uint64  `json:"lazy_pages_on_fault"`   // copied in on a first touch
	PagesBackground uint64  `json:"lazy_pages_background"` // copied by the background pass
	PagesDropped    uint64  `json:"lazy_pages_dropped"`    // never needed: unmapped or dropped by the program first
	Faults          uint64  `json:"lazy_faults"`           // faults served (zero pages included)
	Forks           uint64  `json:"lazy_forks"`            // fork children served
	LastPageMs      float64 `json:"lazy_last_page_ms"`     // from the tree's start to the last page in
	Processes       int     `json:"lazy_processes"`        // processes restored lazily
}

// Sequential is the pages file of a process read once in order by the
// background pass, whose checksum is then verified (image.Pages).
type Sequential interface {
	io.ReaderAt
	Verify() error
	Close() error
}

// Process is what AddProcess needs of one restored process.
type Process struct {
	Pid   int   // in ctr-cr's pid namespace
	Pidfd int   // a pidfd of it, owned by the session from now on
	Uffd  int   // its userfaultfd (registered), owned by the session
	Runs  []Run // the pages it is owed, where they are in Source
	// All are the runs of the whole pages file in file order (Seq):
	// the background pass reads it all, for the checksum.
	All    []Run
	Source io.ReaderAt // random reads of the pages
	// SourceCloser, if set, closes Source when the session ends.
	SourceCloser io.Closer
	Seq          Sequential // nil: no checksum pass (owned by the session)
}

// Session serves the memory of one lazily restored tree.
type Session struct {
	guard   *guard
	stop    int // eventfd: readable once the session ends
	mu      sync.Mutex
	mms     []*mm
	pidfds  []int
	closers []io.Closer
	running bool
	start   time.Time
	wg      sync.WaitGroup // background passes
	events  sync.WaitGroup // event loops
	failed  atomic.Bool
	err     error
	st      Stats
	ended   bool
}

// mm is the memory of one process (or fork child) being served.
type mm struct {
	s    *Session
	name string
	uffd int
	src  io.ReaderAt
	seq  Sequential
	all  []Run
	mu   sync.Mutex
	owed *owedSet
	gone bool // its mm exited (ESRCH): nothing more to serve
	bg   bool // its background pass was started
}

// NewSession starts the guard (see guard.go); exe is the ctr-cr binary.
func NewSession(exe string) (*Session, error) {
	g, err := startGuard(exe)
	if err != nil {
		return nil, err
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		g.release()
		return nil, fmt.Errorf("lazy pages: eventfd: %w", err)
	}
	return &Session{guard: g, stop: stop}, nil
}

// AddProcess hands p over to the session: the guard gets a copy of its
// userfaultfd and pidfd (before the process can ever run), and its faults
// are served from now on (the restore's own injected syscalls may touch
// its memory).
func (s *Session) AddProcess(p Process) error {
	if err := s.guard.hold(p.Uffd, p.Pidfd); err != nil {
		unix.Close(p.Uffd)
		unix.Close(p.Pidfd)
		if p.Seq != nil {
			p.Seq.Close()
		}
		if p.SourceCloser != nil {
			p.SourceCloser.Close()
		}
		return err
	}
	m := &mm{s: s, name: fmt.Sprintf("pid %d", p.Pid), uffd: p.Uffd, src: p.Source, seq: p.Seq, all: p.All, owed: newOwed(p.Runs)}
	s.mu.Lock()
	s.mms = append(s.mms, m)
	s.pidfds = append(s.pidfds, p.Pidfd)
	if p.Seq != nil {
		s.closers = append(s.closers, p.Seq)
	}
	if p.SourceCloser != nil {
		s.closers = append(s.closers, p.SourceCloser)
	}
	s.st.PagesLazy += uint64(m.owed.count)
	s.st.Processes++
	s.mu.Unlock()
	s.events.Add(1)
	go m.eventLoop()
	return nil
}

// Start records that the tree runs now and starts the background passes.
func (s *Session) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running, s.start = true, time.Now()
	for _, m := range s.mms {
		s.startBackground(m)
	}
}

// startBackground starts m's background pass (s.mu held).
func (s *Session) startBackground(m *mm) {
	if m.bg {
		return
	}
	m.bg = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := m.background(); err != nil {
			s.fail(err)
		}
	}()
}

// Wait waits until the last page is in (or the session failed: the tree
// is then killed) and ends the session. The tree no longer depends on
// ctr-cr once it returns nil.
func (s *Session) Wait() (*Stats, error) {
	s.wg.Wait()
	s.mu.Lock()
	st := Stats{PagesLazy: s.st.PagesLazy, Processes: s.st.Processes}
	if s.running {
		st.LastPageMs = float64(time.Since(s.start).Microseconds()) / 1000
	}
	s.mu.Unlock()
	st.PagesOnFault = atomic.LoadUint64(&s.st.PagesOnFault)
	st.PagesBackground = atomic.LoadUint64(&s.st.PagesBackground)
	st.Faults = atomic.LoadUint64(&s.st.Faults)
	st.Forks = atomic.LoadUint64(&s.st.Forks)
	st.PagesDropped = st.PagesLazy - min(st.PagesLazy, st.PagesOnFault+st.PagesBackground)
	if !s.end(false) {
		return &st, s.err
	}
	return &st, nil
}

// Abort ends a session whose restore failed: the tree is killed (by the
// restore, and by the guard).
func (s *Session) Abort() {
	s.failed.Store(true)
	s.end(true)
}

// fail records the first error, kills the tree at once and stops the
// passes.
func (s *Session) fail(err error) {
	s.mu.Lock()
	first := !s.failed.Load()
	if first {
		s.err = err
		s.failed.Store(true)
	}
	pidfds := append([]int(nil), s.pidfds...)
	s.mu.Unlock()
	if first {
		killTree(pidfds, true)
		s.guard.kill()
	}
}

// end stops the event loops, closes the userfaultfds and tells the guard
// the outcome: done, or kill the tree (abort: the failed restore kills
// it itself). It reports whether the session succeeded: a failure seen
// by an event loop while it stopped counts.
func (s *Session) end(abort bool) bool {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return !s.failed.Load()
	}
	s.ended = true
	s.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(s.stop, one[:])
	s.events.Wait()
	ok := !s.failed.Load()
	switch {
	case ok:
		s.guard.done()
	case abort:
		s.guard.abort()
	default:
		s.guard.kill()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.mms {
		unix.Close(m.uffd)
	}
	for _, fd := range s.pidfds {
		unix.Close(fd)
	}
	for _, c := range s.closers {
		c.Close()
	}
	unix.Close(s.stop)
	return ok
}

var errAgain = errors.New("again")

var debug = os.Getenv("CTRCR_LAZY_DEBUG") != ""

// eventLoop reads m's userfaultfd: faults are served at once, events
// update what m is owed. A fault whose copy meets a pending event
// (EAGAIN) is served again once the events are read.
func (m *mm) eventLoop() {
	defer m.s.events.Done()
	buf := make([]byte, 64*msgSize)
	var pending []uint64
	for {
		timeout := -1
		if len(pending) > 0 {
			timeout = 1
		}
		fds := []unix.PollFd{{Fd: int32(m.uffd), Events: unix.POLLIN}, {Fd: int32(m.s.stop), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, timeout); err != nil && err != unix.EINTR {
			m.s.fail(fmt.Errorf("lazy pages: %s: poll: %w", m.name, err))
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		n, err := unix.Read(m.uffd, buf)
		if err != nil && err != unix.EAGAIN && err != unix.EINTR {
			m.s.fail(fmt.Errorf("lazy pages: %s: read userfaultfd: %w", m.name, err))
			return
		}
		for i := 0; i+msgSize <= n; i += msgSize {
			msg := parseMsg(buf[i : i+msgSize])
			if debug {
				fmt.Fprintf(os.Stderr, "lazy debug: %s: event %#x %#x %#x %#x\n", m.name, msg.event, msg.a, msg.b, msg.c)
			}
			if msg.event == eventPagefault {
				pending = append(pending, msg.b&^(pageSize-1))
				continue
			}
			if err := m.event(msg); err != nil {
				m.s.fail(err)
				return
			}
		}
		left := pending[:0]
		for _, addr := range pending {
			err := m.serveFault(addr)
			if err == errAgain {
				left = append(left, addr)
				continue
			}
			if err != nil {
				m.s.fail(err)
				return
			}
		}
		pending = left
	}
}

// event applies a non-fault event to what m is owed.
func (m *mm) event(msg msg) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch msg.event {
	case eventRemove, eventUnmap:
		m.owed.dropRange(msg.a, msg.b)
	case eventRemap:
		m.owed.move(msg.a, msg.b, msg.c)
	case eventFork:
		return m.fork(msg.forkUffd)
	default:
		return fmt.Errorf("lazy pages: %s: unexpected userfaultfd event %#x", m.name, msg.event)
	}
	return nil
}

// fork serves the child's new userfaultfd with a copy of what m is
// owed: the child's missing pages are those m had not received when it
// forked (m.mu held; a copy into m meanwhile failed with EAGAIN).
func (m *mm) fork(uffd int) error {
	s := m.s
	c := &mm{s: s, name: m.name + " (fork child)", uffd: uffd, src: m.src, owed: m.owed.clone()}
	if err := s.guard.hold(uffd, -1); err != nil {
		unix.Close(uffd)
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		unix.Close(uffd)
		return nil
	}
	s.mms = append(s.mms, c)
	s.st.PagesLazy += uint64(c.owed.count)
	atomic.AddUint64(&s.st.Forks, 1)
	for _, pfd := range newChildren(s.pidfds) {
		if s.guard.hold(-1, pfd) == nil {
			s.pidfds = append(s.pidfds, pfd)
		} else {
			unix.Close(pfd)
		}
	}
	s.events.Add(1)
	go c.eventLoop()
	if s.running && c.owed.count > 0 {
		s.startBackground(c)
	}
	return nil
}

// serveFault copies in the page at addr (and the owed pages right after
// it, up to 16), or a zero page where nothing is owed.
func (m *mm) serveFault(addr uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gone {
		return nil
	}
	atomic.AddUint64(&m.s.st.Faults, 1)
	n := m.owed.contiguous(addr, 16)
	if n == 0 {
		err := zeroPage(m.uffd, addr)
		switch err {
		case nil:
			return nil
		case unix.EAGAIN:
			return errAgain
		case unix.EEXIST, unix.ENOENT:
			// present already, or its VMA is gone: the waiters retry
			// (and find the page, or no mapping)
			return ignoreGone(wake(m.uffd, addr))
		case unix.ESRCH:
			return nil
		}
		return fmt.Errorf("lazy pages: %s: UFFDIO_ZEROPAGE at %#x: %w", m.name, addr, err)
	}
	off, _ := m.owed.lookup(addr)
	buf := make([]byte, n*pageSize)
	if err := readFull(m.src, buf, off); err != nil {
		return fmt.Errorf("lazy pages: %s: page %#x: read the pages at %d: %w", m.name, addr, off, err)
	}
	done, err := m.copyLocked(addr, buf)
	atomic.AddUint64(&m.s.st.PagesOnFault, done)
	if err == errAgain && done == 0 {
		return errAgain
	}
	if err != nil && err != errAgain {
		return err
	}
	// the faulting page may have been found present (EEXIST): its
	// waiters are not woken by a copy then
	return ignoreGone(wake(m.uffd, addr))
}

// copyLocked copies buf (owed pages) to addr with m.mu held; it returns
// the pages copied. A page found present (EEXIST) or no longer mapped
// (ENOENT) is owed no more; EAGAIN (an event not yet read) is errAgain.
func (m *mm) copyLocked(addr uint64, buf []byte) (uint64, error) {
	var done uint64
	for len(buf) > 0 {
		n, err := copyPages(m.uffd, addr, buf)
		n &^= pageSize - 1
		for a := addr; a < addr+n; a += pageSize {
			m.owed.drop(a)
		}
		done += n / pageSize
		addr, buf = addr+n, buf[n:]
		if debug && err != nil {
			fmt.Fprintf(os.Stderr, "lazy debug: %s: copy %#x+%d: %d, %v\n", m.name, addr, len(buf), n, err)
		}
		switch err {
		case nil:
		case unix.ENOENT:
			// no registered VMA holds the whole range: page by page,
			// so that only a page whose VMA is gone is given up
			if len(buf) > pageSize {
				for len(buf) > 0 {
					d, err := m.copyLocked(addr, buf[:pageSize])
					done += d
					if err != nil {
						return done, err
					}
					addr, buf = addr+pageSize, buf[pageSize:]
				}
				return done, nil
			}
			m.owed.drop(addr)
			addr, buf = addr+pageSize, buf[pageSize:]
		case unix.EEXIST:
			if len(buf) > 0 {
				m.owed.drop(addr)
				addr, buf = addr+pageSize, buf[pageSize:]
			}
		case unix.EAGAIN:
			return done, errAgain
		case unix.ESRCH:
			m.gone = true
			return done, nil
		default:
			return done, fmt.Errorf("lazy pages: %s: UFFDIO_COPY at %#x: %w", m.name, addr, err)
		}
	}
	return done, nil
}

func ignoreGone(err error) error {
	if err == unix.ESRCH || err == unix.ENOENT {
		return nil
	}
	return err
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
