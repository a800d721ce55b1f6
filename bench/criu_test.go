package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReadCRIUDumpStats decodes a stats-dump written by criu 4.2 (a
// sleeping process): freezing 3356 µs, frozen 5151 µs, memdump 222 µs,
// memwrite 70 µs.
func TestReadCRIUDumpStats(t *testing.T) {
	img := []byte{
		0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x21, 0x00, 0x00, 0x00,
		0x0a, 0x1f, 0x08, 0x9c, 0x1a, 0x10, 0x9f, 0x28, 0x18, 0xde, 0x01, 0x20,
		0x46, 0x28, 0x39, 0x30, 0x00, 0x38, 0x1e, 0x40, 0x00, 0x48, 0x00, 0x50,
		0x06, 0x58, 0x06, 0x60, 0x00, 0x68, 0x00, 0x70, 0x00,
	}
	p := filepath.Join(t.TempDir(), "stats-dump")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := readCRIUDumpStats(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.freezingUs != 3356 || st.frozenUs != 5151 || st.memdumpUs != 222 || st.memwriteUs != 70 {
		t.Errorf("stats %+v", st)
	}
	for _, bad := range [][]byte{img[:8], img[:20], append(append([]byte{}, img[:12]...), 0xff)} {
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readCRIUDumpStats(p); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
}
