package lazy

import "testing"

func TestOwedSet(t *testing.T) {
	const p = pageSize
	s := newOwed([]Run{{Addr: 0x10000, NrPages: 100, Off: 0}, {Addr: 0x80000, NrPages: 4, Off: 100 * p}})
	if s.count != 104 {
		t.Fatalf("count %d", s.count)
	}
	if off, ok := s.lookup(0x10000 + 5*p); !ok || off != 5*p {
		t.Fatalf("lookup: %d %v", off, ok)
	}
	if _, ok := s.lookup(0x10000 + 100*p); ok {
		t.Fatal("lookup past the run")
	}
	if n := s.contiguous(0x10000+98*p, 16); n != 2 {
		t.Fatalf("contiguous at the end of a run: %d", n)
	}
	s.dropRange(0x10000+10*p, 0x10000+80*p) // crosses a whole bitmap word
	if s.count != 34 {
		t.Fatalf("count after dropRange %d", s.count)
	}
	if _, ok := s.lookup(0x10000 + 79*p); ok {
		t.Fatal("dropped page still owed")
	}
	if n := s.contiguous(0x10000+5*p, 16); n != 5 {
		t.Fatalf("contiguous up to a dropped range: %d", n)
	}
	c := s.clone()
	s.move(0x80000, 0x200000, 4*p)
	if _, ok := s.lookup(0x80000); ok {
		t.Fatal("moved page still owed at its old address")
	}
	if off, ok := s.lookup(0x200000 + 3*p); !ok || off != 103*p {
		t.Fatalf("moved page: %d %v", off, ok)
	}
	if s.count != 34 || s.contiguous(0x200000, 16) != 1 || s.sameRun(0x200000, 0x200000+p) {
		t.Fatalf("after move: count %d", s.count)
	}
	if _, ok := c.lookup(0x80000); !ok || c.count != 34 {
		t.Fatal("the clone changed with the original")
	}
	s.drop(0x200000)
	s.dropRange(0x200000, 0x300000)
	if s.count != 30 {
		t.Fatalf("count %d", s.count)
	}
}
