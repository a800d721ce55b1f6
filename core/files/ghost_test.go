package files

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestDataExtents: the data extents of a sparse file are found, holes
// skipped, and fillGhost writes them back with the same layout.
func TestDataExtents(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("head"), 0)
	f.WriteAt(make([]byte, 8192), 16<<20)
	f.WriteAt([]byte("tail"), size-4)
	exts, total, err := dataExtents(int(f.Fd()), size)
	if err != nil {
		t.Fatal(err)
	}
	if len(exts) != 3 || total > 64<<10 {
		t.Fatalf("extents %v (total %d), want 3 small ones", exts, total)
	}
	if exts[0].Off != 0 || exts[2].Off+exts[2].Len != size {
		t.Errorf("extents %v do not start at 0 and end at the size", exts)
	}
	data := make([]byte, total)
	pos := int64(0)
	for _, e := range exts {
		if err := preadFull(int(f.Fd()), data[pos:pos+e.Len], e.Off); err != nil {
			t.Fatal(err)
		}
		pos += e.Len
	}
	g, err := os.Create(filepath.Join(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	entry := &imagepb.FileEntry{Path: "/x", Size: size, GhostSparse: true, GhostExtents: exts, GhostData: data}
	if err := checkGhost(entry); err != nil {
		t.Fatal(err)
	}
	if err := fillGhost(int(g.Fd()), entry); err != nil {
		t.Fatal(err)
	}
	again, _, err := dataExtents(int(g.Fd()), size)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != len(exts) {
		t.Fatalf("restored extents %v, were %v", again, exts)
	}
	for i := range exts {
		if again[i].Off != exts[i].Off || again[i].Len != exts[i].Len {
			t.Errorf("extent %d: %v, was %v", i, again[i], exts[i])
		}
	}
	var a, b unix.Stat_t
	unix.Fstat(int(f.Fd()), &a)
	unix.Fstat(int(g.Fd()), &b)
	if a.Size != b.Size || a.Blocks != b.Blocks {
		t.Errorf("size/blocks %d/%d, were %d/%d", b.Size, b.Blocks, a.Size, a.Blocks)
	}
}

// TestCheckGhostHostile: bad extents and sizes in an image are errors.
func TestCheckGhostHostile(t *testing.T) {
	ext := func(off, n int64) *imagepb.GhostExtent { return &imagepb.GhostExtent{Off: off, Len: n} }
	bad := map[string]*imagepb.FileEntry{
		"negative size":   {Size: -1},
		"legacy short":    {Size: 10, GhostData: []byte("abc")},
		"past the end":    {Size: 10, GhostSparse: true, GhostExtents: []*imagepb.GhostExtent{ext(8, 4)}, GhostData: make([]byte, 4)},
		"overlap":         {Size: 100, GhostSparse: true, GhostExtents: []*imagepb.GhostExtent{ext(0, 8), ext(4, 8)}, GhostData: make([]byte, 16)},
		"zero length":     {Size: 100, GhostSparse: true, GhostExtents: []*imagepb.GhostExtent{ext(0, 0)}},
		"negative offset": {Size: 100, GhostSparse: true, GhostExtents: []*imagepb.GhostExtent{ext(-4, 8)}, GhostData: make([]byte, 8)},
		"overflow":        {Size: 100, GhostSparse: true, GhostExtents: []*imagepb.GhostExtent{ext(50, 1<<62)}, GhostData: make([]byte, 8)},
		"data mismatch":   {Size: 100, GhostSparse: true, GhostExtents: []*imagepb.GhostExtent{ext(0, 8)}, GhostData: make([]byte, 9)},
		"dir with data":   {Mode: unix.S_IFDIR, GhostData: []byte("x")},
	}
	for name, f := range bad {
		f.Path = "/g"
		if err := checkGhost(f); err == nil || !strings.Contains(err.Error(), "/g") {
			t.Errorf("%s: checkGhost = %v", name, err)
		}
	}
	ok := &imagepb.FileEntry{Path: "/g", Size: 1 << 40, GhostSparse: true,
		GhostExtents: []*imagepb.GhostExtent{ext(0, 4), ext(1<<30, 4)}, GhostData: make([]byte, 8)}
	if err := checkGhost(ok); err != nil {
		t.Errorf("valid sparse entry: %v", err)
	}
}

// TestReadFownUnset: a file without owner or signal records nothing.
func TestReadFownUnset(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fo, err := readFown(int(f.Fd()))
	if err != nil || fo != nil {
		t.Fatalf("readFown = %v, %v", fo, err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETSIG, int(unix.SIGUSR1)); err != nil {
		t.Fatal(err)
	}
	fo, err = readFown(int(f.Fd()))
	if err != nil || fo == nil || fo.Signum != int32(unix.SIGUSR1) {
		t.Fatalf("readFown after F_SETSIG = %v, %v", fo, err)
	}
}
