package memory

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Reader.skip answers for ascending pages.
func TestReaderSkip(t *testing.T) {
	r := &Reader{Skip: []*imagepb.PagemapEntry{{Vaddr: 2 * PageSize, NrPages: 2}, {Vaddr: 6 * PageSize, NrPages: 1}}}
	var got []int
	for i := 0; i < 9; i++ {
		if r.skip(uint64(i) * PageSize) {
			got = append(got, i)
		}
	}
	if fmt.Sprint(got) != "[2 3 6]" {
		t.Fatalf("skipped pages %v", got)
	}
}

func TestCowEligible(t *testing.T) {
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
	if hasFlag("rd wr", "w") || !hasFlag("rd wr", "wr") || hasFlag("", "rd") {
		t.Error("hasFlag")
	}
}

func ent(pfn uint64, flags uint64) []byte {
	b := make([]byte, 8)
	for i := 0; i < 8; i++ {
		b[i] = byte((pfn | flags) >> (8 * i))
	}
	return b
}

// ForkPages finds the pages with the parent's frame (present, anonymous,
// not exclusive, not the zero page), else the frame most children share.
func TestForkPages(t *testing.T) {
	var p, a, b, c bytes.Buffer
	row := func(pp, pa, pb, pc []byte) { p.Write(pp); a.Write(pa); b.Write(pb); c.Write(pc) }
	row(ent(100, pmPresent), ent(100, pmPresent), ent(100, pmPresent), ent(7, pmPresent))     // 0: parent's, a and b
	row(ent(101, pmPresent), ent(101, pmPresent), ent(101, pmPresent|pmExclusive), ent(0, 0)) // 1: parent's, a only
	row(ent(102, pmPresent), ent(200, pmPresent), ent(200, pmPresent), ent(200, pmPresent))   // 2: siblings' 200
	row(ent(0, 0), ent(300, pmPresent), ent(301, pmPresent), ent(300, pmPresent))             // 3: siblings' 300 (a, c)
	row(ent(0, 0), ent(400, pmPresent), ent(401, pmPresent), ent(402, pmPresent))             // 4: nothing shared
	v := &imagepb.Vma{Start: 0, End: 5 * PageSize}
	kids := []io.ReaderAt{bytes.NewReader(a.Bytes()), bytes.NewReader(b.Bytes()), bytes.NewReader(c.Bytes())}
	runs, base, err := ForkPages(bytes.NewReader(p.Bytes()), kids, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	str := func(rs []*imagepb.PagemapEntry) string {
		out := ""
		for _, r := range rs {
			out += fmt.Sprintf("%d+%d ", r.Vaddr/PageSize, r.NrPages)
		}
		return out
	}
	if got := []string{str(runs[0]), str(runs[1]), str(runs[2])}; got[0] != "0+4 " || got[1] != "0+1 2+1 " || got[2] != "2+2 " {
		t.Fatalf("runs %q", got)
	}
	if len(base) != 1 || base[0] != (BaseRun{2 * PageSize, 2, 0}) {
		t.Fatalf("base %+v", base)
	}
	// the parent keeps page 3 from its own parent: no base page there
	runs, base, err = ForkPages(bytes.NewReader(p.Bytes()), kids, v, []*imagepb.PagemapEntry{{Vaddr: 3 * PageSize, NrPages: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(base) != 1 || base[0] != (BaseRun{2 * PageSize, 1, 0}) || str(runs[0]) != "0+3 " || str(runs[2]) != "2+1 " {
		t.Fatalf("with the parent's own shared page: base %+v, runs %q %q", base, str(runs[0]), str(runs[2]))
	}
}
