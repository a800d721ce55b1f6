package restore

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/memory"
)

// maxReadChunk bounds one injected pread64: the kernel moves at most
// MAX_RW_COUNT (2 GiB less a page) per call, so larger parts are cut.
const maxReadChunk = 1 << 30

// fillOwnPages writes the process's own pages (pages-<pid>.img) into the
// task and checks the file's checksum, all before the task can run.
//
// The pages that land in VMAs the task may write (the private anonymous
// memory that is nearly all of a big image) are read by the task itself:
// the pages file is installed in it (pidfd_getfd) and it makes one
// pread64 per contiguous part, all in one injected batch, so every page
// is copied once, from the page cache into place, with no round trip
// through a buffer of ours. While it reads, ctr-cr hashes the whole file
// (a deferred checksum; the file is in the page cache, so this is a read
// of memory on the other CPU) and a mismatch fails the restore. The rest
// (read-only VMAs, which only /proc/PID/mem's forced writes reach) goes
// through a buffer as before; VMAs filled early for copy-on-write sharing
// (cowfork.go) are left alone.
func (r *restorer) fillOwnPages() (uint64, error) {
	f, isFile := r.pr.pages.Raw().(*os.File)
	var in memory.Spans
	if isFile {
		var err error
		if in, err = writableSpans(r.pid); err != nil {
			return 0, err
		}
	}
	inParts, outParts := memory.SplitRuns(r.pr.pmap, in, r.earlySpans())
	if len(inParts) == 0 {
		// nothing for the task to read: the single in-order pass
		n, err := memory.Fill(r.fillDst(memAt{r.mem}), r.pr.pmap, r.pr.pages)
		if err != nil {
			return n, err
		}
		return n, r.pr.pages.Verify()
	}
	// a larger readahead window for the task's sequential reads (the
	// description is shared with the task's copy of the fd)
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	verified := make(chan error, 1)
	go func() { verified <- r.pr.pages.Verify() }()
	n, err := r.injectReads(int(f.Fd()), inParts)
	if err == nil {
		var m uint64
		m, err = memory.FillParts(memAt{r.mem}, outParts, f)
		n += m
	}
	// the checksum's verdict is awaited even after an error: the goroutine
	// must be done with the file before it is closed
	if verr := <-verified; err == nil {
		err = verr
	}
	return n, err
}

// injectReads installs the pages file (fd, ctr-cr's) in the task and has
// the task pread64 every part into place, in one batch, then close it. A
// short read (a file shorter than its pagemap says, a page the kernel
// cannot fault in) is an error naming the part.
func (r *restorer) injectReads(fd int, parts []memory.PagePart) (uint64, error) {
	gb := r.batch(0)
	gb.add("pidfd_getfd (pages file)", unix.SYS_PIDFD_GETFD, r.pidfd, uint64(fd), 0)
	res, err := gb.run()
	if err != nil {
		return 0, err
	}
	tfd := res[0]
	type read struct {
		addr, n uint64
		off     int64
	}
	var reads []read
	b := r.batch(0)
	for _, p := range parts {
		for done := uint64(0); done < p.Len; {
			rd := read{p.Addr + done, min(p.Len-done, maxReadChunk), p.Off + int64(done)}
			b.add(fmt.Sprintf("pread64 of %d bytes of pages at offset %d into %#x", rd.n, rd.off, rd.addr), unix.SYS_PREAD64, tfd, rd.addr, rd.n, uint64(rd.off))
			reads = append(reads, rd)
			done += rd.n
		}
	}
	b.add("close (pages file)", unix.SYS_CLOSE, tfd)
	res, err = b.run()
	if err != nil {
		// the fd may still be open in the task: the failed restore kills it
		return 0, err
	}
	var pages uint64
	for i, rd := range reads {
		if res[i] != rd.n {
			return pages, fmt.Errorf("pread64 of pages at offset %d into %#x: %d bytes of %d", rd.off, rd.addr, res[i], rd.n)
		}
		pages += rd.n / memory.PageSize
	}
	return pages, nil
}

// earlySpans are the VMAs stageCow mapped and filled already.
func (r *restorer) earlySpans() memory.Spans {
	if r.cow == nil || !r.cow.staged {
		return nil
	}
	s := make(memory.Spans, 0, len(r.cow.early))
	for _, v := range r.cow.early {
		s = append(s, memory.Span{Start: v.Start, End: v.End})
	}
	return s.Union(nil)
}

// writableSpans reads from /proc/PID/maps the private mappings of pid
// that are writable now: the task's own writes reach those (a write
// elsewhere needs /proc/PID/mem's FOLL_FORCE).
func writableSpans(pid int) (memory.Spans, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	return parseWritable(b)
}

// parseWritable picks the "rw?p" lines of a maps text.
func parseWritable(b []byte) (memory.Spans, error) {
	var s memory.Spans
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		rng, rest, ok := bytes.Cut(line, []byte(" "))
		if !ok || len(rest) < 4 || rest[1] != 'w' || rest[3] != 'p' {
			continue
		}
		lo, hi, ok := bytes.Cut(rng, []byte("-"))
		if !ok {
			return nil, fmt.Errorf("maps line %q", line)
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("maps line %q", line)
		}
		s = append(s, memory.Span{Start: start, End: end})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return s.Union(nil), nil
}
