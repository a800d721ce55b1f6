package pageserver

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func listen(t *testing.T, dir string) (string, chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(l, dir) }()
	return l.Addr().String(), done
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	addr, done := listen(t, dir)
	cl, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{
		"pages-1.img":       bytes.Repeat([]byte{1, 2, 3, 4}, 3<<20), // several chunks
		"pages-shmem-7.img": bytes.Repeat([]byte{9}, 4096),
		"pages-2.img":       nil,
	}
	for name, data := range want {
		f, err := cl.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if err := cl.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
}

// raw opens a connection and sends a file request with the given chunks.
func rawFile(t *testing.T, addr, name string, chunk []byte, crc uint32) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeHello(c, opFile); err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.AppendUint16(nil, uint16(len(name)))
	b = append(b, name...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(chunk)))
	b = binary.LittleEndian.AppendUint32(b, crc)
	b = append(b, chunk...)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(chunk)))
	c.Write(b)
	return c
}

func TestDamagedChunk(t *testing.T) {
	dir := t.TempDir()
	addr, done := listen(t, dir)
	cl, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Abort()
	c := rawFile(t, addr, "pages-1.img", make([]byte, 4096), 12345) // wrong CRC
	defer c.Close()
	if err := readStatus(c); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged chunk: %v", err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("server: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pages-1.img")); err == nil {
		t.Fatal("damaged file kept")
	}
}

func TestBadName(t *testing.T) {
	addr, done := listen(t, t.TempDir())
	cl, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Abort()
	c := rawFile(t, addr, "../core-1.img", nil, 0)
	defer c.Close()
	if err := readStatus(c); err == nil || !strings.Contains(err.Error(), "not the name of a pages file") {
		t.Fatalf("bad name: %v", err)
	}
	<-done
}

// TestMigrationRoundsBackToBack: the next round's session and files come
// right after the previous round's end was confirmed, as `migrate` sends
// them; every round must land whole in its own directory (a connection
// accepted while a round was ending once went to that round).
func TestMigrationRoundsBackToBack(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- ServeMigration(l, dir, func(string) (string, error) { return "restored", nil })
	}()
	const rounds = 60
	for k := 1; k <= rounds; k++ {
		cl, err := Dial(l.Addr().String())
		if err != nil {
			t.Fatalf("round %d: %v", k, err)
		}
		f, err := cl.Create("pages-1.img")
		if err != nil {
			t.Fatalf("round %d: %v", k, err)
		}
		f.Write(bytes.Repeat([]byte{byte(k)}, 4096))
		f.Close()
		if k < rounds {
			err = cl.Finish()
		} else {
			_, err = cl.FinishRestore()
		}
		if err != nil {
			t.Fatalf("round %d: %v", k, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("receiver: %v", err)
	}
	for k := 1; k <= rounds; k++ {
		got, err := os.ReadFile(filepath.Join(dir, RoundName(k), "pages-1.img"))
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(k)}, 4096)) {
			t.Fatalf("round %d: %d bytes, %v", k, len(got), err)
		}
	}
}
