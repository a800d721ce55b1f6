package memory

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// pagemap bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent  = 1 << 63
	pmSwapped  = 1 << 62
	pmFilePage = 1 << 61 // file page or shared anon
	pmPfnMask  = (1 << 55) - 1
)

// Sink receives runs of page contents in ascending address order. data is
// only valid during the call (the buffer is reused).
type Sink interface {
	WritePages(vaddr uint64, data []byte) error
}

// Stats counts pages for --print-stats.
type Stats struct {
	PagesScanned uint64
	PagesWritten uint64
	PagesZero    uint64
}

// bufSize is the size of a reused read buffer: large reads, bounded RSS.
const bufSize = 4 << 20

// bufs holds the free read buffers. They are mapped outside the Go heap
// (no garbage for the collector, no zeroing by the runtime), on a huge page
// where the kernel allows it, and prefaulted in one call: a fresh buffer
// of small pages cost a page fault per 4 KiB on its first fill, several
// milliseconds per MiB-sized buffer.
var bufs struct {
	mu   sync.Mutex
	free [][]byte
}

// getBuf returns a read buffer for up to need bytes: a pooled full-size
// one, or, for less than bufSize, one of just the pages needed (a small
// process's dump or restore then neither zeroes 4 MiB nor waits for the
// kernel to compact memory into a huge page, which cost up to ~10 ms).
func getBuf(need uint64) []byte {
	bufs.mu.Lock()
	if n := len(bufs.free); n > 0 {
		b := bufs.free[n-1]
		bufs.free = bufs.free[:n-1]
		bufs.mu.Unlock()
		return b
	}
	bufs.mu.Unlock()
	size := bufSize
	if need < bufSize {
		size = int(max(need, 1)+PageSize-1) / PageSize * PageSize
	}
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, size)
	}
	if size == bufSize {
		unix.Madvise(b, unix.MADV_HUGEPAGE)
	}
	if unix.Madvise(b, unix.MADV_POPULATE_WRITE) != nil {
		for i := 0; i < len(b); i += PageSize {
			b[i] = 0
		}
	}
	return b
}

// putBuf gives b back: full-size buffers go to the pool, smaller mapped
// ones are unmapped.
func putBuf(b []byte) {
	b = b[:cap(b)]
	if len(b) < bufSize {
		unix.Munmap(b) // fails harmlessly for a Go-heap fallback buffer
		return
	}
	bufs.mu.Lock()
	bufs.free = append(bufs.free, b)
	bufs.mu.Unlock()
}

var zeroPFN struct {
	once sync.Once
	pfn  uint64
	ok   bool
}

// ZeroPFN returns the frame number of the kernel's shared zero page, learnt
// by reading one untouched anonymous page of our own. Pages mapped to it hold
// zeros and are not dumped.
func ZeroPFN() (uint64, bool) {
	zeroPFN.once.Do(func() {
		m, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return
		}
		defer unix.Munmap(m)
		probeSink += m[0] // read fault maps the zero page (a plain `_ = m[0]` is compiled away)
		f, err := os.Open("/proc/self/pagemap")
		if err != nil {
			return
		}
		defer f.Close()
		var b [8]byte
		addr := uint64(uintptrOf(m))
		if _, err := f.ReadAt(b[:], int64(addr/PageSize*8)); err != nil {
			return
		}
		e := binary.LittleEndian.Uint64(b[:])
		if e&pmPresent != 0 && e&pmPfnMask != 0 {
			zeroPFN.pfn, zeroPFN.ok = e&pmPfnMask, true
		}
	})
	return zeroPFN.pfn, zeroPFN.ok
}

// hugeZeroPages is the number of base pages of the huge zero page (2 MiB
// on x86-64).
const hugeZeroPages = 512

var hugeZeroPFN struct {
	once sync.Once
	pfn  uint64
	ok   bool
}

// HugeZeroPFN returns the first frame number of the kernel's huge zero page
// (the 2 MiB zero page a read fault maps into MADV_HUGEPAGE or THP-always
// memory), learnt by read-faulting one 2 MiB-aligned MADV_HUGEPAGE region
// of our own. ok is false when the kernel maps no huge zero page (THP off,
// use_zero_page 0, or no 2 MiB page free): then no process maps it either,
// or it is another one than ours could be. Our mm keeps its reference for
// our lifetime, so the frame cannot change meanwhile.
func HugeZeroPFN() (uint64, bool) {
	hugeZeroPFN.once.Do(func() {
		const huge = hugeZeroPages * PageSize
		m, err := unix.Mmap(-1, 0, 2*huge, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return
		}
		defer unix.Munmap(m)
		base := uint64(uintptrOf(m))
		off := (huge - base%huge) % huge
		region := m[off : off+huge]
		if unix.Madvise(region, unix.MADV_HUGEPAGE) != nil {
			return
		}
		probeSink += region[0] // read fault: the huge zero page where enabled
		f, err := os.Open("/proc/self/pagemap")
		if err != nil {
			return
		}
		defer f.Close()
		var b [8]byte
		if _, err := f.ReadAt(b[:], int64((base+off)/PageSize*8)); err != nil {
			return
		}
		e := binary.LittleEndian.Uint64(b[:])
		pfn := e & pmPfnMask
		zpfn, _ := ZeroPFN()
		// the huge zero page is not an anonymous page: pagemap marks it
		// as a file page; a real THP or the small zero page would not be
		// both that and 2 MiB-aligned
		if e&pmPresent != 0 && e&pmFilePage != 0 && pfn != 0 && pfn%hugeZeroPages == 0 && pfn != zpfn {
			hugeZeroPFN.pfn, hugeZeroPFN.ok = pfn, true
		}
	})
	return hugeZeroPFN.pfn, hugeZeroPFN.ok
}

// probeSink keeps the probing reads from being optimised away.
var probeSink byte

// zeroFrames tells whether a present page maps one of the kernel's zero
// pages (the small one, or a base page of the huge one): such pages read
// as zeros and are not dumped.
type zeroFrames struct {
	small, huge     uint64
	smallOK, hugeOK bool
}

func loadZeroFrames() zeroFrames {
	var z zeroFrames
	z.small, z.smallOK = ZeroPFN()
	z.huge, z.hugeOK = HugeZeroPFN()
	return z
}

func (z zeroFrames) zero(pfn uint64) bool {
	return (z.smallOK && pfn == z.small) || (z.hugeOK && pfn >= z.huge && pfn < z.huge+hugeZeroPages)
}

// Reader reads a stopped task's memory: process_vm_readv where the mapping is
// readable, /proc/PID/mem (FOLL_FORCE) where it is not.
type Reader struct {
	Pid     int
	Mem     io.ReaderAt     // /proc/PID/mem
	Pagemap io.ReaderAt     // /proc/PID/pagemap
	Ctx     context.Context // checked between VMAs: a cancelled dump stops
	// Skip lists pages (ascending) not to read: saved elsewhere (the
	// pages a child shares with its parent, cow.go).
	Skip []*imagepb.PagemapEntry
	// Live says the task runs while its pages are read (a pre-dump): a
	// run that can no longer be read is left out (it was unmapped, so the
	// next round finds it written or gone).
	Live bool
	// Mover, when set, moves readable pages not shared without a copy in
	// ctr-cr (vmsplice in the task, splice into the image file).
	Mover *SpliceMover
}

// Run is a run of consecutive pages of a task to save: Pages pages from
// Addr, all in one VMA. Readable says that VMA is mapped readable; Shared
// that a page of the run may be mapped more than once (copy-on-write
// shared with another process) or is swapped out. Such a run is read
// through /proc/PID/mem only: process_vm_readv and vmsplice take a
// reference that pins the pages, which makes the kernel give the task a
// copy of each shared one.
type Run struct {
	Addr     uint64
	Pages    uint64
	Readable bool
	Shared   bool
}

// DumpPrivate writes the pages of the private VMAs that must be saved to
// sink, in address order (PageList, then WriteRuns).
func (r *Reader) DumpPrivate(vmas []*imagepb.Vma, sink Sink, st *Stats) error {
	runs, err := r.PageList(vmas, st)
	if err != nil {
		return err
	}
	return r.WriteRuns(runs, sink, st)
}

// PageList returns the runs of pages of the private VMAs that must be
// saved, in address order: present or swapped pages that are not a zero
// page, not guard pages, not in r.Skip, and, in private file mappings,
// only the anonymous (COWed) ones. It counts scanned and zero pages in st.
func (r *Reader) PageList(vmas []*imagepb.Vma, st *Stats) ([]Run, error) {
	zf := loadZeroFrames()
	var runs []Run
	pm := make([]byte, 8*4096) // pagemap window: 4096 pages
	for _, v := range vmas {
		if !privatePages(v) || v.NoPages {
			continue
		}
		if r.Ctx != nil {
			if err := r.Ctx.Err(); err != nil {
				return nil, fmt.Errorf("interrupted: %w", err)
			}
		}
		file := v.Kind == imagepb.VmaKind_VMA_FILE_PRIVATE || v.Kind == imagepb.VmaKind_VMA_MEMFD
		readable := v.Prot&unix.PROT_READ != 0
		first := len(runs) // runs of this VMA start here: never merged across VMAs
		for addr := v.Start; addr < v.End; {
			n := (v.End - addr) / PageSize
			if n > uint64(len(pm)/8) {
				n = uint64(len(pm) / 8)
			}
			w := pm[:n*8]
			if _, err := r.Pagemap.ReadAt(w, int64(addr/PageSize*8)); err != nil {
				return nil, fmt.Errorf("read pagemap of pid %d at %#x: %w", r.Pid, addr, err)
			}
			for i := uint64(0); i < n; i++ {
				e := binary.LittleEndian.Uint64(w[i*8:])
				st.PagesScanned++
				save := false
				switch {
				case e&pmGuard != 0:
					// a guard page: no contents (reading it fails);
					// recorded as a guard region of the VMA
				case e&pmSwapped != 0:
					save = true
				case e&pmPresent != 0:
					save = !(file && e&pmFilePage != 0)
					if save && zf.zero(e&pmPfnMask) {
						save = false
						st.PagesZero++
					}
				}
				pa := addr + i*PageSize
				if !save || r.skip(pa) {
					continue
				}
				// (a swapped page may be shared too: read in, it would be)
				shared := e&(pmPresent|pmExclusive) == pmPresent || e&pmSwapped != 0
				if k := len(runs); k > first && runs[k-1].Addr+runs[k-1].Pages*PageSize == pa {
					runs[k-1].Pages++
					runs[k-1].Shared = runs[k-1].Shared || shared
					continue
				}
				runs = append(runs, Run{Addr: pa, Pages: 1, Readable: readable, Shared: shared})
			}
			addr += n * PageSize
		}
	}
	return runs, nil
}

// WriteRuns writes the contents of runs (ascending, not overlapping; from
// PageList) to sink in order. With a Mover and a sink that takes spliced
// pages, readable runs not shared go from the task to the image file
// through pipes without a copy in ctr-cr (see SpliceMover); otherwise,
// and for what the mover cannot take, reading the target and writing the
// image overlap: runs are read into one half of the buffer while a
// goroutine hands the other half's runs to sink (the page-cache copy and
// checksum, most of a large dump's time).
func (r *Reader) WriteRuns(runs []Run, sink Sink, st *Stats) error {
	if r.Mover != nil && !r.Live {
		if ss, ok := sink.(SpliceSink); ok {
			return r.Mover.writeRuns(r, runs, ss, st)
		}
	}
	return r.copyRuns(runs, sink, st)
}

// copyRuns writes runs to sink through ctr-cr's buffer (process_vm_readv,
// or /proc/PID/mem for unreadable and shared runs, then the sink's
// write). With r.Live, a run that can no longer be read is left out.
func (r *Reader) copyRuns(runs []Run, sink Sink, st *Stats) error {
	var need uint64
	for _, run := range runs {
		need += run.Pages * PageSize
	}
	if need == 0 {
		return nil
	}
	buf := getBuf(need)
	defer putBuf(buf)
	pl := newPipeline(buf, sink)
	defer pl.stop()
	for i, run := range runs {
		if i%64 == 0 && r.Ctx != nil {
			if err := r.Ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
		}
		addr, left := run.Addr, run.Pages
		for left > 0 {
			b, err := pl.next(left)
			if err != nil {
				return err
			}
			n := uint64(len(b)) / PageSize
			if err := r.read(addr, b, run.Readable && !run.Shared); err != nil {
				if !r.Live {
					return fmt.Errorf("pages %#x-%#x: %w", run.Addr, run.Addr+run.Pages*PageSize, err)
				}
			} else {
				pl.add(addr, b)
				st.PagesWritten += n
			}
			addr += n * PageSize
			left -= n
		}
	}
	return pl.finish()
}

func (r *Reader) read(addr uint64, b []byte, readable bool) error {
	if readable {
		local := []unix.Iovec{{Base: &b[0]}}
		local[0].SetLen(len(b))
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
		n, err := unix.ProcessVMReadv(r.Pid, local, remote, 0)
		if err == nil && n == len(b) {
			return nil
		}
		// fall back to /proc/PID/mem (e.g. a page made unreadable meanwhile)
	}
	if _, err := r.Mem.ReadAt(b, int64(addr)); err != nil {
		return fmt.Errorf("read pid %d memory at %#x (%d bytes): %w", r.Pid, addr, len(b), err)
	}
	return nil
}

// DumpObject writes the contents of a shared memory object (shared anonymous
// or memfd), opened through /proc/PID/map_files, to sink with offsets as
// addresses. Holes (SEEK_HOLE) and all-zero pages are skipped.
func DumpObject(f *os.File, size int64, sink Sink, st *Stats) error {
	buf := getBuf(uint64(max(size, 0)))
	defer putBuf(buf)
	fd := int(f.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			data = off // no SEEK_DATA support: read everything
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > size {
			hole = size
		}
		data &^= PageSize - 1
		for pos := data; pos < hole; {
			n := hole - pos
			if n > int64(len(buf)) {
				n = int64(len(buf))
			}
			n = (n + PageSize - 1) &^ (PageSize - 1)
			b := buf[:n]
			got, err := f.ReadAt(b, pos)
			if err != nil && err != io.EOF {
				return fmt.Errorf("read shared memory object at %d: %w", pos, err)
			}
			clear(b[got:])
			if err := addNonZero(pos, b, sink, st); err != nil {
				return err
			}
			pos += n
		}
		off = hole
	}
	return nil
}

// addNonZero passes the non-zero pages of b (at offset base) to sink in runs.
func addNonZero(base int64, b []byte, sink Sink, st *Stats) error {
	start := -1
	for i := 0; i <= len(b); i += PageSize {
		zero := i == len(b) || isZero(b[i:i+PageSize])
		if i < len(b) {
			st.PagesScanned++
		}
		if !zero && start < 0 {
			start = i
		}
		if zero && start >= 0 {
			if err := sink.WritePages(uint64(base)+uint64(start), b[start:i]); err != nil {
				return err
			}
			st.PagesWritten += uint64(i-start) / PageSize
			start = -1
		}
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
