package memory

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestDirtyTracking tracks a mapping of this test process with its own
// userfaultfd: written pages are found (and unpopulated or MADV_DONTNEED'd
// ones count as written), re-armed pages are clean again, and only clean
// present pages are reusable.
func TestDirtyTracking(t *testing.T) {
	testutil.RequiresRoot(t) // userfaultfd for kernel faults
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if e != 0 {
		t.Skipf("userfaultfd: %v", e)
	}
	uffd := int(fd)
	defer unix.Close(uffd)
	if err := EnableTracking(uffd); err != nil {
		if errors.Is(err, ErrNoTracking) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	const n = 16
	m, err := unix.Mmap(-1, 0, n*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	unix.Madvise(m, unix.MADV_NOHUGEPAGE)
	for i := 0; i < n-1; i++ { // the last page stays untouched
		m[i*PageSize] = 1
	}
	base := uint64(uintptrOf(m))
	span := Spans{{base, base + n*PageSize}}
	if err := RegisterWP(uffd, base, base+n*PageSize); err != nil {
		t.Fatal(err)
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	pages := func(s Spans) string {
		var out []uint64
		for _, x := range s {
			for a := x.Start; a < x.End; a += PageSize {
				out = append(out, (a-base)/PageSize)
			}
		}
		return fmt.Sprint(out)
	}
	// armed: everything present was "written" (no bit yet)
	w, err := ScanWritten(int(pm.Fd()), span, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := pages(w); got != "[0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15]" { // unpopulated counts as written
		t.Fatalf("first scan: written %s", got)
	}
	m[3*PageSize] = 2
	m[15*PageSize+7] = 2 // faulted in by a write
	unix.Madvise(m[5*PageSize:6*PageSize], unix.MADV_DONTNEED)
	_ = m[6*PageSize] // read: still clean
	r, err := ScanReusable(int(pm.Fd()), span, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := pages(r); got != "[0 1 2 4 6 7 8 9 10 11 12 13 14]" {
		t.Fatalf("reusable: %s", got)
	}
	w, err = ScanWritten(int(pm.Fd()), span, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := pages(w); got != "[3 5 15]" { // a dropped page counts as written too
		t.Fatalf("written: %s", got)
	}
	if w, _ = ScanWritten(int(pm.Fd()), span, false); len(w) != 0 {
		t.Fatalf("written after re-arm: %s", pages(w))
	}
}
