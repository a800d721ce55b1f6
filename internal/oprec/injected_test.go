package oprec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// TestInjectedRecord: items are written before the act, extended,
// forgotten; End leaves no record when none is left (its items' targets
// gone), and the record on disk lists what is outstanding.
func TestInjectedRecord(t *testing.T) {
	Dir = filepath.Join(t.TempDir(), "ops")
	if err := Begin("dump"); err != nil {
		t.Fatal(err)
	}
	self, _ := Self()
	gone := Proc{Pid: self.Pid, Start: self.Start + 1} // not alive
	a, err := AddInjected(self, nil, []Area{{Addr: 0x1000, Size: 0x2000, Magic: []byte("m")}})
	if err != nil || a == 0 {
		t.Fatalf("AddInjected: %d, %v", a, err)
	}
	b, _ := AddInjected(gone, nil, nil)
	if err := ExtendInjected(b, [][2]int{{300, 301}}, nil); err != nil {
		t.Fatal(err)
	}
	read := func() *Record {
		var r Record
		data, err := os.ReadFile(filepath.Join(Dir, self.fileName()))
		if err != nil {
			return nil
		}
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	r := read()
	if r == nil || len(r.Injected) != 2 || r.Injected[1].Pipes[0] != [2]int{300, 301} || string(r.Injected[0].Areas[0].Magic) != "m" {
		t.Fatalf("record %+v", r)
	}
	if err := ForgetInjected(a); err != nil {
		t.Fatal(err)
	}
	if r := read(); len(r.Injected) != 1 || r.Injected[0].ID != b {
		t.Fatalf("after forget: %+v", r.Injected)
	}
	End() // b's target is gone: nothing of it is left to take back
	if exists(filepath.Join(Dir, self.fileName())) {
		t.Fatal("End kept a record with nothing outstanding")
	}
}

// TestInjectedPresent: what present() takes for injection's own in this
// very process: a close-on-exec pipe pair (read end, write end), not the
// ends swapped nor a pair of two pipes; an anonymous area that starts
// with its magic or was never touched, not one with other bytes nor a
// file mapping.
func TestInjectedPresent(t *testing.T) {
	var p1, p2 [2]int
	if err := unix.Pipe2(p1[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Pipe2(p2[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	for _, fd := range append(p1[:], p2[:]...) {
		defer unix.Close(fd)
	}
	pid := os.Getpid()
	if !pipePair(pid, p1[0], p1[1]) {
		t.Error("a pipe's read and write end: not taken for a pair")
	}
	if pipePair(pid, p1[1], p1[0]) || pipePair(pid, p1[0], p2[1]) {
		t.Error("swapped ends, or ends of two pipes, taken for a pair")
	}
	mapArea := func(content string) Area {
		m, err := unix.Mmap(-1, 0, 3*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(m) })
		copy(m, content)
		return Area{Addr: uint64(uintptr(unsafe.Pointer(&m[0]))), Size: uint64(len(m)), Magic: []byte("magic-bytes")}
	}
	untouched, withMagic, other := mapArea(""), mapArea("magic-bytes"), mapArea("the program's")
	vmas, err := procfs.ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		a    Area
		want bool
	}{{"untouched", untouched, true}, {"marked", withMagic, true}, {"other bytes", other, false}} {
		if got := anonymousThroughout(vmas, c.a) && marked(pid, c.a); got != c.want {
			t.Errorf("%s area: taken for ours %v, want %v", c.name, got, c.want)
		}
	}
	exe := Area{Addr: vmas[0].Start, Size: 4096}
	if anonymousThroughout(vmas, exe) {
		t.Error("a file mapping taken for an anonymous area")
	}
}
