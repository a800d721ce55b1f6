package memory

import (
	"fmt"
	"io"
	"slices"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Fill copies the pages described by entries from pages (the raw pages file,
// read sequentially in large chunks) to dst at each run's address: the
// restored task's /proc/PID/mem, or a memory object's fd with offsets. It
// returns the number of pages written.
func Fill(dst io.WriterAt, entries []*imagepb.PagemapEntry, pages io.ReaderAt) (uint64, error) {
	var need uint64
	for _, e := range entries {
		need += e.NrPages * PageSize
	}
	buf := getBuf(need)
	defer putBuf(buf)
	var off int64
	var total uint64
	for _, e := range entries {
		left := e.NrPages * PageSize
		addr := e.Vaddr
		for left > 0 {
			n := left
			if n > uint64(len(buf)) {
				n = uint64(len(buf))
			}
			b := buf[:n]
			if _, err := pages.ReadAt(b, off); err != nil {
				return total, fmt.Errorf("read pages at offset %d: %w", off, err)
			}
			if _, err := dst.WriteAt(b, int64(addr)); err != nil {
				return total, fmt.Errorf("write %d bytes at %#x: %w", n, addr, err)
			}
			off += int64(n)
			addr += n
			left -= n
			total += n / PageSize
		}
	}
	return total, nil
}

// CheckLayout verifies that VMAs are page-aligned, non-empty, sorted and
// non-overlapping, and that every pagemap run lies inside a VMA with
// private pages: a hostile image cannot make restore write elsewhere.
func CheckLayout(vmas []*imagepb.Vma, entries []*imagepb.PagemapEntry) error {
	var prevEnd uint64
	for i, v := range vmas {
		if v.Start%PageSize != 0 || v.End%PageSize != 0 || v.End <= v.Start {
			return fmt.Errorf("vma %d: bad range %#x-%#x", i, v.Start, v.End)
		}
		if v.Start < prevEnd {
			return fmt.Errorf("vma %d: %#x-%#x overlaps the previous one", i, v.Start, v.End)
		}
		if v.End > 1<<47 && v.Kind != imagepb.VmaKind_VMA_VSYSCALL {
			return fmt.Errorf("vma %d: %#x-%#x above the user address space", i, v.Start, v.End)
		}
		if err := checkGuards(v); err != nil {
			return err
		}
		prevEnd = v.End
	}
	j := 0
	for _, e := range entries {
		end := e.Vaddr + e.NrPages*PageSize
		if e.NrPages == 0 || end < e.Vaddr {
			return fmt.Errorf("pagemap run %#x+%d pages is invalid", e.Vaddr, e.NrPages)
		}
		// a run may span adjacent VMAs: each part must be a private VMA
		for pos := e.Vaddr; pos < end; {
			for j < len(vmas) && vmas[j].End <= pos {
				j++
			}
			if j == len(vmas) || pos < vmas[j].Start || !privatePages(vmas[j]) {
				return fmt.Errorf("pagemap run %#x-%#x is not inside private VMAs (at %#x)", e.Vaddr, end, pos)
			}
			pos = min(end, vmas[j].End)
		}
	}
	return nil
}

// PagePart is a stretch of a pages file bound for one address range: Len
// bytes at file offset Off go to Addr.
type PagePart struct {
	Addr uint64
	Off  int64
	Len  uint64
}

// SplitRuns cuts the pagemap runs (in pages-file order) by address: the
// parts inside the spans in go to inParts, the others to outParts, each
// with its offset in the pages file; parts inside skip go nowhere (pages
// already in place). Both lists come in file order.
func SplitRuns(entries []*imagepb.PagemapEntry, in, skip Spans) (inParts, outParts []PagePart) {
	var parts []PagePart
	var off int64
	for _, e := range entries {
		size := e.NrPages * PageSize
		parts = append(parts, PagePart{e.Vaddr, off, size})
		off += int64(size)
	}
	return SplitParts(parts, in, skip)
}

// SplitParts is SplitRuns for parts.
func SplitParts(parts []PagePart, in, skip Spans) (inParts, outParts []PagePart) {
	for _, p := range parts {
		run := Spans{{p.Addr, p.Addr + p.Len}}
		if len(skip) > 0 {
			run = run.Subtract(skip)
		}
		for _, s := range run.Intersect(in) {
			inParts = addPart(inParts, PagePart{s.Start, p.Off + int64(s.Start-p.Addr), s.End - s.Start})
		}
		for _, s := range run.Subtract(in) {
			outParts = addPart(outParts, PagePart{s.Start, p.Off + int64(s.Start-p.Addr), s.End - s.Start})
		}
	}
	return inParts, outParts
}

// TakeTail cuts about want bytes (whole pages) off the end of parts: it
// returns what is left and the tail taken, both in file order.
func TakeTail(parts []PagePart, want uint64) (rest, tail []PagePart) {
	want &^= PageSize - 1
	rest = append([]PagePart(nil), parts...)
	for len(rest) > 0 && want > 0 {
		last := &rest[len(rest)-1]
		if last.Len <= want {
			tail = append(tail, *last)
			want -= last.Len
			rest = rest[:len(rest)-1]
			continue
		}
		keep := last.Len - want
		tail = append(tail, PagePart{last.Addr + keep, last.Off + int64(keep), want})
		last.Len = keep
		want = 0
	}
	slices.Reverse(tail)
	return rest, tail
}

// addPart appends p to parts, extending the last part when p continues it
// both in memory and in the file.
func addPart(parts []PagePart, p PagePart) []PagePart {
	if n := len(parts); n > 0 {
		last := &parts[n-1]
		if last.Addr+last.Len == p.Addr && last.Off+int64(last.Len) == p.Off {
			last.Len += p.Len
			return parts
		}
	}
	return append(parts, p)
}

// FillParts copies each part from pages to dst, in chunks of a reused
// buffer; it returns the number of pages written.
func FillParts(dst io.WriterAt, parts []PagePart, pages io.ReaderAt) (uint64, error) {
	var need uint64
	for _, p := range parts {
		need = max(need, p.Len)
	}
	if need == 0 {
		return 0, nil
	}
	buf := getBuf(need)
	defer putBuf(buf)
	var total uint64
	for _, p := range parts {
		for done := uint64(0); done < p.Len; {
			b := buf[:min(p.Len-done, uint64(len(buf)))]
			off := p.Off + int64(done)
			if _, err := pages.ReadAt(b, off); err != nil {
				return total, fmt.Errorf("read pages at offset %d: %w", off, err)
			}
			if _, err := dst.WriteAt(b, int64(p.Addr+done)); err != nil {
				return total, fmt.Errorf("write %d bytes at %#x: %w", len(b), p.Addr+done, err)
			}
			done += uint64(len(b))
			total += uint64(len(b)) / PageSize
		}
	}
	return total, nil
}
