package memory

import (
	"bytes"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

type recSink struct{ runs [][2]uint64 }

func (r *recSink) WritePages(vaddr uint64, data []byte) error {
	r.runs = append(r.runs, [2]uint64{vaddr, uint64(len(data)) / PageSize})
	return nil
}

// SkipRuns passes exactly the pages outside its runs, split as needed.
func TestSkipRuns(t *testing.T) {
	next := &recSink{}
	s := &SkipRuns{Next: next, Skip: []*imagepb.PagemapEntry{{Vaddr: 2 * PageSize, NrPages: 2}, {Vaddr: 6 * PageSize, NrPages: 1}, {Vaddr: 20 * PageSize, NrPages: 4}}}
	if err := s.WritePages(0, make([]byte, 8*PageSize)); err != nil {
		t.Fatal(err)
	}
	if err := s.WritePages(21*PageSize, make([]byte, 5*PageSize)); err != nil {
		t.Fatal(err)
	}
	want := [][2]uint64{{0, 2}, {4 * PageSize, 2}, {7 * PageSize, 1}, {24 * PageSize, 2}}
	if len(next.runs) != len(want) {
		t.Fatalf("runs %v, want %v", next.runs, want)
	}
	for i := range want {
		if next.runs[i] != want[i] {
			t.Fatalf("runs %v, want %v", next.runs, want)
		}
	}
	if s.Skipped != 3+3 {
		t.Fatalf("skipped %d, want 6", s.Skipped)
	}
}

func TestCowEligibleAndAlone(t *testing.T) {
	mk := func() *imagepb.Vma {
		return &imagepb.Vma{Start: 0x1000, End: 0x3000, Prot: 3, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE, VmFlags: "rd wr mr mw me ac"}
	}
	v := mk()
	if !CowEligible(v) {
		t.Fatal("plain anonymous rw VMA not eligible")
	}
	for _, f := range []string{"dc", "wf", "lo", "gu"} {
		w := mk()
		w.VmFlags += " " + f
		if CowEligible(w) {
			t.Errorf("eligible with %s", f)
		}
	}
	ro := mk()
	ro.Prot = 1
	if CowEligible(ro) {
		t.Error("read-only VMA eligible")
	}
	n := mk()
	n.Start, n.End = 0x3000, 0x4000
	if CowAlone([]*imagepb.Vma{v, n}, 0) {
		t.Error("VMA with a mergeable neighbour counted alone")
	}
	n.Prot = 1
	if !CowAlone([]*imagepb.Vma{v, n}, 0) {
		t.Error("VMA whose neighbour differs not alone")
	}
	if hasFlag("rd wr", "w") || !hasFlag("rd wr", "wr") || hasFlag("", "rd") {
		t.Error("hasFlag")
	}
}

// SharedWithParent finds the pages with the same frame, present and
// anonymous, not exclusive, not the zero page.
func TestSharedWithParent(t *testing.T) {
	ent := func(pfn uint64, flags uint64) []byte {
		b := make([]byte, 8)
		for i := 0; i < 8; i++ {
			b[i] = byte((pfn | flags) >> (8 * i))
		}
		return b
	}
	var c, p bytes.Buffer
	c.Write(ent(100, pmPresent))
	p.Write(ent(100, pmPresent)) // shared
	c.Write(ent(101, pmPresent))
	p.Write(ent(101, pmPresent)) // shared
	c.Write(ent(102, pmPresent|pmExclusive))
	p.Write(ent(102, pmPresent)) // exclusive: no
	c.Write(ent(103, pmPresent))
	p.Write(ent(104, pmPresent)) // differs
	c.Write(ent(105, pmPresent))
	p.Write(ent(105, pmPresent)) // shared
	v := &imagepb.Vma{Start: 0, End: 5 * PageSize}
	runs, err := SharedWithParent(bytes.NewReader(c.Bytes()), bytes.NewReader(p.Bytes()), v)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Vaddr != 0 || runs[0].NrPages != 2 || runs[1].Vaddr != 4*PageSize || runs[1].NrPages != 1 {
		t.Fatalf("runs %v", runs)
	}
}
