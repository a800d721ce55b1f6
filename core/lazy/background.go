package lazy

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/fault"
)

const chunkPages = 256 // 1 MiB per read and copy in the background

// slowChunk is a test aid: CTRCR_LAZY_SLOW_MS=N makes the background pass
// sleep N ms before each chunk, so that a test's program meets missing
// pages (and a test can kill ctr-cr mid-way). Unset outside tests.
var slowChunk = func() time.Duration {
	ms, _ := strconv.Atoi(os.Getenv("CTRCR_LAZY_SLOW_MS"))
	return time.Duration(ms) * time.Millisecond
}()

// pace runs before each background chunk: the test aids above and
// fault.Step("lazy-chunk") (CTRCR_FAULT=lazy-chunk:N kills ctr-cr at
// the N-th chunk).
func pace() {
	fault.Step("lazy-chunk")
	if slowChunk > 0 {
		time.Sleep(slowChunk)
	}
}

// background copies in everything m is still owed: first, for a
// restored process, one in-order pass over its whole pages file (the
// file's checksum is verified at its end: a damaged image kills the
// tree), then sweeps over what is left (pages moved by mremap, a fork
// child's), until nothing is owed or the mm is gone.
func (m *mm) background() error {
	if m.seq != nil {
		if err := m.sequentialPass(); err != nil {
			return err
		}
	}
	return m.sweep()
}

func (m *mm) stopped() bool {
	if m.s.failed.Load() {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gone
}

// sequentialPass reads m's pages file in order, copying in the owed pages
// it holds, then verifies the file's checksum.
func (m *mm) sequentialPass() error {
	buf := make([]byte, chunkPages*pageSize)
	for _, r := range m.all {
		for i := 0; i < r.NrPages; i += chunkPages {
			if m.stopped() {
				return nil
			}
			pace()
			n := min(chunkPages, r.NrPages-i)
			b := buf[:n*pageSize]
			off := r.Off + int64(i)*pageSize
			if err := readFull(m.seq, b, off); err != nil {
				return fmt.Errorf("lazy pages: %s: read the pages at %d: %w", m.name, off, err)
			}
			if err := m.copyOwed(r.Addr+uint64(i)*pageSize, off, b); err != nil {
				return err
			}
		}
	}
	if err := m.seq.Verify(); err != nil {
		return fmt.Errorf("lazy pages: %s: %w", m.name, err)
	}
	return nil
}

// segment is a range of owed pages contiguous in the mm and the source.
type segment struct {
	addr uint64
	off  int64
	n    int
}

// sweep copies in what m is owed, from the random-access source.
func (m *mm) sweep() error {
	buf := make([]byte, chunkPages*pageSize)
	for !m.stopped() {
		segs := m.owedSegments(64)
		if len(segs) == 0 {
			return nil
		}
		for _, sg := range segs {
			pace()
			b := buf[:sg.n*pageSize]
			if err := readFull(m.src, b, sg.off); err != nil {
				return fmt.Errorf("lazy pages: %s: read the pages at %d: %w", m.name, sg.off, err)
			}
			if err := m.copyOwed(sg.addr, sg.off, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// owedSegments lists up to limit segments of what m is owed.
func (m *mm) owedSegments(limit int) []segment {
	m.mu.Lock()
	defer m.mu.Unlock()
	var segs []segment
	if m.owed.count == 0 || m.gone {
		return nil
	}
	for _, r := range m.owed.runs {
		for i := 0; i < r.n && len(segs) < limit; {
			if r.owed[i/64] == 0 && i%64 == 0 {
				i += 64
				continue
			}
			if !r.has(i) {
				i++
				continue
			}
			j := i + 1
			for j < r.n && j-i < chunkPages && r.has(j) {
				j++
			}
			segs = append(segs, segment{addr: r.start + uint64(i)*pageSize, off: r.off + int64(i)*pageSize, n: j - i})
			i = j
		}
	}
	for a, off := range m.owed.moved {
		if len(segs) >= limit {
			break
		}
		segs = append(segs, segment{addr: a, off: off, n: 1})
	}
	return segs
}

// copyOwed copies in the pages of b (read from the source at off, for
// the mm at addr) that m still owes from there. An event not yet read
// (EAGAIN) makes it wait for the event loop and look again.
func (m *mm) copyOwed(addr uint64, off int64, b []byte) error {
	n := len(b) / pageSize
	for {
		again := false
		m.mu.Lock()
		for i := 0; i < n && !m.gone; {
			if !m.owes(addr, off, i) {
				i++
				continue
			}
			j := i + 1
			for j < n && m.owes(addr, off, j) && m.owed.sameRun(addr+uint64(i)*pageSize, addr+uint64(j)*pageSize) {
				j++
			}
			done, err := m.copyLocked(addr+uint64(i)*pageSize, b[i*pageSize:j*pageSize])
			atomic.AddUint64(&m.s.st.PagesBackground, done)
			if err == errAgain {
				again = true
				break
			}
			if err != nil {
				m.mu.Unlock()
				return err
			}
			i = j
		}
		m.mu.Unlock()
		if !again || m.s.failed.Load() {
			return nil
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// owes reports whether page i of a chunk at addr/off is owed from there
// (m.mu held).
func (m *mm) owes(addr uint64, off int64, i int) bool {
	o, ok := m.owed.lookup(addr + uint64(i)*pageSize)
	return ok && o == off+int64(i)*pageSize
}
