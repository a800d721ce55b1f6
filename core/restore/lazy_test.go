package restore

import (
	"bytes"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/lazy"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

func TestSplitEligible(t *testing.T) {
	const p = memory.PageSize
	elig := []*imagepb.Vma{{Start: 0x10000, End: 0x10000 + 4*p}, {Start: 0x10000 + 4*p, End: 0x10000 + 6*p}, {Start: 0x40000, End: 0x50000}}
	// 10 pages from 0x10000-2p: 2 eager, 4 + 2 lazy (one run per VMA), 2 eager
	l, e := splitEligible(elig, 0x10000-2*p, 10, 100*p)
	want := []lazy.Run{{Addr: 0x10000, NrPages: 4, Off: 102 * p}, {Addr: 0x10000 + 4*p, NrPages: 2, Off: 106 * p}}
	if len(l) != 2 || l[0] != want[0] || l[1] != want[1] {
		t.Fatalf("lazy runs %+v, want %+v", l, want)
	}
	wantE := []lazy.Run{{Addr: 0x10000 - 2*p, NrPages: 2, Off: 100 * p}, {Addr: 0x10000 + 6*p, NrPages: 2, Off: 108 * p}}
	if len(e) != 2 || e[0] != wantE[0] || e[1] != wantE[1] {
		t.Fatalf("eager runs %+v, want %+v", e, wantE)
	}
}

func TestMultiSource(t *testing.T) {
	own, parent := bytes.NewReader([]byte("0123456789")), bytes.NewReader([]byte("abcdefghij"))
	m := multiSource{own, nil, parent}
	b := make([]byte, 3)
	if _, err := m.ReadAt(b, 2); err != nil || string(b) != "234" {
		t.Fatalf("own: %q %v", b, err)
	}
	if _, err := m.ReadAt(b, 2<<srcShift+4); err != nil || string(b) != "efg" {
		t.Fatalf("level 1: %q %v", b, err)
	}
	if _, err := m.ReadAt(b, 1<<srcShift); err == nil {
		t.Fatal("a source not opened was read")
	}
	if _, err := m.ReadAt(b, 5<<srcShift); err == nil {
		t.Fatal("a source beyond the list was read")
	}
}
