package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func TestKindTable(t *testing.T) {
	magics := map[Magic]string{}
	examples := map[string]string{}
	for _, k := range kinds {
		if (k.Raw || k.Layer) != (k.Entry == nil) {
			t.Errorf("%s: Raw or Layer must go with a nil Entry", k.Name)
		}
		if !k.Raw && !k.Layer {
			if other, dup := magics[k.Magic]; dup {
				t.Errorf("%s and %s share magic %s", k.Name, other, k.Magic)
			}
			magics[k.Magic] = k.Name
		}
		for _, arg := range []string{"1", "42", "2147483647"} {
			name, err := k.FileName(arg)
			if err != nil {
				t.Fatalf("%s: %v", k.Name, err)
			}
			got, gotArg, err := KindOf(name)
			if err != nil || got.Name != k.Name {
				t.Errorf("KindOf(%q) = %q, %v; want kind %s", name, got.Name, err, k.Name)
			}
			if _, _, ph := k.split(); ph != "" && gotArg != arg {
				t.Errorf("KindOf(%q) arg = %q, want %q", name, gotArg, arg)
			}
			examples[name] = k.Name
		}
	}
	for _, bad := range []string{"core-0.img", "core-01.img", "core--1.img", "core-2147483648.img", "core-.img",
		"pages-.img", "pages-a/b.img", "pages-a.b.img", "inventory.img.tmp", "x.img", "core-1.img.bak"} {
		if _, _, err := KindOf(bad); err == nil {
			t.Errorf("KindOf(%q) succeeded", bad)
		}
	}
	if m, err := MagicOf("core-7.img"); err != nil || m.String() != "CRCO" {
		t.Errorf("MagicOf(core-7.img) = %v, %v", m, err)
	}
	if _, err := MagicOf("pages-7.img"); err == nil {
		t.Error("MagicOf(pages-7.img) succeeded")
	}
	if s := (Magic{0, 'A', 0xff, 'B'}).String(); s != `"\x00A\xffB" (00 41 ff 42)` {
		t.Errorf("Magic.String() = %s", s)
	}
}

func TestRoundTrip(t *testing.T) {
	s := newSample()
	dir := filepath.Join(t.TempDir(), "img")
	s.write(t, dir)

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, %v; want 0700", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode())
		}
	}

	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	inv := r.Inventory()
	if inv.FormatVersion != FormatVersion || inv.RootPid != 10 || inv.Arch != "amd64" {
		t.Errorf("inventory %v", inv)
	}
	var names []string
	for _, f := range inv.Files {
		names = append(names, f.Name)
	}
	want := "core-10.img core-12.img fdinfo-10.img fdinfo-12.img files.img mm-10.img mm-12.img " +
		"pagemap-10.img pagemap-12.img pagemap-shmem-5.img pages-10.img pages-12.img pages-shmem-5.img pstree.img"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("inventory files\n got %s\nwant %s", got, want)
	}

	eq := func(what string, got, want proto.Message) {
		t.Helper()
		if !proto.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	pst, err := r.Pstree()
	if err != nil || len(pst) != len(s.pstree) {
		t.Fatalf("Pstree: %v, %v", pst, err)
	}
	for i := range pst {
		eq("pstree", pst[i], s.pstree[i])
	}
	for pid, c := range s.cores {
		got, err := r.Core(pid)
		if err != nil {
			t.Fatal(err)
		}
		eq("core", got, c)
	}
	for pid, m := range s.mms {
		got, err := r.Mm(pid)
		if err != nil {
			t.Fatal(err)
		}
		eq("mm", got, m)
	}
	files, err := r.Files()
	if err != nil || len(files) != len(s.files) {
		t.Fatalf("Files: %v, %v", files, err)
	}
	for i := range files {
		eq("files", files[i], s.files[i])
	}
	for pid, fds := range s.fds {
		got, err := r.Fdinfo(pid)
		if err != nil || len(got) != len(fds) {
			t.Fatalf("Fdinfo(%d): %v, %v", pid, got, err)
		}
		for i := range got {
			eq("fdinfo", got[i], fds[i])
		}
	}
	if _, err := r.Core(99); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Core(99) = %v, want ErrNotExist", err)
	}
}

func TestPages(t *testing.T) {
	dir := sampleImage(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		runs []*imagepb.PagemapEntry
	}{
		{"10", []*imagepb.PagemapEntry{{Vaddr: 0x400000, NrPages: 3}, {Vaddr: 0x600000, NrPages: 1}}},
		{"shmem-5", []*imagepb.PagemapEntry{{Vaddr: 0x1000, NrPages: 1}, {Vaddr: 0, NrPages: 1}}},
		{"12", nil},
	} {
		head, runs, err := r.Pagemap(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if head.PagesFile != "pages-"+tc.name+".img" || head.PageSize != PageSize {
			t.Errorf("%s: head %v", tc.name, head)
		}
		if len(runs) != len(tc.runs) {
			t.Fatalf("%s: runs %v, want %v", tc.name, runs, tc.runs)
		}
		for i := range runs {
			if !proto.Equal(runs[i], tc.runs[i]) {
				t.Errorf("%s: run %d = %v, want %v", tc.name, i, runs[i], tc.runs[i])
			}
		}
		f, err := r.OpenPages(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		for _, rn := range newSample().pages[tc.name] {
			want = append(want, rn.data...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: pages content differs (%d bytes, want %d)", tc.name, len(got), len(want))
		}
	}
}

func TestWriterErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustFail := func(what string, err error, substr string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), substr) {
			t.Errorf("%s: err = %v, want one containing %q", what, err, substr)
		}
	}
	mustFail("wrong type", w.WriteEntries("core-1.img", &imagepb.MmEntry{}), "want ctrcr.image.v1.TaskCore")
	mustFail("two cores", w.WriteEntries("core-1.img", &imagepb.TaskCore{Pid: 1}, &imagepb.TaskCore{Pid: 1}), "exactly one")
	mustFail("nil", w.WriteCore(1, nil), "nil")
	mustFail("pid", w.WriteCore(1, &imagepb.TaskCore{Pid: 2}), "has pid 2")
	mustFail("inventory", w.WriteEntries(InventoryName, &imagepb.Inventory{}), "written by Finish")
	mustFail("raw", w.WriteEntries("pages-1.img"), "raw")
	mustFail("name", w.WriteEntries("core-x.img"), "not the name")
	mustFail("no head", w.WriteEntries("pagemap-1.img", &imagepb.PagemapEntry{}), "want ctrcr.image.v1.PagemapHead")
	if err := w.WriteCore(1, &imagepb.TaskCore{Pid: 1}); err != nil {
		t.Fatal(err)
	}
	mustFail("twice", w.WriteCore(1, &imagepb.TaskCore{Pid: 1}), "written twice")

	p, err := w.CreatePages("1")
	if err != nil {
		t.Fatal(err)
	}
	mustFail("unaligned", p.WritePages(0x1001, pageData(1, 0)), "bad run")
	mustFail("partial page", p.WritePages(0x1000, make([]byte, 100)), "bad run")
	mustFail("empty", p.WritePages(0x1000, nil), "bad run")
	mustFail("wrap", p.WritePages(^uint64(0)&^(PageSize-1), pageData(1, 0)), "bad run")
	mustFail("pagemap taken", w.WriteEntries("pagemap-1.img", &imagepb.PagemapHead{}), "written twice")
	mustFail("open pages", w.Finish(&imagepb.Inventory{}), "not closed: pages-1.img")

	// Overlapping runs are refused at Close.
	p2, err := w.CreatePages("2")
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.WritePages(0x5000, pageData(2, 0)); err != nil {
		t.Fatal(err)
	}
	if err := p2.WritePages(0x6000, pageData(1, 0)); err != nil {
		t.Fatal(err)
	}
	mustFail("overlap", p2.Close(), "overlaps")

	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Abort: %v, want the directory removed", err)
	}
	mustFail("after abort", w.WriteCore(3, &imagepb.TaskCore{Pid: 3}), "aborted")
	mustFail("close after abort", p.Close(), "")
}

func TestCreateRefusesImage(t *testing.T) {
	dir := sampleImage(t)
	if _, err := Create(dir); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("Create over an image: %v", err)
	}
	// An existing empty directory is kept by Abort.
	empty := t.TempDir()
	w, err := Create(empty)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePstree(nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(empty); err != nil || len(ents) != 0 {
		t.Errorf("after Abort: %v, %v; want an empty directory", ents, err)
	}
}

func TestAbortAfterFinish(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePstree([]*imagepb.PstreeEntry{{Pid: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(&imagepb.Inventory{RootPid: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Errorf("Open after Finish+Abort: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, inventoryTemp)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary inventory left behind: %v", err)
	}
}

func TestFileJSON(t *testing.T) {
	dir := sampleImage(t)
	var out bytes.Buffer
	if err := FileJSON(filepath.Join(dir, "core-10.img"), &out); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Magic   string           `json:"magic"`
		Kind    string           `json:"kind"`
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if v.Magic != "CRCO" || v.Kind != "core" || len(v.Entries) != 1 || v.Entries[0]["comm"] != "init" {
		t.Errorf("core JSON: %s", out.String())
	}
	if !strings.Contains(out.String(), "\n    ") {
		t.Errorf("core JSON is not indented: %s", out.String())
	}

	out.Reset()
	if err := FileJSON(filepath.Join(dir, "fdinfo-12.img"), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"entries": []`) {
		t.Errorf("empty file JSON: %s", out.String())
	}

	out.Reset()
	if err := FileJSON(filepath.Join(dir, "pages-10.img"), &out); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(out.Bytes(), &p); err != nil || p["kind"] != "pages" || p["size"] != 4.0*PageSize || p["pages"] != 4.0 {
		t.Errorf("pages JSON: %s (%v)", out.String(), err)
	}

	// Decoding goes by the magic, whatever the file is called.
	writeFile(t, dir, "renamed", frame(magicOf("pstree.img"), &imagepb.PstreeEntry{Pid: 3}))
	d, err := DecodeFile(filepath.Join(dir, "renamed"))
	if err != nil || d.Kind != "pstree" || len(d.Entries) != 1 {
		t.Errorf("DecodeFile(renamed) = %v, %v", d, err)
	}

	writeFile(t, dir, "junk", []byte("JUNK\x00\x00\x00\x00"))
	err = FileJSON(filepath.Join(dir, "junk"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "junk: offset 0: corrupt: unknown magic JUNK") {
		t.Errorf("unknown magic: %v", err)
	}
	writeFile(t, dir, "bin", []byte{0xde, 0xad, 0xbe, 0xef})
	err = FileJSON(filepath.Join(dir, "bin"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `unknown magic "\xde\xad\xbe\xef" (de ad be ef)`) {
		t.Errorf("unknown magic: %v", err)
	}
}

func TestFinishAfterFailedWrite(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	p, err := w.CreatePages("1")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WritePages(0x2000, pageData(2, 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.WritePages(0x1000, pageData(2, 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err == nil {
		t.Fatal("Close accepted overlapping runs")
	}
	err = w.Finish(&imagepb.Inventory{})
	if err == nil || !strings.Contains(err.Error(), "files not completely written: pagemap-1.img, pages-1.img") {
		t.Errorf("Finish after a failed write: %v", err)
	}
}

// TestConcurrentWriters writes one process per goroutine, as a dump would.
func TestConcurrentWriters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	const n = 8
	var pst []*imagepb.PstreeEntry
	errs := make(chan error, n)
	for pid := 1; pid <= n; pid++ {
		ppid := int32(0)
		if pid > 1 {
			ppid = 1
		}
		pst = append(pst, &imagepb.PstreeEntry{Pid: int32(pid), Ppid: ppid})
		go func() {
			errs <- func() error {
				if err := w.WriteCore(pid, &imagepb.TaskCore{Pid: int32(pid)}); err != nil {
					return err
				}
				p, err := w.CreatePages(fmt.Sprint(pid))
				if err != nil {
					return err
				}
				for i := range 20 {
					if err := p.WritePages(uint64(i)*2*PageSize, pageData(1+i%2, byte(pid))); err != nil {
						return err
					}
				}
				return p.Close()
			}()
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WritePstree(pst); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(&imagepb.Inventory{RootPid: 1}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Runs of 2 pages at a 2-page stride merge with the next run.
	_, runs, err := r.Pagemap("3")
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 || len(runs) >= 20 {
		t.Errorf("runs not merged: %v", runs)
	}
}

// FinishAfter's check runs once the files are written and before the
// inventory names them; its failure leaves no image for Abort to miss.
func TestFinishAfterCheck(t *testing.T) {
	for _, fail := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "img")
		w, err := Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WritePstree([]*imagepb.PstreeEntry{{Pid: 1}}); err != nil {
			t.Fatal(err)
		}
		calls := 0
		err = w.FinishAfter(&imagepb.Inventory{RootPid: 1}, func() error {
			calls++
			if _, err := os.Stat(filepath.Join(dir, InventoryName)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("inventory written before the check: %v", err)
			}
			if fail {
				return errors.New("pages not confirmed")
			}
			return nil
		})
		if calls != 1 {
			t.Errorf("check called %d times", calls)
		}
		if fail {
			if err == nil || !strings.Contains(err.Error(), "pages not confirmed") {
				t.Fatalf("failed check: Finish gave %v", err)
			}
			if err := w.Abort(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("after a failed check and Abort: %v; want no directory", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir); err != nil {
			t.Errorf("Open: %v", err)
		}
	}
}
