package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyMapped: the whole-file check through mappings passes a clean
// pages file (again after Rewind), fails a flipped byte and a file of
// another size with ErrChecksum naming the file, and falls back to Verify
// after an in-order read.
func TestVerifyMapped(t *testing.T) {
	dir := sampleImage(t)
	r, err := OpenWith(dir, OpenOptions{DeferPages: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.OpenPages("10")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.VerifyMapped(); err != nil {
		t.Errorf("clean pages file: VerifyMapped: %v", err)
	}
	p.Rewind()
	if err := p.VerifyMapped(); err != nil {
		t.Errorf("clean pages file after Rewind: VerifyMapped: %v", err)
	}
	p.Rewind()
	b := make([]byte, PageSize)
	p.ReadAt(b, 0)
	if err := p.VerifyMapped(); err != nil {
		t.Errorf("clean pages file, first page read: VerifyMapped: %v", err)
	}
	p.Close()

	path := filepath.Join(dir, "pages-10.img")
	data, _ := os.ReadFile(path)
	data[len(data)-PageSize/2] ^= 0x02
	writeFile(t, dir, "pages-10.img", data)
	p, _ = r.OpenPages("10")
	if err := p.VerifyMapped(); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "pages-10.img") {
		t.Errorf("damaged pages: VerifyMapped: %v, want ErrChecksum naming pages-10.img", err)
	}
	p.Close()

	p, _ = r.OpenPages("10")
	defer p.Close()
	if err := os.Truncate(path, int64(len(data)-PageSize)); err != nil {
		t.Fatal(err)
	}
	if err := p.VerifyMapped(); !errors.Is(err, ErrChecksum) {
		t.Errorf("truncated pages: VerifyMapped: %v, want ErrChecksum", err)
	}
	// cut short while mapped: the fault past the end is an error
	p.Rewind()
	if err := p.hashWindow(p.f.(*os.File), 0, int64(len(data))); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "changed") {
		t.Errorf("mapping past the end: %v, want ErrChecksum", err)
	}
}
