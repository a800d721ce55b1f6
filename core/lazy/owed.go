package lazy

import (
	"math/bits"
	"slices"
)

// run is a range of pages of the image at their address in the mm: page
// i is at start+i*pageSize and at off+i*pageSize in the pages source; its
// bit in owed is set while it has not been copied in nor dropped.
type run struct {
	start uint64
	n     int
	off   int64
	owed  []uint64
}

func (r *run) end() uint64    { return r.start + uint64(r.n)*pageSize }
func (r *run) has(i int) bool { return r.owed[i/64]&(1<<(i%64)) != 0 }
func (r *run) drop(i int) bool {
	w, b := i/64, uint64(1)<<(i%64)
	if r.owed[w]&b == 0 {
		return false
	}
	r.owed[w] &^= b
	return true
}

// owedSet is what one mm is still owed: the image's runs where they were
// (sorted, disjoint), and single pages moved elsewhere by mremap.
type owedSet struct {
	runs  []*run
	moved map[uint64]int64 // page address: its offset in the source
	count int
}

// Run is a range of pages for NewOwed: NrPages pages at Addr, found at
// Off in the source.
type Run struct {
	Addr    uint64
	NrPages int
	Off     int64
}

func newOwed(runs []Run) *owedSet {
	s := &owedSet{moved: map[uint64]int64{}}
	for _, r := range runs {
		if r.NrPages <= 0 {
			continue
		}
		rr := &run{start: r.Addr, n: r.NrPages, off: r.Off, owed: make([]uint64, (r.NrPages+63)/64)}
		for i := 0; i < r.NrPages; i++ {
			rr.owed[i/64] |= 1 << (i % 64)
		}
		s.runs = append(s.runs, rr)
		s.count += r.NrPages
	}
	slices.SortFunc(s.runs, func(a, b *run) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	return s
}

// find returns the run holding addr and the page's index in it.
func (s *owedSet) find(addr uint64) (*run, int) {
	i, _ := slices.BinarySearchFunc(s.runs, addr, func(r *run, a uint64) int {
		switch {
		case r.end() <= a:
			return -1
		case r.start > a:
			return 1
		}
		return 0
	})
	if i < len(s.runs) && s.runs[i].start <= addr && addr < s.runs[i].end() {
		return s.runs[i], int((addr - s.runs[i].start) / pageSize)
	}
	return nil, 0
}

// lookup returns where the page at addr is in the source, if it is owed.
func (s *owedSet) lookup(addr uint64) (int64, bool) {
	if off, ok := s.moved[addr]; ok {
		return off, true
	}
	if r, i := s.find(addr); r != nil && r.has(i) {
		return r.off + int64(i)*pageSize, true
	}
	return 0, false
}

// drop marks the page at addr as no longer owed.
func (s *owedSet) drop(addr uint64) {
	if _, ok := s.moved[addr]; ok {
		delete(s.moved, addr)
		s.count--
		return
	}
	if r, i := s.find(addr); r != nil && r.drop(i) {
		s.count--
	}
}

// dropRange marks [start, end) as no longer owed.
func (s *owedSet) dropRange(start, end uint64) {
	for a := range s.moved {
		if a >= start && a < end {
			delete(s.moved, a)
			s.count--
		}
	}
	for _, r := range s.runs {
		if r.end() <= start || r.start >= end {
			continue
		}
		i := int((max(start, r.start) - r.start) / pageSize)
		j := int((min(end, r.end()) - r.start) / pageSize)
		for ; i < j; i++ {
			if i%64 == 0 && j-i >= 64 {
				s.count -= bits.OnesCount64(r.owed[i/64])
				r.owed[i/64] = 0
				i += 63
				continue
			}
			if r.drop(i) {
				s.count--
			}
		}
	}
}

// move carries the owed pages of [from, from+n) to [to, to+n): mremap.
func (s *owedSet) move(from, to, n uint64) {
	got := map[uint64]int64{}
	for a := from; a < from+n; a += pageSize {
		if off, ok := s.lookup(a); ok {
			got[a-from+to] = off
		}
	}
	s.dropRange(from, from+n)
	s.dropRange(to, to+n)
	for a, off := range got {
		s.moved[a] = off
		s.count++
	}
}

// clone copies s for a fork child.
func (s *owedSet) clone() *owedSet {
	c := &owedSet{moved: make(map[uint64]int64, len(s.moved)), count: s.count}
	for a, off := range s.moved {
		c.moved[a] = off
	}
	for _, r := range s.runs {
		rr := *r
		rr.owed = slices.Clone(r.owed)
		c.runs = append(c.runs, &rr)
	}
	return c
}

// contiguous returns how many pages from addr on (at most limit) are
// owed and consecutive in one run: a run lies in one VMA, and a copy may
// not cross VMAs (ENOENT). A page moved by mremap goes alone.
func (s *owedSet) contiguous(addr uint64, limit int) int {
	if _, ok := s.lookup(addr); !ok {
		return 0
	}
	if _, moved := s.moved[addr]; moved {
		return 1
	}
	r, i := s.find(addr)
	n := 1
	for n < limit && i+n < r.n && r.has(i+n) {
		if _, moved := s.moved[addr+uint64(n)*pageSize]; moved {
			break
		}
		n++
	}
	return n
}

// sameRun reports whether the pages at a and b are in the same run of
// the image (neither moved).
func (s *owedSet) sameRun(a, b uint64) bool {
	if _, moved := s.moved[a]; moved {
		return false
	}
	if _, moved := s.moved[b]; moved {
		return false
	}
	ra, _ := s.find(a)
	rb, _ := s.find(b)
	return ra != nil && ra == rb
}
