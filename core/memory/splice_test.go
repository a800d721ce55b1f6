package memory

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image"
)

// selfCalls is a Syscaller whose "task" is the test process itself: the
// calls run here, memory is ours. failVmsplice > 0 makes the
// failVmsplice-th vmsplice fail (EFAULT).
type selfCalls struct {
	vmsplices, failVmsplice int
	mem                     *os.File // /proc/self/mem, read-write
	scratch                 [512]byte
	// disturb: an fd is opened just before the first batch of pipe2
	disturb   bool
	disturbFd int
}

func (s *selfCalls) Calls(calls []Syscall) ([]uint64, error) {
	var out []uint64
	if s.disturb && s.disturbFd == 0 {
		for _, c := range calls {
			if c.Nr == unix.SYS_PIPE2 {
				// someone else takes the lowest free fd meanwhile
				fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					return nil, err
				}
				s.disturbFd = fd
				break
			}
		}
	}
	for _, c := range calls {
		if c.Nr == unix.SYS_VMSPLICE {
			s.vmsplices++
			if s.vmsplices == s.failVmsplice {
				return out, fmt.Errorf("%s: %w", c.What, unix.EFAULT)
			}
			if c.Args[2] > spliceIovecCap {
				return out, fmt.Errorf("%s: %d iovecs, the cap is %d", c.What, c.Args[2], spliceIovecCap)
			}
		}
		a := c.Args
		r, _, e := unix.Syscall6(uintptr(c.Nr), uintptr(a[0]), uintptr(a[1]), uintptr(a[2]), uintptr(a[3]), uintptr(a[4]), uintptr(a[5]))
		if e != 0 {
			return out, fmt.Errorf("%s: %w", c.What, e)
		}
		out = append(out, uint64(r))
	}
	return out, nil
}

func (s *selfCalls) MaxCalls() int { return 32 }

func (s *selfCalls) Scratch() uint64 { return uint64(uintptr(unsafe.Pointer(&s.scratch[0]))) }

// Poke and Peek go through /proc/self/mem, as the dump's go through the
// task's.
func (s *selfCalls) Poke(b []byte, addr uint64) error {
	_, err := s.mem.WriteAt(b, int64(addr))
	return err
}

func (s *selfCalls) Peek(b []byte, addr uint64) error {
	_, err := s.mem.ReadAt(b, int64(addr))
	return err
}

// recordSink keeps what it is given, written or spliced, in order.
type recordSink struct {
	runs    []Run
	data    []byte
	spliced int
}

func (k *recordSink) WritePages(vaddr uint64, data []byte) error {
	k.runs = append(k.runs, Run{Addr: vaddr, Pages: uint64(len(data)) / PageSize})
	k.data = append(k.data, data...)
	return nil
}

func (k *recordSink) SpliceRuns(runs []image.SpliceRun, par int) error {
	for _, r := range runs {
		if err := k.SplicePages(r.Vaddr, r.PipeFd, r.N); err != nil {
			return err
		}
	}
	return nil
}

func (k *recordSink) SplicePages(vaddr uint64, fd int, n int) error {
	b := make([]byte, n)
	for got := 0; got < n; {
		m, err := unix.Read(fd, b[got:])
		if err != nil || m == 0 {
			return errors.Join(err, errors.New("short pipe"))
		}
		got += m
	}
	k.runs = append(k.runs, Run{Addr: vaddr, Pages: uint64(n) / PageSize})
	k.data = append(k.data, b...)
	k.spliced += n / PageSize
	return nil
}

// TestSpliceMoverRuns: runs of one page (more than a pipe holds), long
// runs cut across pipes and batches, shared (copy-on-write) and
// unreadable runs all come out in order with the right contents, through
// the pipes where they can; a failed vmsplice batch sends the rest through
// the buffer, losing nothing; the mover leaves no fd behind.
func TestSpliceMoverRuns(t *testing.T) {
	for _, fail := range []int{0, 1, 20} {
		t.Run(fmt.Sprintf("fail%d", fail), func(t *testing.T) {
			testSpliceMover(t, fail)
		})
	}
	// a pipe whose iovecs run out before its room does (large pipes,
	// small runs): filled that far, the rest goes to the next pipe
	t.Run("iovecCap", func(t *testing.T) {
		defer func(c uint64) { spliceIovecCap = c }(spliceIovecCap)
		spliceIovecCap = 7
		testSpliceMover(t, 0)
	})
}

func testSpliceMover(t *testing.T, fail int) {
	const pages = 9000
	src, err := unix.Mmap(-1, 0, pages*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(src)
	for i := 0; i < pages; i++ {
		for j := 0; j < PageSize; j += 8 {
			src[i*PageSize+j] = byte(i)
			src[i*PageSize+j+1] = byte(i >> 8)
			src[i*PageSize+j+2] = byte(j)
		}
	}
	base := uint64(uintptr(unsafe.Pointer(&src[0])))
	at := func(p uint64) uint64 { return base + p*PageSize }
	var runs []Run
	for p := uint64(0); p < 1200; p += 2 { // 600 one-page runs
		runs = append(runs, Run{Addr: at(p), Pages: 1, Readable: true})
	}
	runs = append(runs, Run{Addr: at(1300), Pages: 5000, Readable: true})            // across pipes and batches
	runs = append(runs, Run{Addr: at(6400), Pages: 3, Readable: false})              // through /proc/self/mem
	runs = append(runs, Run{Addr: at(6500), Pages: 2, Readable: true, Shared: true}) // through /proc/self/mem
	runs = append(runs, Run{Addr: at(6600), Pages: 2000, Readable: true})
	mf, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	rw, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	sc := &selfCalls{failVmsplice: fail, mem: rw}
	fdsBefore, _ := os.ReadDir("/proc/self/fd")
	m, err := OpenSpliceMover(os.Getpid(), sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	// the write ends sit above every fd there was (crash safety: the
	// program's own opens get the numbers they would have got)
	maxBefore := 0
	for _, e := range fdsBefore {
		n, _ := strconv.Atoi(e.Name())
		maxBefore = max(maxBefore, n)
	}
	for _, w := range m.wfds {
		if w <= uint64(maxBefore) {
			t.Errorf("write end at fd %d, not above the fds there were (highest %d)", w, maxBefore)
		}
		if fl, err := unix.FcntlInt(uintptr(w), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("write end %d not close-on-exec (%v)", w, err)
		}
	}
	if want := spliceMaxPipes; len(m.wfds) != want || len(m.rfds) != want {
		t.Errorf("%d write ends, %d read ends, want %d", len(m.wfds), len(m.rfds), want)
	}
	r := &Reader{Pid: os.Getpid(), Mem: mf, Mover: m}
	sink := &recordSink{}
	var st Stats
	if err := r.WriteRuns(runs, sink, &st); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	var want []byte
	var total uint64
	for _, run := range runs {
		want = append(want, src[(run.Addr-base):(run.Addr-base)+run.Pages*PageSize]...)
		total += run.Pages
	}
	if !bytes.Equal(sink.data, want) {
		t.Fatal("contents differ from the runs'")
	}
	if st.PagesWritten != total {
		t.Errorf("PagesWritten %d, want %d", st.PagesWritten, total)
	}
	for i := 1; i < len(sink.runs); i++ {
		if sink.runs[i].Addr < sink.runs[i-1].Addr+sink.runs[i-1].Pages*PageSize {
			t.Fatalf("run %d at %#x before the end of the one before", i, sink.runs[i].Addr)
		}
	}
	switch {
	case fail == 0 && sink.spliced != int(total)-5:
		t.Errorf("%d pages spliced, want all but the 5 unreadable or shared (%d)", sink.spliced, total-5)
	case fail == 1 && sink.spliced != 0:
		t.Errorf("%d pages spliced after the first batch failed", sink.spliced)
	case fail != 0 && m.Fallbacks != 1:
		t.Errorf("Fallbacks %d, want 1", m.Fallbacks)
	}
	fdsAfter, _ := os.ReadDir("/proc/self/fd")
	if fmt.Sprint(fdNames(fdsAfter)) != fmt.Sprint(fdNames(fdsBefore)) {
		t.Errorf("fds open after %v, before %v", fdNames(fdsAfter), fdNames(fdsBefore))
	}
}

func fdNames(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestSpliceMoverFdTableChanged: when the task's fd table changes between
// ctr-cr's look at it and the set-up batch (the pipes would not get the
// numbers foreseen), the batch stops at its check, before any fd is moved
// or closed, and everything it made is closed again: the mover is not
// used and the fd table is as before.
func TestSpliceMoverFdTableChanged(t *testing.T) {
	rw, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	sc := &selfCalls{mem: rw, disturb: true}
	before, _ := os.ReadDir("/proc/self/fd")
	m, err := OpenSpliceMover(os.Getpid(), sc, nil)
	if err == nil {
		m.Close()
		t.Fatal("the mover was set up on a fd table that changed")
	}
	if !strings.Contains(err.Error(), "check the vmsplice pipe") {
		t.Errorf("error %q does not name the check", err)
	}
	if sc.disturbFd == 0 {
		t.Fatal("no fd opened in the way")
	}
	unix.Close(sc.disturbFd)
	after, _ := os.ReadDir("/proc/self/fd")
	if fmt.Sprint(fdNames(after)) != fmt.Sprint(fdNames(before)) {
		t.Errorf("fds open after %v, before %v", fdNames(after), fdNames(before))
	}
}
