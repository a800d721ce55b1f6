package image

import (
	"bytes"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestSplicePages: runs spliced from a pipe and runs written, mixed, land
// in order in the pages file with one pagemap, and the checksum covers the
// spliced ones (the image opens verified, and a flipped bit in a spliced
// page is caught).
func TestSplicePages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := w.CreatePages("1")
	if err != nil {
		t.Fatal(err)
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var want []byte
	splice := func(vaddr uint64, data []byte) {
		t.Helper()
		if _, err := unix.Write(fds[1], data); err != nil {
			t.Fatal(err)
		}
		if err := p.SplicePages(vaddr, fds[0], len(data)); err != nil {
			t.Fatal(err)
		}
		want = append(want, data...)
	}
	write := func(vaddr uint64, data []byte) {
		t.Helper()
		if err := p.WritePages(vaddr, data); err != nil {
			t.Fatal(err)
		}
		want = append(want, data...)
	}
	// several pipes spliced at once (SpliceRuns), each to its place
	var more [3][2]int
	for i := range more {
		if err := unix.Pipe2(more[i][:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(more[i][0])
		defer unix.Close(more[i][1])
	}
	spliceRuns := func(vaddr uint64, seed byte) {
		t.Helper()
		var runs []SpliceRun
		for i := range more {
			// two runs a pipe (a gap between them): they come out of
			// it in order
			for j := 0; j < 2; j++ {
				data := pageData(1+i, seed+byte(2*i+j))
				if _, err := unix.Write(more[i][1], data); err != nil {
					t.Fatal(err)
				}
				runs = append(runs, SpliceRun{Vaddr: vaddr, PipeFd: more[i][0], N: len(data)})
				vaddr += uint64(len(data)) + PageSize
				want = append(want, data...)
			}
		}
		if err := p.SpliceRuns(runs, 4); err != nil {
			t.Fatal(err)
		}
	}
	write(0x10000, pageData(2, 1))
	splice(0x12000, pageData(4, 2)) // extends the first run
	splice(0x20000, pageData(8, 3))
	write(0x30000, pageData(1, 4))
	splice(0x40000, pageData(3, 5))
	spliceRuns(0x50000, 6) // runs of 1, 1, 2, 2, 3, 3 pages, a page apart
	write(0x68000, pageData(1, 19))
	spliceRuns(0x70000, 20)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(&imagepb.Inventory{}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, runs, err := r.Pagemap("1")
	if err != nil {
		t.Fatal(err)
	}
	wantRuns := []*imagepb.PagemapEntry{{Vaddr: 0x10000, NrPages: 6}, {Vaddr: 0x20000, NrPages: 8}, {Vaddr: 0x30000, NrPages: 1}, {Vaddr: 0x40000, NrPages: 3},
		{Vaddr: 0x50000, NrPages: 1}, {Vaddr: 0x52000, NrPages: 1}, {Vaddr: 0x54000, NrPages: 2}, {Vaddr: 0x57000, NrPages: 2},
		{Vaddr: 0x5a000, NrPages: 3}, {Vaddr: 0x5e000, NrPages: 3},
		{Vaddr: 0x68000, NrPages: 1},
		{Vaddr: 0x70000, NrPages: 1}, {Vaddr: 0x72000, NrPages: 1}, {Vaddr: 0x74000, NrPages: 2}, {Vaddr: 0x77000, NrPages: 2},
		{Vaddr: 0x7a000, NrPages: 3}, {Vaddr: 0x7e000, NrPages: 3}}
	if len(runs) != len(wantRuns) {
		t.Fatalf("runs %v, want %v", runs, wantRuns)
	}
	for i := range runs {
		if runs[i].Vaddr != wantRuns[i].Vaddr || runs[i].NrPages != wantRuns[i].NrPages {
			t.Errorf("run %d = %v, want %v", i, runs[i], wantRuns[i])
		}
	}
	f, err := r.OpenPages("1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
	f.Close()
	if !bytes.Equal(got, want) {
		t.Fatalf("pages file differs from what was spliced and written")
	}
	// a flipped bit in a spliced page is caught when the image is opened
	pf := filepath.Join(dir, "pages-1.img")
	flipByte(t, pf, int64(3*PageSize+100))
	if _, err := Open(dir); err == nil {
		t.Fatal("a flipped bit in a spliced page was not caught")
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	b := make([]byte, 1)
	if _, err := unix.Pread(fd, b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := unix.Pwrite(fd, b, off); err != nil {
		t.Fatal(err)
	}
}

// TestSplicePagesStream: with the pages file a stream (a page server's
// pipe, SetPagesSink), spliced runs are read from their pipe and written:
// the stream gets them in order and the recorded checksum covers them.
func TestSplicePagesStream(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	sr, sw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(sr); got <- b }()
	w.SetPagesSink(func(string) (io.WriteCloser, error) { return sw, nil })
	p, err := w.CreatePages("1")
	if err != nil {
		t.Fatal(err)
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var want []byte
	for i, n := range []int{2, 5, 1} {
		data := pageData(n, byte(10*i))
		if i == 1 {
			if err := p.WritePages(uint64(0x10000*(i+1)), data); err != nil {
				t.Fatal(err)
			}
		} else {
			if _, err := unix.Write(fds[1], data); err != nil {
				t.Fatal(err)
			}
			if err := p.SplicePages(uint64(0x10000*(i+1)), fds[0], len(data)); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, data...)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("stream got %d bytes, want the %d written and spliced", len(b), len(want))
	}
	h := newWriteSum()
	h.Write(want)
	if s := w.sums["pages-1.img"]; s == nil || !bytes.Equal(s.Checksum, h.Sum(nil)) || s.Size != uint64(len(want)) {
		t.Fatalf("recorded sum %v does not cover the pages", s)
	}
}

// crcStream is a sink's stream that checksums what it carries, as a page
// server's does; lie makes its checksum wrong.
type crcStream struct {
	bytes.Buffer
	sum uint32
	lie bool
}

func (s *crcStream) Write(b []byte) (int, error) {
	s.sum = crc32.Update(s.sum, crc32.MakeTable(crc32.Castagnoli), b)
	return s.Buffer.Write(b)
}
func (s *crcStream) Close() error { return nil }
func (s *crcStream) CRC32C() uint32 {
	if s.lie {
		return s.sum ^ 1
	}
	return s.sum
}

// TestPagesStreamChecksum: a sink's stream that checksums what it carries
// gives the pages file's recorded checksum (the writer skips its own pass),
// and that checksum is the one the writer would have computed.
func TestPagesStreamChecksum(t *testing.T) {
	for _, lie := range []bool{false, true} {
		w, err := Create(filepath.Join(t.TempDir(), "img"))
		if err != nil {
			t.Fatal(err)
		}
		s := &crcStream{lie: lie}
		w.SetPagesSink(func(string) (io.WriteCloser, error) { return s, nil })
		p, err := w.CreatePages("1")
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		for i, n := range []int{1, 40, 3} { // small (buffered) and large runs
			data := pageData(n, byte(i))
			if err := p.WritePages(uint64(0x100000*(i+1)), data); err != nil {
				t.Fatal(err)
			}
			want = append(want, data...)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		h := newWriteSum()
		h.Write(want)
		s0 := w.sums["pages-1.img"]
		if !bytes.Equal(s.Bytes(), want) || s0 == nil || bytes.Equal(s0.Checksum, h.Sum(nil)) == lie {
			t.Fatalf("lie %v: recorded sum %v, computed %x", lie, s0, h.Sum(nil))
		}
		w.Abort()
	}
}
