package extents

import (
	"os"
	"path/filepath"
	"testing"
)

func TestData(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const mib = 1 << 20
	if err := f.Truncate(64 * mib); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 10 * mib, 63 * mib} {
		if _, err := f.WriteAt(make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	exts, total, err := Data(int(f.Fd()), 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	if total > 3*64*1024 || len(exts) < 3 { // a file system may round data up to its blocks
		t.Fatalf("extents %v, %d bytes of data in a 64 MiB file with 12 KiB written", exts, total)
	}
	if err := Check(exts, 64*mib, total); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(Format(exts), 100)
	if err != nil || len(back) != len(exts) || back[0] != exts[0] {
		t.Fatalf("Parse(Format) = %v, %v; want %v", back, err, exts)
	}
}

func TestCheckAndParseReject(t *testing.T) {
	for _, c := range []struct {
		exts       []Extent
		size, data int64
	}{
		{[]Extent{{0, 10}, {5, 10}}, 100, 20}, // overlap
		{[]Extent{{10, 10}, {0, 5}}, 100, 15}, // out of order
		{[]Extent{{90, 20}}, 100, 20},         // past the end
		{[]Extent{{0, 0}}, 100, 0},            // empty
		{[]Extent{{0, 10}}, 100, 11},          // sum
		{nil, -1, 0},                          // size
		{[]Extent{{1 << 62, 1 << 62}}, 1 << 62, 1 << 62},
	} {
		if err := Check(c.exts, c.size, c.data); err == nil {
			t.Errorf("Check(%v, %d, %d) accepted", c.exts, c.size, c.data)
		}
	}
	for _, s := range []string{"1", "1+", "+1", "a+1", "1+2,x"} {
		if _, err := Parse(s, 10); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
	if _, err := Parse("0+1,2+1,4+1", 2); err == nil {
		t.Errorf("Parse accepted more extents than its limit")
	}
}
