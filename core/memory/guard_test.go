package memory

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// GuardRegions finds installed guard pages as merged runs; DumpPrivate
// skips them (they cannot be read) and saves their neighbours.
func TestGuardRegions(t *testing.T) {
	m, err := unix.Mmap(-1, 0, 8*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	for i := range m {
		m[i] = 1
	}
	base := uint64(uintptr(unsafe.Pointer(&m[0])))
	if err := unix.Madvise(m[2*PageSize:5*PageSize], MadvGuardInstall); err != nil {
		t.Skipf("MADV_GUARD_INSTALL: %v", err)
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	g, err := GuardRegions(pm, base, base+8*PageSize)
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != 1 || g[0].Start != base+2*PageSize || g[0].End != base+5*PageSize {
		t.Fatalf("guard regions %v, want one at pages 2-4", g)
	}
	vmas := []*imagepb.Vma{{Start: base, End: base + 8*PageSize, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE, Prot: unix.PROT_READ | unix.PROT_WRITE, GuardRegions: g}}
	s := &orderedSink{pages: map[uint64][]byte{}}
	var st Stats
	if err := selfReader(t).DumpPrivate(vmas, s, &st); err != nil {
		t.Fatal(err)
	}
	if len(s.pages) != 5 {
		t.Fatalf("saved %d pages, want the 5 around the guard pages", len(s.pages))
	}
	if err := CheckLayout(vmas, nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]uint64{{base + 1, base + PageSize}, {base, base}, {base + 7*PageSize, base + 9*PageSize}, {base - PageSize, base}} {
		vmas[0].GuardRegions = []*imagepb.VmaGuardRegion{{Start: bad[0], End: bad[1]}}
		if err := CheckLayout(vmas, nil); err == nil {
			t.Errorf("CheckLayout accepted guard region %#x-%#x", bad[0], bad[1])
		}
	}
}
