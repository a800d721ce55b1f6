package image

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/writeback"
)

// pagesBufSize is the write buffer of a PagesWriter, which only small runs
// go through: writes at least this large bypass the buffer and go straight
// to the file. It is kept small because every page of it is faulted in
// once per pages file (1 MiB cost 256 faults, about 4 ms on the test VM).
const pagesBufSize = 64 << 10

// PagesWriter streams page contents into pages-<name>.img and, on Close,
// writes pagemap-<name>.img describing them. It is not safe for concurrent
// use; use one PagesWriter per goroutine.
type PagesWriter struct {
	w         *Writer
	name      string // the <name> part
	pagesName string // pages-<name>.img
	mapName   string // pagemap-<name>.img

	out io.WriteCloser // the pages file, or the sink's stream
	f   *os.File       // out when it is a regular file of ours, else nil
	bw  *bufio.Writer
	h   hash.Hash
	// streamSum, when set, is the sink stream's own CRC-32C of all it
	// carried: the checksum recorded, h then unused (one pass fewer)
	streamSum func() uint32
	size      int64
	// regular: the pages file is a regular file of ours (not a page
	// server's stream), which spliced pages are hashed from (mapped)
	regular bool
	// wbFrom: the pages file's bytes before it have had their writeback
	// started (startCopiedWriteback)
	wbFrom int64
	// hashFrom..hashFrom+unhashed: spliced data not hashed yet
	// (SplicePages)
	hashFrom, unhashed int64
	hashQ              chan [2]int64 // to the hasher goroutine (hashSpliced)
	hashDone           chan error
	runs               []*imagepb.PagemapEntry
	// ascending is true while every run starts at or after the end of the
	// one before, which rules out overlap without sorting.
	ascending bool
	err       error // sticky: the first write error

	closed   bool
	closeErr error
}

// hashingFile writes to a file and hashes what was written.
type hashingFile struct {
	f io.Writer
	h hash.Hash
}

// crc32cStream is a pages sink's stream that computes the CRC-32C of
// everything written to it (a page server's, which checksums its chunks
// anyway): CRC32C, once all is written, is the pages file's checksum.
type crc32cStream interface {
	CRC32C() uint32
}

func (hf hashingFile) Write(b []byte) (int, error) {
	n, err := writeback.Write(hf.f, b)
	hf.h.Write(b[:n])
	return n, err
}

// CreatePages starts pages-<name>.img and reserves pagemap-<name>.img,
// where name is e.g. "42" or "shmem-7". The caller appends runs with
// WritePages and must Close the PagesWriter before Finish.
func (w *Writer) CreatePages(name string) (*PagesWriter, error) {
	pagesName, err := fileName(kindPages, name)
	if err != nil {
		return nil, loc{dir: w.dir}.err(err)
	}
	mapName, err := fileName(kindPagemap, name)
	if err != nil {
		return nil, loc{dir: w.dir}.err(err)
	}
	if err := w.reserve(pagesName, mapName); err != nil {
		return nil, err
	}
	p := &PagesWriter{
		w: w, name: name, pagesName: pagesName, mapName: mapName,
		h: newWriteSum(), ascending: true, regular: w.pagesSink == nil,
	}
	if w.pagesSink != nil {
		p.out, err = w.pagesSink(pagesName) // elsewhere: see SetPagesSink
	} else {
		// read-write: pages spliced into it are hashed from the file
		p.f, err = w.createFileFlags(pagesName, os.O_RDWR)
		p.out = p.f
	}
	if err != nil {
		return nil, err
	}
	if cs, ok := p.out.(crc32cStream); ok && writeAlgo == algoCRC32C {
		p.streamSum = cs.CRC32C
		p.bw = bufio.NewWriterSize(p.out, pagesBufSize)
	} else {
		p.bw = bufio.NewWriterSize(hashingFile{p.out, p.h}, pagesBufSize)
	}
	w.mu.Lock()
	w.open[p] = struct{}{}
	w.mu.Unlock()
	return p, nil
}

// WritePages appends data, the contents of the pages starting at vaddr, to
// the pages file. vaddr must be page-aligned, len(data) a non-zero multiple
// of PageSize, and the run must not overlap an earlier one. A run that
// starts where the previous one ended extends it in the pagemap. Large
// buffers are written directly, without a copy. After an error the
// PagesWriter is unusable and the dump should Abort.
func (p *PagesWriter) WritePages(vaddr uint64, data []byte) error {
	if err := p.addRun(vaddr, len(data)); err != nil {
		return err
	}
	if err := p.waitHash(); err != nil {
		return err
	}
	if _, err := p.bw.Write(data); err != nil {
		p.err = loc{p.w.dir, p.pagesName}.err(err)
		return p.err
	}
	p.size += int64(len(data))
	p.startCopiedWriteback(false)
	return nil
}

// copiedWritebackSpan is how much written data the copy path lets build up
// in the page cache before it starts its writeback.
const copiedWritebackSpan = 4 << 20

// startCopiedWriteback starts the writeback (startWriteback) of what has
// reached the pages file since the last call, once that is at least
// copiedWritebackSpan bytes, or whatever it is when all is set: the
// image's fdatasync before the dumped tree is killed (Writer.Finish) then
// finds most of the data on its way to disk already, instead of starting
// all of it in the frozen time (a 20-process tree of 8 MiB each: the
// write phase was 120-250 ms). Only for a regular pages file of ours.
func (p *PagesWriter) startCopiedWriteback(all bool) {
	if !p.regular {
		return
	}
	inFile := p.size - int64(p.bw.Buffered())
	if n := inFile - p.wbFrom; n > 0 && (all || n >= copiedWritebackSpan) {
		p.startWriteback(p.wbFrom, n)
		p.wbFrom = inFile
	}
}

// addRun checks the run of size bytes at vaddr (see WritePages) and
// records it in the pagemap, extending the last run when it follows it.
func (p *PagesWriter) addRun(vaddr uint64, size int) error {
	if p.closed {
		return loc{p.w.dir, p.pagesName}.err(errors.New("write after Close"))
	}
	if p.err != nil {
		return p.err
	}
	l := loc{p.w.dir, p.pagesName}
	n := uint64(size) / PageSize
	if vaddr%PageSize != 0 || size%PageSize != 0 || n == 0 || n > (math.MaxUint64-vaddr)/PageSize {
		return l.err(fmt.Errorf("bad run: vaddr %#x, %d bytes: want a page-aligned address and a non-zero multiple of %d bytes that does not wrap", vaddr, size, PageSize))
	}
	if k := len(p.runs); k > 0 {
		last := p.runs[k-1]
		end := last.Vaddr + last.NrPages*PageSize
		switch {
		case vaddr == end:
			last.NrPages += n
			n = 0
		case vaddr < end:
			p.ascending = false
		}
	}
	if n != 0 {
		p.runs = append(p.runs, &imagepb.PagemapEntry{Vaddr: vaddr, NrPages: n})
	}
	return nil
}

// Pages returns the number of pages written so far.
func (p *PagesWriter) Pages() uint64 { return uint64(p.size) / PageSize }

// Close flushes and closes the pages file, then writes pagemap-<name>.img:
// a PagemapHead{pages_file, page_size} and the merged runs in file order.
// It fails if runs overlap. Calling Close again returns the first result.
func (p *PagesWriter) Close() error {
	if p.closed {
		return p.closeErr
	}
	p.closed = true
	p.closeErr = p.close()
	return p.closeErr
}

func (p *PagesWriter) close() error {
	l := loc{p.w.dir, p.pagesName}
	err := p.err
	if werr := p.waitHash(); err == nil {
		err = werr
	}
	if err == nil {
		if ferr := p.bw.Flush(); ferr != nil {
			err = l.err(ferr)
		} else {
			p.startCopiedWriteback(true)
		}
	}
	if cerr := p.out.Close(); err == nil && cerr != nil {
		err = l.err(cerr)
	}
	p.w.mu.Lock()
	delete(p.w.open, p)
	p.w.mu.Unlock()
	if err != nil {
		return err
	}
	if !p.ascending {
		if err := checkRuns(p.runs); err != nil {
			return loc{p.w.dir, p.mapName}.err(err)
		}
	}
	sum := p.h.Sum(nil)
	if p.streamSum != nil {
		sum = binary.BigEndian.AppendUint32(nil, p.streamSum()) // as crc32's Sum
	}
	p.w.record(p.pagesName, p.size, sum)
	msgs := make([]proto.Message, 0, len(p.runs)+1)
	msgs = append(msgs, &imagepb.PagemapHead{PagesFile: p.pagesName, PageSize: PageSize})
	msgs = append(msgs, toMessages(p.runs)...)
	data, err := encodeFile(kindByName(kindPagemap), msgs)
	if err != nil {
		return loc{p.w.dir, p.mapName}.err(err)
	}
	return p.w.writeWhole(p.mapName, data)
}

// runError is a problem with pagemap entry Index (0-based among runs).
type runError struct {
	Index int
	Err   error
}

func (e *runError) Error() string { return e.Err.Error() }
func (e *runError) Unwrap() error { return e.Err }

// checkRuns checks pagemap runs: page-aligned, non-empty, not wrapping
// around the address space, and not overlapping each other.
func checkRuns(runs []*imagepb.PagemapEntry) error {
	_, err := countPages(runs, math.MaxUint64)
	return err
}

// countPages is checkRuns that also returns the total number of pages,
// failing as soon as it would exceed maxPages (so the sum never overflows).
func countPages(runs []*imagepb.PagemapEntry, maxPages uint64) (uint64, error) {
	var total uint64
	ascending := true
	for i, r := range runs {
		bad := func(format string, args ...any) error {
			return &runError{i, fmt.Errorf("%w: run vaddr %#x nr_pages %d: "+format,
				append([]any{ErrCorrupt, r.Vaddr, r.NrPages}, args...)...)}
		}
		switch {
		case r.Vaddr%PageSize != 0:
			return 0, bad("address not page-aligned")
		case r.NrPages == 0:
			return 0, bad("empty run")
		case r.NrPages > (math.MaxUint64-r.Vaddr)/PageSize:
			return 0, bad("run wraps around the address space")
		case r.NrPages > maxPages-total:
			return 0, bad("more pages than the pages file holds (%d)", maxPages)
		}
		total += r.NrPages
		if i > 0 && r.Vaddr < runs[i-1].Vaddr+runs[i-1].NrPages*PageSize {
			ascending = false
		}
	}
	if ascending {
		return total, nil
	}
	idx := make([]int, len(runs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(runs[a].Vaddr, runs[b].Vaddr) })
	for j := 1; j < len(idx); j++ {
		a, b := runs[idx[j-1]], runs[idx[j]]
		if b.Vaddr < a.Vaddr+a.NrPages*PageSize {
			return 0, &runError{idx[j], fmt.Errorf("%w: run vaddr %#x nr_pages %d overlaps run %d (vaddr %#x nr_pages %d)",
				ErrCorrupt, b.Vaddr, b.NrPages, idx[j-1], a.Vaddr, a.NrPages)}
		}
	}
	return total, nil
}

// checkPagemap validates the decoded pagemap-<name>.img (msgs: head, then
// runs) against the size of its pages file.
func checkPagemap(l loc, name string, msgs []proto.Message, pagesSize int64) (*imagepb.PagemapHead, []*imagepb.PagemapEntry, error) {
	head := msgs[0].(*imagepb.PagemapHead)
	runs := make([]*imagepb.PagemapEntry, len(msgs)-1)
	for i, m := range msgs[1:] {
		runs[i] = m.(*imagepb.PagemapEntry)
	}
	want, _ := fileName(kindPages, name)
	if head.PagesFile != want {
		return nil, nil, l.corrupt(0, -1, "head names pages file %q, want %q", head.PagesFile, want)
	}
	if head.PageSize != PageSize {
		return nil, nil, l.corrupt(0, -1, "page size %d, this tool supports %d", head.PageSize, PageSize)
	}
	if pagesSize < 0 || pagesSize%PageSize != 0 {
		return nil, nil, l.corrupt(-1, -1, "%s size %d is not a multiple of the page size", want, pagesSize)
	}
	filePages := uint64(pagesSize) / PageSize
	total, err := countPages(runs, filePages)
	if err != nil {
		var re *runError
		if errors.As(err, &re) {
			return nil, nil, l.at(re.Index+1, -1, re.Err)
		}
		return nil, nil, l.err(err)
	}
	if total != filePages {
		return nil, nil, l.corrupt(-1, -1, "runs total %d pages but %s holds %d", total, want, filePages)
	}
	return head, runs, nil
}
