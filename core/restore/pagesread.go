package restore

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/memory"
)

// How a process's own pages (pages-<pid>.img) get into the task: the
// pages that land in VMAs the task may write (the private anonymous
// memory that is nearly all of a big image) are read by the task itself.
// The pages file is installed in it (pidfd_getfd, in the batch that
// installs the mapped files) and it makes one pread64 per contiguous
// part, in the batch that finishes the memory (guards, mprotect, seals),
// so every page is copied once, from the page cache into place, with no
// buffer of ours and no round trip of its own. The rest (read-only VMAs,
// which only /proc/PID/mem's forced writes reach) goes through a buffer.
// VMAs filled early for copy-on-write sharing (cowfork.go) are left
// alone. Meanwhile ctr-cr computes the file's checksum over the whole
// file (verifyPages; the file is in the page cache, so that is a read of
// memory, on the other CPU), and restoreMemory fails on a mismatch, long
// before the task runs.

// pagesFileKey is the pages file's entry among installMapFiles' fds.
const pagesFileKey = "pages"

// maxReadChunk bounds one injected pread64: the kernel moves at most
// MAX_RW_COUNT (2 GiB less a page) per call, so larger parts are cut.
const maxReadChunk = 1 << 30

// taskRead is one pread64 the task makes: n bytes at file offset off to
// addr.
type taskRead struct {
	addr, n uint64
	off     int64
}

// pagesFileFd returns ctr-cr's fd of the process's pages file when it has
// pages the task may read itself (any at all: which of them is known
// once the VMAs are made).
func (r *restorer) pagesFileFd() (int, bool) {
	if len(r.pr.pmap) == 0 || r.pr.pages == nil || r.tree.lazy != nil {
		return -1, false
	}
	f, ok := r.pr.pages.Raw().(*os.File)
	if !ok {
		return -1, false
	}
	// a larger readahead window for the task's sequential reads (the
	// open file description is shared with the task's copy of the fd)
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	return int(f.Fd()), true
}

// verifyPages starts the check of the pages file's deferred checksum over
// the whole file and returns the function that waits for its verdict
// (the same verdict on every call). Every path out of restoreMemory must
// wait: the check reads the file, which a retried restore rewinds.
func (r *restorer) verifyPages() func() error {
	if r.pr.pages == nil || r.tree.lazy != nil { // lazy: the session's pass verifies
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() { done <- r.pr.pages.VerifyMapped() }()
	return sync.OnceValue(func() error { return <-done })
}

// fillOwnPages writes, through /proc/PID/mem, the pages that lie outside
// the task's writable private mappings (as maps, the task's maps text,
// shows them now), and returns the reads the task is to make for the
// rest, which needs the pages file installed in the task (inTask), and
// the parts ctr-cr writes beside them (pageswrite.go; none in unsettled
// VMAs); it returns the number of pages it wrote.
func (r *restorer) fillOwnPages(maps string, inTask bool, unsettled memory.Spans) ([]taskRead, []memory.PagePart, uint64, error) {
	var writable memory.Spans
	if inTask {
		var err error
		if writable, err = parseWritable(maps); err != nil {
			return nil, nil, 0, err
		}
	}
	inParts, outParts := memory.SplitRuns(r.pr.pmap, writable, r.earlySpans())
	n, err := memory.FillParts(memAt{r.mem}, outParts, r.pr.pages.Raw())
	if err != nil {
		return nil, nil, n, err
	}
	inParts, ours := shareParts(inParts, writable.Subtract(unsettled))
	var reads []taskRead
	for _, p := range inParts {
		for done := uint64(0); done < p.Len; {
			rd := taskRead{p.Addr + done, min(p.Len-done, maxReadChunk), p.Off + int64(done)}
			reads = append(reads, rd)
			done += rd.n
		}
	}
	return reads, ours, n, nil
}

// addReads adds to b the task's pread64s from its fd fd of the pages
// file, then the close of fd: they must come first in b (checkReads).
func addReads(b *callBatch, fd uint64, reads []taskRead) {
	for _, rd := range reads {
		b.add(fmt.Sprintf("pread64 of %d bytes of pages at offset %d into %#x", rd.n, rd.off, rd.addr), unix.SYS_PREAD64, fd, rd.addr, rd.n, uint64(rd.off))
	}
	b.add("close (pages file)", unix.SYS_CLOSE, fd)
}

// checkReads checks the results of the batch that starts with addReads'
// calls: a short read (a file shorter than its pagemap says, a page the
// kernel cannot fault in) is an error naming the read. It returns the
// number of pages read.
func checkReads(res []uint64, reads []taskRead) (uint64, error) {
	var pages uint64
	for i, rd := range reads {
		if i >= len(res) || res[i] != rd.n {
			var got uint64
			if i < len(res) {
				got = res[i]
			}
			return pages, fmt.Errorf("pread64 of pages at offset %d into %#x: %d bytes of %d", rd.off, rd.addr, got, rd.n)
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

// parseWritable picks the writable private mappings ("rw?p") of a maps
// text: the task's own writes reach those (a write elsewhere needs
// /proc/PID/mem's FOLL_FORCE).
func parseWritable(maps string) (memory.Spans, error) {
	var s memory.Spans
	sc := bufio.NewScanner(strings.NewReader(maps))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rng, rest, ok := strings.Cut(line, " ")
		if !ok || len(rest) < 4 || rest[1] != 'w' || rest[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(rng, "-")
		if !ok {
			return nil, fmt.Errorf("maps line %q", line)
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
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
