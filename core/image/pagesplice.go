package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// SplicePages appends n bytes, the contents of the pages starting at vaddr,
// taken from the pipe pipeFd with splice(2): the pages go from the pipe
// into the file's page cache without passing through a buffer of ours.
// The pipe must hold at least n bytes. The rules of WritePages apply to
// vaddr and n. What was spliced is then hashed from the file itself
// (mapped, not copied), so the pages file's checksum covers it like any
// written data. When the pages file is a stream (a page server's, see
// Writer.SetPagesSink), which cannot be mapped back to hash it, the pages
// are read from the pipe and written instead.
func (p *PagesWriter) SplicePages(vaddr uint64, pipeFd int, n int) error {
	if !p.regular {
		return p.copyFromPipe(vaddr, pipeFd, n)
	}
	if err := p.addRun(vaddr, n); err != nil {
		return err
	}
	l := loc{p.w.dir, p.pagesName}
	// buffered small runs go first: the file's offset is where the
	// spliced pages land
	if err := p.bw.Flush(); err != nil {
		p.err = l.err(err)
		return p.err
	}
	fd := int(p.f.Fd())
	for moved := 0; moved < n; {
		k, err := unix.Splice(pipeFd, nil, fd, nil, n-moved, unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err == nil && k == 0 {
			err = errors.New("pipe empty")
		}
		if err != nil {
			p.err = l.err(fmt.Errorf("splice %d bytes of the pages at %#x into the file: %w", n-moved, vaddr, err))
			return p.err
		}
		moved += int(k)
	}
	if p.unhashed == 0 {
		p.hashFrom = p.size
	}
	p.size += int64(n)
	p.unhashed += int64(n)
	if p.unhashed >= hashBatch {
		p.hashSpliced()
	}
	return nil
}

// SpliceRun is N bytes of pages from Vaddr waiting in the pipe PipeFd.
type SpliceRun struct {
	Vaddr  uint64
	PipeFd int
	N      int
}

// SpliceRuns appends runs in order, as SplicePages would one after the
// other, splicing up to par pipes at once, each into its own part of the
// file (splice with an output offset; the runs of one pipe one after the
// other, in order, as they lie in it). The copy into the page cache is
// most of a large dump's time; with par 2 it runs on two cores when they
// are free, and on a busy machine two runnable threads get a larger
// share of the CPUs than one. The pages are hashed in file order
// afterwards, as SplicePages's are.
func (p *PagesWriter) SpliceRuns(runs []SpliceRun, par int) error {
	if !p.regular || par <= 1 || len(runs) < 2 {
		for _, r := range runs {
			if err := p.SplicePages(r.Vaddr, r.PipeFd, r.N); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range runs {
		if err := p.addRun(r.Vaddr, r.N); err != nil {
			return err
		}
	}
	l := loc{p.w.dir, p.pagesName}
	if err := p.bw.Flush(); err != nil {
		p.err = l.err(err)
		return p.err
	}
	offs := make([]int64, len(runs))
	end := p.size
	for i, r := range runs {
		offs[i] = end
		end += int64(r.N)
	}
	// a pipe's runs come out of it in order: one worker takes them all
	var byPipe [][]int
	slot := map[int]int{}
	for i, r := range runs {
		k, ok := slot[r.PipeFd]
		if !ok {
			k = len(byPipe)
			slot[r.PipeFd] = k
			byPipe = append(byPipe, nil)
		}
		byPipe[k] = append(byPipe[k], i)
	}
	fd := int(p.f.Fd())
	var next atomic.Int64
	errs := make([]error, par)
	var wg sync.WaitGroup
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= len(byPipe) {
					return
				}
				for _, i := range byPipe[k] {
					r := runs[i]
					if err := spliceAt(r.PipeFd, fd, offs[i], r.N); err != nil {
						errs[w] = fmt.Errorf("splice %d bytes of the pages at %#x into the file: %w", r.N, r.Vaddr, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		p.err = l.err(err)
		return p.err
	}
	// the file position follows: buffered writes and SplicePages go on
	// from the end
	if _, err := p.f.Seek(end, io.SeekStart); err != nil {
		p.err = l.err(err)
		return p.err
	}
	if p.unhashed == 0 {
		p.hashFrom = p.size
	}
	p.unhashed += end - p.size
	p.size = end
	if p.unhashed >= hashBatch {
		p.hashSpliced()
	}
	return nil
}

// spliceAt moves n bytes from the pipe pipeFd into the file fd at off.
func spliceAt(pipeFd, fd int, off int64, n int) error {
	for moved := 0; moved < n; {
		o := off + int64(moved)
		k, err := unix.Splice(pipeFd, nil, fd, &o, n-moved, unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err == nil && k == 0 {
			err = errors.New("pipe empty")
		}
		if err != nil {
			return err
		}
		moved += int(k)
	}
	return nil
}

// hashBatch is how much spliced data waits before it is hashed: one
// mapping of 16 MiB costs less than sixteen of 1 MiB, and the pages are
// still warm in the cache.
const hashBatch = 16 << 20

// hashSpliced hands the spliced data not hashed yet to the hasher, a
// goroutine that hashes while the next pages are spliced (on another core
// when there is one). The checksum is one stream in file order: spans are
// hashed in the order given, and waitHash must be called before anything
// else is hashed (written through the buffer).
func (p *PagesWriter) hashSpliced() {
	if p.unhashed == 0 {
		return
	}
	if p.hashQ == nil {
		p.hashQ = make(chan [2]int64, 64)
		p.hashDone = make(chan error, 1)
		go func(q <-chan [2]int64, done chan<- error) {
			var err error
			for s := range q {
				if err == nil {
					err = p.hashFile(s[0], int(s[1]))
					p.startWriteback(s[0], s[1])
				}
			}
			done <- err
		}(p.hashQ, p.hashDone)
	}
	p.hashQ <- [2]int64{p.hashFrom, p.unhashed}
	p.unhashed = 0
}

// startWriteback starts the disk writes of bytes off..off+n of the pages
// file (sync_file_range(SYNC_FILE_RANGE_WRITE), best effort), which the
// hasher has just read: the image's fdatasync before the dumped processes
// are killed (Writer.Finish) then waits for the last spans only, not for
// the whole file (the writes of a 1 GiB dump overlap with its splicing).
// It never makes anything durable itself; Finish's fdatasync does.
func (p *PagesWriter) startWriteback(off, n int64) {
	if !noWriteback {
		unix.SyncFileRange(int(p.f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
}

// noWriteback (CTRCR_NO_WRITEBACK=1) leaves all writeback to the final
// fdatasync, for comparisons.
var noWriteback = os.Getenv("CTRCR_NO_WRITEBACK") != ""

// waitHash hashes what spliced data is left and waits for the hasher; it
// returns (and keeps) the hasher's error.
func (p *PagesWriter) waitHash() error {
	p.hashSpliced()
	if p.hashQ == nil {
		return p.err
	}
	close(p.hashQ)
	err := <-p.hashDone
	p.hashQ, p.hashDone = nil, nil
	if err != nil && p.err == nil {
		p.err = loc{p.w.dir, p.pagesName}.err(err)
	}
	return p.err
}

// hashWindow is the most of the pages file mapped at once to hash it.
const hashWindow = 64 << 20

// hashFile adds bytes off..off+n of the pages file (off page-aligned) to
// the checksum. They are read through a shared read-only mapping of the
// file: the page cache pages just filled are hashed in place, no copy. A
// file system that cannot map the file is read instead.
func (p *PagesWriter) hashFile(off int64, n int) error {
	fd := int(p.f.Fd())
	for n > 0 {
		k := min(n, hashWindow)
		m, err := unix.Mmap(fd, off, k, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return p.hashRead(off, n)
		}
		p.h.Write(m)
		if err := unix.Munmap(m); err != nil {
			return fmt.Errorf("unmap the pages file: %w", err)
		}
		off += int64(k)
		n -= k
	}
	return nil
}

// hashRead is hashFile by pread into a buffer.
func (p *PagesWriter) hashRead(off int64, n int) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		b := buf[:min(n, len(buf))]
		if _, err := p.f.ReadAt(b, off); err != nil {
			return fmt.Errorf("read back the spliced pages at %d: %w", off, err)
		}
		p.h.Write(b)
		off += int64(len(b))
		n -= len(b)
	}
	return nil
}

// copyFromPipe is SplicePages for a pages file that is a stream: the n
// bytes are read from the pipe into a buffer and written (WritePages).
func (p *PagesWriter) copyFromPipe(vaddr uint64, pipeFd int, n int) error {
	if n%PageSize != 0 || n <= 0 {
		return p.addRun(vaddr, n) // fails, naming the bad run
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		b := buf[:min(n, len(buf))]
		for got := 0; got < len(b); {
			k, err := unix.Read(pipeFd, b[got:])
			if err == unix.EINTR {
				continue
			}
			if err == nil && k == 0 {
				err = errors.New("pipe empty")
			}
			if err != nil {
				p.err = loc{p.w.dir, p.pagesName}.err(fmt.Errorf("read the pages at %#x from their pipe: %w", vaddr, err))
				return p.err
			}
			got += k
		}
		if err := p.WritePages(vaddr, b); err != nil {
			return err
		}
		vaddr += uint64(len(b))
		n -= len(b)
	}
	return nil
}
