package memory

import (
	"errors"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// orderedSink records runs and checks they come in ascending, non-overlapping
// address order; it fails the call number failAt (1-based) when non-zero.
type orderedSink struct {
	pages  map[uint64][]byte // per page
	last   uint64
	calls  int
	failAt int
}

var errSink = errors.New("disk full")

func (s *orderedSink) WritePages(vaddr uint64, data []byte) error {
	s.calls++
	if s.calls == s.failAt {
		return errSink
	}
	if vaddr < s.last {
		return errors.New("runs out of order")
	}
	for off := 0; off < len(data); off += PageSize {
		s.pages[vaddr+uint64(off)] = append([]byte(nil), data[off:off+PageSize]...)
	}
	s.last = vaddr + uint64(len(data))
	return nil
}

// selfReader reads this test process's own memory, as a dump reads a
// stopped target's.
func selfReader(t *testing.T) *Reader {
	t.Helper()
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close(); pm.Close() })
	return &Reader{Pid: os.Getpid(), Mem: mem, Pagemap: pm}
}

// DumpPrivate saves exactly the written pages of a private anonymous VMA,
// each with its contents, in order, across many hand-overs between the
// reading and the writing halves of its buffer; untouched pages and pages
// that only map the zero page are skipped. A failing sink stops the dump
// with its error.
func TestDumpPrivatePipelined(t *testing.T) {
	const n = 300
	m, err := unix.Mmap(-1, 0, n*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	want := map[uint64]byte{}
	base := uint64(uintptr(unsafe.Pointer(&m[0])))
	var sink byte
	for i := 0; i < n; i++ {
		switch {
		case i%7 == 3: // untouched
		case i%11 == 5: // read only: the shared zero page
			sink += m[i*PageSize]
		default:
			for j := 0; j < PageSize; j += 512 {
				m[i*PageSize+j] = byte(i) | 1
				m[i*PageSize+j+1] = byte(i >> 8) // pages differ across the 256-page period of the first byte
			}
			want[base+uint64(i*PageSize)] = byte(i) | 1
		}
	}
	_ = sink
	vmas := []*imagepb.Vma{{Start: base, End: base + n*PageSize, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE, Prot: unix.PROT_READ | unix.PROT_WRITE}}
	r := selfReader(t)
	for _, failAt := range []int{0, 3} {
		s := &orderedSink{pages: map[uint64][]byte{}, failAt: failAt}
		var st Stats
		err := r.DumpPrivate(vmas, s, &st)
		if failAt != 0 {
			if !errors.Is(err, errSink) {
				t.Fatalf("sink failing at call %d: DumpPrivate returned %v", failAt, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(s.pages) != len(want) || st.PagesWritten != uint64(len(want)) {
			t.Fatalf("%d pages saved (stats %d), want %d", len(s.pages), st.PagesWritten, len(want))
		}
		for addr, b := range want {
			got := s.pages[addr]
			i := (addr - base) / PageSize
			if got == nil || got[0] != b || got[PageSize-512] != b || got[1] != byte(i>>8) || got[PageSize-511] != byte(i>>8) {
				t.Fatalf("page %#x: saved %v..., want %#x", addr, got[:1], b)
			}
		}
		if s.calls < 3 {
			t.Errorf("%d sink calls: the runs did not go through several batches", s.calls)
		}
	}
}

// DumpPrivate skips the base pages of the huge zero page that read faults
// map into MADV_HUGEPAGE memory (4 huge pages here), and still saves the
// page written there.
func TestDumpPrivateSkipsHugeZeroPage(t *testing.T) {
	const huge = hugeZeroPages * PageSize
	m, err := unix.Mmap(-1, 0, 5*huge, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	base := uint64(uintptr(unsafe.Pointer(&m[0])))
	off := (huge - base%huge) % huge
	region := m[off : off+4*huge]
	if err := unix.Madvise(region, unix.MADV_HUGEPAGE); err != nil {
		t.Skipf("MADV_HUGEPAGE: %v", err)
	}
	var sink byte
	for i := 0; i < 4; i++ {
		sink += region[i*huge] // read faults
	}
	_ = sink
	if _, ok := HugeZeroPFN(); !ok {
		t.Skip("the kernel maps no huge zero page here (THP or use_zero_page off)")
	}
	region[2*huge+5*PageSize] = 7 // one written page in a huge zero range
	start := base + off
	vmas := []*imagepb.Vma{{Start: start, End: start + 4*huge, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE, Prot: unix.PROT_READ | unix.PROT_WRITE}}
	s := &orderedSink{pages: map[uint64][]byte{}}
	var st Stats
	if err := selfReader(t).DumpPrivate(vmas, s, &st); err != nil {
		t.Fatal(err)
	}
	// a write into a huge zero range gets a whole huge page of its own
	// (or a small page where the kernel splits): at most 512 pages
	if len(s.pages) > hugeZeroPages || s.pages[start+2*huge+5*PageSize] == nil || s.pages[start+2*huge+5*PageSize][0] != 7 {
		t.Fatalf("saved %d pages, want at most the written huge page, with the written byte", len(s.pages))
	}
}
