package memory

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func run(page, n uint64) *imagepb.PagemapEntry {
	return &imagepb.PagemapEntry{Vaddr: page * PageSize, NrPages: n}
}

func TestSpansOps(t *testing.T) {
	s := SpansOf([]*imagepb.PagemapEntry{run(10, 5), run(0, 2), run(2, 1), run(20, 1)})
	if got := fmt.Sprint(s); got != "[{0 12288} {40960 61440} {81920 86016}]" {
		t.Fatalf("SpansOf: %s", got)
	}
	u := Spans{{0, 10 * PageSize}}
	if got := u.Subtract(s); fmt.Sprint(got) != "[{12288 40960}]" {
		t.Fatalf("Subtract: %v", got)
	}
	if got := u.Intersect(s); fmt.Sprint(got) != "[{0 12288} {40960 40960}]" && fmt.Sprint(got) != "[{0 12288}]" {
		t.Fatalf("Intersect: %v", got)
	}
	if got := s.Pages(); got != 3+5+1 {
		t.Fatalf("Pages: %d", got)
	}
	vmas := []*imagepb.Vma{
		{Start: 0, End: 16 * PageSize, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE},
		{Start: 16 * PageSize, End: 20 * PageSize, Kind: imagepb.VmaKind_VMA_ANON_SHARED, Shared: true},
	}
	var got []string
	for _, v := range Without(vmas, s) {
		got = append(got, fmt.Sprintf("%d-%d", v.Start/PageSize, v.End/PageSize))
	}
	if fmt.Sprint(got) != "[3-10 15-16 16-20]" {
		t.Fatalf("Without: %v", got)
	}
}

// pagesOf makes a pages file whose page at vaddr v (in run order) holds
// the byte tag+v/PageSize.
func pagesOf(tag byte, runs ...*imagepb.PagemapEntry) []byte {
	var b []byte
	for _, r := range runs {
		for i := uint64(0); i < r.NrPages; i++ {
			b = append(b, bytes.Repeat([]byte{tag + byte(r.Vaddr/PageSize+i)}, PageSize)...)
		}
	}
	return b
}

type memWriter map[uint64]byte

func (m memWriter) WriteAt(b []byte, off int64) (int, error) {
	for i := 0; i < len(b); i += PageSize {
		m[uint64(off)/PageSize+uint64(i/PageSize)] = b[i]
	}
	return len(b), nil
}

func TestResolveChain(t *testing.T) {
	// grandparent holds pages 0-9; parent holds 3-4 (written since) and
	// leaves 0-2, 5-9 to it; the tip wants 0-1 and 4-6 from the parent
	gp := []*imagepb.PagemapEntry{run(5, 5), run(0, 5)} // file order not address order
	p := []*imagepb.PagemapEntry{run(3, 2)}
	levels := []ChainLevel{
		{Dir: "parent", Local: p, Parent: []*imagepb.PagemapEntry{run(0, 3), run(5, 5)}},
		{Dir: "grand", Local: gp},
	}
	pieces, err := ResolveChain([]*imagepb.PagemapEntry{run(0, 2), run(4, 3)}, levels)
	if err != nil {
		t.Fatal(err)
	}
	files := []io.ReaderAt{bytes.NewReader(pagesOf(100, p...)), bytes.NewReader(pagesOf(200, gp...))}
	mem := memWriter{}
	n, err := FillPieces(mem, pieces, files)
	if err != nil || n != 5 {
		t.Fatalf("FillPieces: %d pages, %v", n, err)
	}
	want := map[uint64]byte{0: 200, 1: 201, 4: 104, 5: 205, 6: 206}
	if fmt.Sprint(mem) != fmt.Sprint(memWriter(want)) {
		t.Fatalf("filled %v, want %v", mem, want)
	}
	// a page the chain does not hold
	_, err = ResolveChain([]*imagepb.PagemapEntry{run(12, 1)}, levels)
	if err == nil || !strings.Contains(err.Error(), "parent") {
		t.Fatalf("missing page: %v", err)
	}
	// the last image says its parent has it, but there is none
	_, err = ResolveChain([]*imagepb.PagemapEntry{run(0, 1)}, levels[:1])
	if err == nil || !strings.Contains(err.Error(), "beyond the last") {
		t.Fatalf("beyond the chain: %v", err)
	}
}
