package memory

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func vma(start, end uint64, kind imagepb.VmaKind, shared bool) *imagepb.Vma {
	return &imagepb.Vma{Start: start, End: end, Kind: kind, Shared: shared}
}

func TestCheckLayout(t *testing.T) {
	anon := imagepb.VmaKind_VMA_ANON_PRIVATE
	base := []*imagepb.Vma{
		vma(0x1000, 0x3000, anon, false),
		vma(0x3000, 0x5000, imagepb.VmaKind_VMA_FILE_PRIVATE, false),
		vma(0x8000, 0x9000, imagepb.VmaKind_VMA_ANON_SHARED, true),
		vma(0xa000, 0xb000, imagepb.VmaKind_VMA_VDSO, false),
	}
	run := func(addr, n uint64) *imagepb.PagemapEntry { return &imagepb.PagemapEntry{Vaddr: addr, NrPages: n} }
	tests := []struct {
		name    string
		vmas    []*imagepb.Vma
		runs    []*imagepb.PagemapEntry
		wantErr string
	}{
		{"ok", base, []*imagepb.PagemapEntry{run(0x1000, 1), run(0x4000, 1)}, ""},
		{"run spanning adjacent private vmas", base, []*imagepb.PagemapEntry{run(0x2000, 3)}, ""},
		{"run into a hole", base, []*imagepb.PagemapEntry{run(0x4000, 2)}, "not inside"},
		{"run in shared vma", base, []*imagepb.PagemapEntry{run(0x8000, 1)}, "not inside"},
		{"run in vdso", base, []*imagepb.PagemapEntry{run(0xa000, 1)}, "not inside"},
		{"run before every vma", base, []*imagepb.PagemapEntry{run(0x0, 1)}, "not inside"},
		{"empty run", base, []*imagepb.PagemapEntry{run(0x1000, 0)}, "invalid"},
		{"wrapping run", base, []*imagepb.PagemapEntry{run(0xfffffffffffff000, 2)}, "invalid"},
		{"unaligned vma", []*imagepb.Vma{vma(0x1001, 0x2000, anon, false)}, nil, "bad range"},
		{"empty vma", []*imagepb.Vma{vma(0x2000, 0x2000, anon, false)}, nil, "bad range"},
		{"overlapping vmas", []*imagepb.Vma{vma(0x1000, 0x3000, anon, false), vma(0x2000, 0x4000, anon, false)}, nil, "overlaps"},
		{"kernel address", []*imagepb.Vma{vma(0xffff800000000000, 0xffff800000001000, anon, false)}, nil, "above"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckLayout(tc.vmas, tc.runs)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

type memSink struct{ runs map[uint64][]byte }

func (m *memSink) WritePages(vaddr uint64, data []byte) error {
	m.runs[vaddr] = append([]byte(nil), data...)
	return nil
}

// TestDumpObjectSkipsZeroPagesAndHoles dumps a sparse file the way shared
// memory objects are dumped and refills it with Fill.
func TestDumpObjectSkipsZeroPagesAndHoles(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "obj"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := int64(64 * PageSize)
	f.Truncate(size)
	page := bytes.Repeat([]byte{0xab}, PageSize)
	f.WriteAt(page, 3*PageSize)
	f.WriteAt(page, 4*PageSize)
	f.WriteAt(make([]byte, PageSize), 10*PageSize) // written zeros: not saved
	f.WriteAt(page, 40*PageSize)
	sink := &memSink{runs: map[uint64][]byte{}}
	var st Stats
	if err := DumpObject(f, size, sink, &st); err != nil {
		t.Fatal(err)
	}
	if len(sink.runs) != 2 || len(sink.runs[3*PageSize]) != 2*PageSize || len(sink.runs[40*PageSize]) != PageSize {
		t.Fatalf("runs %v", keys(sink.runs))
	}
	if st.PagesWritten != 3 {
		t.Fatalf("pages written %d, want 3", st.PagesWritten)
	}
}

func keys(m map[uint64][]byte) []uint64 {
	var k []uint64
	for a := range m {
		k = append(k, a)
	}
	return k
}

func TestFill(t *testing.T) {
	dir := t.TempDir()
	pages, _ := os.Create(filepath.Join(dir, "pages"))
	defer pages.Close()
	a := bytes.Repeat([]byte{1}, 2*PageSize)
	b := bytes.Repeat([]byte{2}, PageSize)
	pages.Write(a)
	pages.Write(b)
	dst, _ := os.Create(filepath.Join(dir, "dst"))
	defer dst.Close()
	n, err := Fill(dst, []*imagepb.PagemapEntry{{Vaddr: 0, NrPages: 2}, {Vaddr: 5 * PageSize, NrPages: 1}}, pages)
	if err != nil || n != 3 {
		t.Fatalf("Fill = %d, %v", n, err)
	}
	got := make([]byte, PageSize)
	dst.ReadAt(got, 5*PageSize)
	if !bytes.Equal(got, b) {
		t.Fatal("second run not at its address")
	}
	if _, err := Fill(dst, []*imagepb.PagemapEntry{{Vaddr: 0, NrPages: 9}}, pages); err == nil {
		t.Fatal("Fill past the end of the pages file succeeded")
	}
}

// TestFillManyChunks: runs spread over many buffer-sized chunks of the
// pages file land at their addresses, runs crossing chunk boundaries
// included, and the buffer being written is not changed under the write; a
// pages file shorter than the runs is an error, also when the short read
// happens in a later chunk.
func TestFillManyChunks(t *testing.T) {
	dir := t.TempDir()
	const pagesN = 3000 // > bufSize: several hand-overs
	data := make([]byte, pagesN*PageSize)
	for i := 0; i < pagesN; i++ { // every page different
		for j := 0; j < PageSize; j += 256 {
			binary.LittleEndian.PutUint32(data[i*PageSize+j:], uint32(i<<8|j/256))
		}
	}
	pages, err := os.Create(filepath.Join(dir, "pages"))
	if err != nil {
		t.Fatal(err)
	}
	defer pages.Close()
	pages.Write(data)
	// runs of 1..37 pages with gaps between them in the destination
	var entries []*imagepb.PagemapEntry
	var want []uint64 // destination page of each source page
	addr := uint64(0)
	for left, k := uint64(pagesN), uint64(1); left > 0; k = k%37 + 1 {
		n := min(k, left)
		entries = append(entries, &imagepb.PagemapEntry{Vaddr: addr, NrPages: n})
		for p := uint64(0); p < n; p++ {
			want = append(want, addr/PageSize+p)
		}
		addr += (n + 2) * PageSize
		left -= n
	}
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	// a slow destination (a target faulting its pages in)
	n, err := Fill(slowWriter{dst}, entries, pages)
	if err != nil || n != pagesN {
		t.Fatalf("Fill = %d, %v", n, err)
	}
	got := make([]byte, PageSize)
	for src, page := range want {
		dst.ReadAt(got, int64(page*PageSize))
		if !bytes.Equal(got, data[src*PageSize:(src+1)*PageSize]) {
			t.Fatalf("source page %d not at destination page %d", src, page)
		}
	}
	pages.Truncate(int64(pagesN-5) * PageSize)
	if _, err := Fill(dst, entries, pages); err == nil {
		t.Fatal("Fill from a pages file 5 pages short succeeded")
	}
}

type slowWriter struct{ w io.WriterAt }

func (s slowWriter) WriteAt(b []byte, off int64) (int, error) {
	c := append([]byte(nil), b...)
	time.Sleep(50 * time.Microsecond)
	if !bytes.Equal(c, b) {
		return 0, errors.New("the buffer being written changed under the write")
	}
	return s.w.WriteAt(b, off)
}
