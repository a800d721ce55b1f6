package oprec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeRecord stores r as a record in Dir.
func writeRecord(t *testing.T, r *Record) {
	t.Helper()
	if err := os.MkdirAll(Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	if err := os.WriteFile(filepath.Join(Dir, r.fileName()), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestSweep: a record whose pid now belongs to another process (the same
// pid, another start time: here, this test) is stale; its partial image
// files and staging directory go, a complete image and other files stay;
// a dry run changes nothing; a live process's record is left alone; the
// stale record is removed once undone.
func TestSweep(t *testing.T) {
	Dir = filepath.Join(t.TempDir(), "ops")
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	partial := filepath.Join(base, "partial")
	full := filepath.Join(base, "full")
	stage := filepath.Join(base, "img.tmp-1")
	for _, d := range []string{partial, full, stage} {
		os.Mkdir(d, 0o755)
	}
	touch(t, filepath.Join(partial, "pages-1.img"))
	touch(t, filepath.Join(partial, "inventory.img.tmp"))
	touch(t, filepath.Join(partial, "dump.log"))
	touch(t, filepath.Join(full, "pages-1.img"))
	touch(t, filepath.Join(full, "inventory.img"))
	touch(t, filepath.Join(stage, "tmpfs-0.tar"))

	dead := &Record{Proc: Proc{Pid: self.Pid, Start: self.Start + 1}, Op: "dump", Partials: []Partial{
		{Dir: partial}, {Dir: full}, {Dir: stage, Staging: true},
	}}
	live := &Record{Proc: self, Op: "dump", Partials: []Partial{{Dir: full, Staging: true}}}
	writeRecord(t, dead)
	writeRecord(t, live)

	var lines []string
	if err := Sweep(true, func(l string) { lines = append(lines, l) }); err != nil {
		t.Fatal(err)
	}
	out := strings.Join(lines, "\n")
	if !strings.Contains(out, "would remove the partial image in "+partial) || !strings.Contains(out, "would remove the unfinished directory "+stage) {
		t.Errorf("dry run does not list the partial image and the staging directory:\n%s", out)
	}
	if strings.Contains(out, full) {
		t.Errorf("dry run names the complete image or the live record's directory:\n%s", out)
	}
	if !exists(filepath.Join(partial, "pages-1.img")) || !exists(stage) || !exists(filepath.Join(Dir, dead.fileName())) {
		t.Fatal("the dry run changed something")
	}

	if err := Sweep(false, nil); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(partial, "pages-1.img")) || exists(filepath.Join(partial, "inventory.img.tmp")) {
		t.Error("the partial image's files are still there")
	}
	if !exists(filepath.Join(partial, "dump.log")) {
		t.Error("a file that is not part of an image was removed")
	}
	if exists(stage) {
		t.Error("the staging directory is still there")
	}
	if !exists(filepath.Join(full, "pages-1.img")) || !exists(filepath.Join(full, "inventory.img")) {
		t.Error("the complete image was touched")
	}
	if exists(filepath.Join(Dir, dead.fileName())) {
		t.Error("the stale record is still there")
	}
	if !exists(filepath.Join(Dir, live.fileName())) {
		t.Error("the live process's record was removed")
	}
}

// TestBeginEnd: Begin writes this process's record, the Add functions
// extend it, End removes it; without Begin they do nothing.
func TestBeginEnd(t *testing.T) {
	Dir = filepath.Join(t.TempDir(), "ops")
	if err := AddFrozen("/sys/fs/cgroup/x"); err != nil {
		t.Fatal(err)
	}
	if exists(Dir) {
		t.Fatal("an Add without Begin wrote a record")
	}
	if err := Begin("checkpoint"); err != nil {
		t.Fatal(err)
	}
	if err := AddFrozen("/sys/fs/cgroup/x"); err != nil {
		t.Fatal(err)
	}
	self, _ := Self()
	r, err := read(filepath.Join(Dir, self.fileName()))
	if err != nil || r == nil {
		t.Fatalf("record: %v %v", r, err)
	}
	if r.Op != "checkpoint" || len(r.Frozen) != 1 || r.Frozen[0] != "/sys/fs/cgroup/x" {
		t.Fatalf("record %+v", r)
	}
	if recs, err := Stale(); err != nil || len(recs) != 0 {
		t.Fatalf("a live record counts as stale: %v %v", recs, err)
	}
	End()
	if exists(filepath.Join(Dir, self.fileName())) {
		t.Fatal("End left the record")
	}
}

// TestStaleOtherPidNS: a record written in another pid namespace is not
// judged from this one (its pid may name no process, or another one,
// here), so a sweep never undoes a live operation of a ctr-cr running in
// a container or a pid namespace of its own.
func TestStaleOtherPidNS(t *testing.T) {
	Dir = filepath.Join(t.TempDir(), "ops")
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(t.TempDir(), "partial")
	os.Mkdir(part, 0o755)
	touch(t, filepath.Join(part, "pages-1.img"))
	foreign := &Record{Proc: Proc{Pid: self.Pid, Start: self.Start + 1}, PidNS: ownPidNS() + 1, Op: "dump", Partials: []Partial{{Dir: part}}}
	writeRecord(t, foreign)
	recs, err := Stale()
	if err != nil || len(recs) != 0 {
		t.Fatalf("Stale: %v %v, want no record of another pid namespace", recs, err)
	}
	if err := Sweep(false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(part, "pages-1.img")); err != nil {
		t.Fatalf("a sweep removed another pid namespace's partial image: %v", err)
	}
	same := &Record{Proc: Proc{Pid: self.Pid, Start: self.Start + 2}, PidNS: ownPidNS(), Op: "dump"}
	writeRecord(t, same)
	if recs, err := Stale(); err != nil || len(recs) != 1 {
		t.Fatalf("Stale: %v %v, want the dead record of this pid namespace", recs, err)
	}
}
