package container

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func readDirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// siblings lists what is beside final in its parent, final excluded.
func siblings(t *testing.T, final string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(final))
	var out []string
	for _, e := range ents {
		if e.Name() != filepath.Base(final) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestStageReplacesPreviousImage: a committed image replaces the previous
// one whole (no file of the old one stays), and nothing is left beside it.
func TestStageReplacesPreviousImage(t *testing.T) {
	for _, prev := range []map[string]string{nil, {}, {"inventory.img": "old", "core-1.img": "old", "tmpfs-0.tar": "old", "ctr-cr.json": "{}", "restore.log": "x"}} {
		final := filepath.Join(t.TempDir(), "checkpoint")
		if prev != nil {
			writeFiles(t, final, prev)
		}
		s, err := stageImage(final)
		if err != nil {
			t.Fatalf("stage over %v: %v", prev, err)
		}
		writeFiles(t, s.tmp, map[string]string{"inventory.img": "new", "tmpfs-0.tar": "new"})
		if err := s.commit(); err != nil {
			t.Fatal(err)
		}
		s.done()
		if got := readDirFiles(t, final); len(got) != 2 || got["inventory.img"] != "new" || got["tmpfs-0.tar"] != "new" {
			t.Errorf("after commit over %v: %v", prev, got)
		}
		if left := siblings(t, final); len(left) != 0 {
			t.Errorf("left beside the image: %v", left)
		}
	}
}

// TestStageFailureKeepsPreviousImage: a staged image that is not committed
// leaves the previous one as it was and nothing beside it.
func TestStageFailureKeepsPreviousImage(t *testing.T) {
	final := filepath.Join(t.TempDir(), "checkpoint")
	prev := map[string]string{"inventory.img": "old", "spec.dump": "old"}
	writeFiles(t, final, prev)
	s, err := stageImage(final)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, s.tmp, map[string]string{"inventory.img": "half"})
	s.done()
	if got := readDirFiles(t, final); len(got) != 2 || got["inventory.img"] != "old" {
		t.Errorf("previous image changed: %v", got)
	}
	if left := siblings(t, final); len(left) != 0 {
		t.Errorf("left beside the image: %v", left)
	}
}

// TestStageBusy: a second stage of the same directory fails with ErrBusy
// while the first holds it, and succeeds after.
func TestStageBusy(t *testing.T) {
	final := filepath.Join(t.TempDir(), "checkpoint")
	s, err := stageImage(final)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stageImage(final); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), final) {
		t.Errorf("second stage: %v, want busy naming %s", err, final)
	}
	s.done()
	s2, err := stageImage(final)
	if err != nil {
		t.Fatalf("after the first is done: %v", err)
	}
	s2.done()
}

// TestStageRefusesForeignDirectory: a directory that holds anything but an
// image is never replaced.
func TestStageRefusesForeignDirectory(t *testing.T) {
	final := t.TempDir()
	writeFiles(t, final, map[string]string{"notes.txt": "mine"})
	if _, err := stageImage(final); err == nil || !strings.Contains(err.Error(), "notes.txt") {
		t.Errorf("stage over a directory with notes.txt: %v", err)
	}
	if err := os.Remove(filepath.Join(final, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(final, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := stageImage(final); err == nil || !strings.Contains(err.Error(), "sub") {
		t.Errorf("stage over a directory with a subdirectory: %v", err)
	}
}

// TestStageRecovers: what a checkpoint that died left beside the image is
// cleaned: unfinished directories removed, an image moved aside put back.
func TestStageRecovers(t *testing.T) {
	final := filepath.Join(t.TempDir(), "checkpoint")
	writeFiles(t, final+".tmp-123", map[string]string{"inventory.img": "half"})
	writeFiles(t, final+".old-123", map[string]string{"inventory.img": "old"})
	s, err := stageImage(final)
	if err != nil {
		t.Fatal(err)
	}
	defer s.done()
	if got := readDirFiles(t, final); got["inventory.img"] != "old" {
		t.Errorf("the image moved aside is not back: %v", got)
	}
	if left := siblings(t, final); len(left) != 2 { // the new tmp and the lock
		t.Errorf("beside the image: %v", left)
	}
}

// TestMoveAside: the two-rename replacement used where RENAME_EXCHANGE is
// missing.
func TestMoveAside(t *testing.T) {
	final := filepath.Join(t.TempDir(), "checkpoint")
	writeFiles(t, final, map[string]string{"inventory.img": "old"})
	s, err := stageImage(final)
	if err != nil {
		t.Fatal(err)
	}
	defer s.done()
	writeFiles(t, s.tmp, map[string]string{"inventory.img": "new"})
	old, err := s.moveAside()
	if err != nil {
		t.Fatal(err)
	}
	s.tmp = ""
	if got := readDirFiles(t, final); got["inventory.img"] != "new" {
		t.Errorf("final: %v", got)
	}
	if got := readDirFiles(t, old); got["inventory.img"] != "old" || !strings.HasPrefix(filepath.Base(old), "checkpoint.old-") {
		t.Errorf("%s: %v", old, got)
	}
}

// TestStageRefusesMountPoint: an image directory that is a mount point
// cannot be renamed into place: refused before anything is done.
func TestStageRefusesMountPoint(t *testing.T) {
	testutil.RequiresRoot(t)
	final := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.Mkdir(final, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", final, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(final, unix.MNT_DETACH)
	if _, err := stageImage(final); err == nil || !strings.Contains(err.Error(), "mount point") {
		t.Errorf("stage over a mount point: %v", err)
	}
	if left := siblings(t, final); len(left) != 0 {
		t.Errorf("left beside the image: %v", left)
	}
}

func TestTrustedRuntimeRoot(t *testing.T) {
	testutil.RequiresRoot(t) // the directories must be root's
	base := t.TempDir()
	good := filepath.Join(base, "good")
	open := filepath.Join(base, "open")
	link := filepath.Join(base, "link")
	for _, d := range []string{good, open} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		ok   bool
	}{
		{good, true}, {"/run", true},
		{open, false}, {filepath.Join(open, "x"), false}, {link, false},
		{"run/runc", false}, {good + "/../good", false}, {filepath.Join(base, "missing"), false},
	} {
		if err := trustedRuntimeRoot(c.path); (err == nil) != c.ok {
			t.Errorf("%s: error %v, want ok=%v", c.path, err, c.ok)
		}
	}
}
