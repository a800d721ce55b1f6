package image

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestSideFile: a side file (namespaces.json) reads back only as written:
// a changed byte, a missing file or a symlink in its place is an error.
func TestSideFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := w.WriteSide("namespaces.json", []byte(`{"version":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := ReadSide(dir, "namespaces.json", sum, 1<<20); err != nil || string(b) != `{"version":1}` {
		t.Fatalf("read back: %q %v", b, err)
	}
	if _, err := ReadSide(dir, "namespaces.json", sum, 4); !errors.Is(err, ErrCorrupt) {
		t.Errorf("over the limit: %v", err)
	}
	p := filepath.Join(dir, "namespaces.json")
	if err := os.WriteFile(p, []byte(`{"version":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSide(dir, "namespaces.json", sum, 1<<20); !errors.Is(err, ErrChecksum) {
		t.Errorf("changed: %v", err)
	}
	os.Remove(p)
	if err := os.Symlink("/etc/hostname", p); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSide(dir, "namespaces.json", sum, 1<<20); err == nil {
		t.Error("a symlink was followed")
	}
	w.Abort()
}
