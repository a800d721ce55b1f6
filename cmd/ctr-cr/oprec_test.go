package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/oprec"
)

// TestOpRecordLifeCycle: an operation (beginOp) first undoes what a dead
// ctr-cr left (its partial image goes with its record), then writes its
// own record, which lists the image directory it is about to write
// (recordImageDir) so that a crash leaves something to clean up; ending
// the operation removes the record and nothing else (the image stays).
func TestOpRecordLifeCycle(t *testing.T) {
	saved := oprec.Dir
	oprec.Dir = filepath.Join(t.TempDir(), "ops")
	t.Cleanup(func() { oprec.Dir = saved })
	self, err := oprec.Self()
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()

	// a dead ctr-cr's record (this pid with another start time) and the
	// partial image it left in a directory it created
	leftDir := filepath.Join(base, "left")
	if err := os.Mkdir(leftDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leftDir, "pages-1.img"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dead := oprec.Record{Proc: oprec.Proc{Pid: self.Pid, Start: self.Start + 1}, Op: "dump",
		Partials: []oprec.Partial{{Dir: leftDir, CreatedDir: true}}}
	deadPath := filepath.Join(oprec.Dir, fmt.Sprintf("%d-%d.json", dead.Pid, dead.Start))
	writeJSON(t, deadPath, dead)

	end, err := beginOp("dump")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftDir); !os.IsNotExist(err) {
		t.Errorf("the dead operation's partial image %s is still there (%v)", leftDir, err)
	}
	if _, err := os.Stat(deadPath); !os.IsNotExist(err) {
		t.Errorf("the dead operation's record is still there (%v)", err)
	}
	ownPath := filepath.Join(oprec.Dir, fmt.Sprintf("%d-%d.json", self.Pid, self.Start))
	img := filepath.Join(base, "img")
	if err := recordImageDir(img); err != nil {
		t.Fatal(err)
	}
	var own oprec.Record
	readJSON(t, ownPath, &own)
	if own.Op != "dump" || len(own.Partials) != 1 || own.Partials[0].Dir != img || !own.Partials[0].CreatedDir {
		t.Errorf("own record %+v, want op dump with the partial image %s (a directory it creates)", own, img)
	}
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	end()
	if _, err := os.Stat(ownPath); !os.IsNotExist(err) {
		t.Errorf("the record is still there after the operation ended (%v)", err)
	}
	if _, err := os.Stat(img); err != nil {
		t.Errorf("ending the operation touched its image directory: %v", err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
