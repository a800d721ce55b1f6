package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// layerImage writes the sample image with two layer files written into
// its directory before the dump and listed by the writer.
func layerImage(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "ctr-cr.json", []byte(`{"format":1}`))
	writeFile(t, dir, "tmpfs-0.tar", []byte(strings.Repeat("t", 5000)))
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, n := range []string{"ctr-cr.json", "tmpfs-0.tar"} {
		if err := w.ListLayerFile(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WritePstree([]*imagepb.PstreeEntry{{Pid: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(&imagepb.Inventory{RootPid: 1}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLayerFiles: layer files are listed with their checksums, read back
// verified, and a flipped bit in one, one unlisted, or one missing is
// refused by Open naming the file.
func TestLayerFiles(t *testing.T) {
	dir := layerImage(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.LayerFilesListed() || !r.Has("ctr-cr.json") || !r.Has("tmpfs-0.tar") {
		t.Fatalf("layer files not listed: %v", r.Inventory().Files)
	}
	if b, err := r.ReadLayerFile("ctr-cr.json", 1<<10); err != nil || string(b) != `{"format":1}` {
		t.Fatalf("ReadLayerFile = %q, %v", b, err)
	}
	if _, err := r.ReadLayerFile("tmpfs-0.tar", 100); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ReadLayerFile over max: %v", err)
	}
	f, err := r.OpenLayerFile("tmpfs-0.tar")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	// a flipped bit after Open: the read re-verifies
	b, _ := os.ReadFile(filepath.Join(dir, "ctr-cr.json"))
	b[3] ^= 1
	writeFile(t, dir, "ctr-cr.json", b)
	if _, err := r.ReadLayerFile("ctr-cr.json", 1<<10); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "ctr-cr.json") {
		t.Errorf("ReadLayerFile of a changed file: %v", err)
	}
	for _, name := range []string{"ctr-cr.json", "tmpfs-0.tar"} {
		dir := layerImage(t)
		b, _ := os.ReadFile(filepath.Join(dir, name))
		b[len(b)/2] ^= 0x10
		writeFile(t, dir, name, b)
		if _, err := Open(dir); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), name) {
			t.Errorf("Open with %s changed: %v", name, err)
		}
	}
	dir = layerImage(t)
	writeFile(t, dir, "container.json", []byte("{}"))
	if _, err := Open(dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "container.json: corrupt: not listed") {
		t.Errorf("Open with an unlisted container.json: %v", err)
	}
	dir = layerImage(t)
	os.Remove(filepath.Join(dir, "tmpfs-0.tar"))
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "tmpfs-0.tar") {
		t.Errorf("Open without tmpfs-0.tar: %v", err)
	}
}

// TestLayerFilesOldVersion: an image of format version 2 does not list
// its layer files; they are not checked (nor strays) there.
func TestLayerFilesOldVersion(t *testing.T) {
	dir := sampleImage(t)
	writeFile(t, dir, "container.json", []byte("{}"))
	resign(t, dir, func(inv *imagepb.Inventory) { inv.FormatVersion = 2 })
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.LayerFilesListed() || r.Has("container.json") {
		t.Error("a version 2 image lists its layer files")
	}
}

// TestListLayerFileRefusesCoreKinds: only layer kinds are listed this way.
func TestListLayerFileRefusesCoreKinds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, n := range []string{"core-1.img", "notes.txt"} {
		if err := w.ListLayerFile(n); err == nil {
			t.Errorf("ListLayerFile(%s) succeeded", n)
		}
	}
}
