package restore

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

const pg = memory.PageSize

func cowTree(parentVma, childVma *imagepb.Vma, runs ...*imagepb.PagemapEntry) *tree {
	p := &proc{pst: &imagepb.PstreeEntry{Pid: 10}, mm: &imagepb.MmEntry{Vmas: []*imagepb.Vma{parentVma}}}
	c := &proc{pst: &imagepb.PstreeEntry{Pid: 11, Ppid: 10}, mm: &imagepb.MmEntry{Vmas: []*imagepb.Vma{childVma}, CowParentRuns: runs}}
	return &tree{procs: []*proc{p, c}}
}

func anonVma(start, end uint64) *imagepb.Vma {
	return &imagepb.Vma{Start: start, End: end, Prot: 3, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE, VmFlags: "rd wr mr mw me ac", Account: true}
}

// planCow accepts runs in a VMA inherited unchanged and plans it early in
// both; anything else in cow_parent_runs is a corrupt image.
func TestPlanCow(t *testing.T) {
	tr := cowTree(anonVma(0x10000, 0x20000), anonVma(0x10000, 0x20000), &imagepb.PagemapEntry{Vaddr: 0x11000, NrPages: 2})
	if err := tr.planCow(); err != nil {
		t.Fatal(err)
	}
	if len(tr.cow[10].early) != 1 || len(tr.cow[11].early) != 1 || tr.cow[11].keep[0x10000] == nil {
		t.Fatalf("plan %+v %+v", tr.cow[10], tr.cow[11])
	}
	bad := map[string]*tree{
		"outside":      cowTree(anonVma(0x10000, 0x20000), anonVma(0x10000, 0x20000), &imagepb.PagemapEntry{Vaddr: 0x1f000, NrPages: 2}),
		"differs":      cowTree(anonVma(0x10000, 0x30000), anonVma(0x10000, 0x20000), &imagepb.PagemapEntry{Vaddr: 0x11000, NrPages: 1}),
		"empty run":    cowTree(anonVma(0x10000, 0x20000), anonVma(0x10000, 0x20000), &imagepb.PagemapEntry{Vaddr: 0x11000}),
		"unaligned":    cowTree(anonVma(0x10000, 0x20000), anonVma(0x10000, 0x20000), &imagepb.PagemapEntry{Vaddr: 0x11001, NrPages: 1}),
		"wraps":        cowTree(anonVma(0x10000, 0x20000), anonVma(0x10000, 0x20000), &imagepb.PagemapEntry{Vaddr: 0x11000, NrPages: 1 << 60}),
		"out of order": cowTree(anonVma(0x10000, 0x20000), anonVma(0x10000, 0x20000), &imagepb.PagemapEntry{Vaddr: 0x13000, NrPages: 1}, &imagepb.PagemapEntry{Vaddr: 0x11000, NrPages: 1}),
	}
	ro := anonVma(0x10000, 0x20000)
	ro.Prot = 1
	bad["read-only"] = cowTree(ro, ro, &imagepb.PagemapEntry{Vaddr: 0x11000, NrPages: 1})
	root := cowTree(anonVma(0x10000, 0x20000), anonVma(0x10000, 0x20000))
	root.procs[0].mm.CowParentRuns = []*imagepb.PagemapEntry{{Vaddr: 0x11000, NrPages: 1}}
	bad["root"] = root
	for name, tr := range bad {
		err := tr.planCow()
		if err == nil || !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), "shared with the parent") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type memRec struct {
	mem map[uint64]byte // first byte of each page written
}

func (m *memRec) WriteAt(b []byte, addr uint64) error {
	for i := 0; i < len(b); i += pg {
		m.mem[addr+uint64(i)] = b[i]
	}
	return nil
}

func (m *memRec) asWriterAt() memAt { return memAt{m} }

// fillRange writes only the pages in range, from their place in the file.
func TestFillRange(t *testing.T) {
	pmap := []*imagepb.PagemapEntry{{Vaddr: 0, NrPages: 3}, {Vaddr: 10 * pg, NrPages: 4}}
	pages := make([]byte, 7*pg)
	for i := 0; i < 7; i++ {
		pages[i*pg] = byte(i + 1)
	}
	m := &memRec{mem: map[uint64]byte{}}
	n, err := fillRange(m, pmap, bytes.NewReader(pages), 2*pg, 12*pg)
	if err != nil || n != 3 {
		t.Fatalf("n %d err %v", n, err)
	}
	want := map[uint64]byte{2 * pg: 3, 10 * pg: 4, 11 * pg: 5}
	if len(m.mem) != len(want) {
		t.Fatalf("wrote %v, want %v", m.mem, want)
	}
	for a, v := range want {
		if m.mem[a] != v {
			t.Fatalf("wrote %v, want %v", m.mem, want)
		}
	}
}

// runsOverlap and covered: a cowbase run must lie in early VMAs (maybe
// several one after the other) and never over the process's own shared
// pages.
func TestCowRunChecks(t *testing.T) {
	run := func(a, n uint64) *imagepb.PagemapEntry { return &imagepb.PagemapEntry{Vaddr: a * pg, NrPages: n} }
	if !runsOverlap([]*imagepb.PagemapEntry{run(1, 2), run(10, 1)}, []*imagepb.PagemapEntry{run(5, 6)}) {
		t.Error("overlap at page 10 not seen")
	}
	if runsOverlap([]*imagepb.PagemapEntry{run(1, 2), run(11, 1)}, []*imagepb.PagemapEntry{run(3, 8)}) {
		t.Error("adjacent runs taken for overlapping")
	}
	early := []*imagepb.Vma{anonVma(0, 4*pg), anonVma(4*pg, 8*pg), anonVma(10*pg, 12*pg)}
	if !covered(early, run(2, 5)) {
		t.Error("run across two adjacent early VMAs not covered")
	}
	for _, r := range []*imagepb.PagemapEntry{run(7, 2), run(8, 3), run(12, 1), run(0, 0)} {
		if covered(early, r) {
			t.Errorf("run %d+%d taken as covered", r.Vaddr/pg, r.NrPages)
		}
	}
}
