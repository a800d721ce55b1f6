package pageserver

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	b = binary.LittleEndian.AppendUint32(b, crc)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(chunk)))
	c.Write(b)
	return c
}

// fileConn opens a connection and sends a file request for name, and
// chunk with its right CRC unless end (then an end chunk follows).
func fileConn(t *testing.T, addr, name string, chunk []byte, endCRC uint32, end bool) net.Conn {
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
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(chunk, castagnoli))
	b = append(b, chunk...)
	if end {
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, endCRC)
		b = binary.LittleEndian.AppendUint64(b, uint64(len(chunk)))
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSenderDropsMidFile: a file whose connection ends before its end
// chunk fails the session; the part received is not kept.
func TestSenderDropsMidFile(t *testing.T) {
	dir := t.TempDir()
	addr, done := listen(t, dir)
	cl, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Abort()
	c := fileConn(t, addr, "pages-1.img", bytes.Repeat([]byte{7}, 8192), 0, false)
	c.Close()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "connection dropped after 8192 bytes") {
		t.Fatalf("server: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pages-1.img")); err == nil {
		t.Fatal("partial file kept")
	}
}

// TestEndChecksumMismatch: every chunk checks, but the sender's checksum
// of the whole file differs from the receiver's: refused, not kept.
func TestEndChecksumMismatch(t *testing.T) {
	dir := t.TempDir()
	addr, done := listen(t, dir)
	cl, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Abort()
	chunk := bytes.Repeat([]byte{7}, 4096)
	c := fileConn(t, addr, "pages-1.img", chunk, crc32.Checksum(chunk, castagnoli)^1, true)
	defer c.Close()
	if err := readStatus(c); err == nil || !strings.Contains(err.Error(), "the sender sent 4096") {
		t.Fatalf("file: %v", err)
	}
	if err := <-done; err == nil {
		t.Fatal("server: no error")
	}
	if _, err := os.Stat(filepath.Join(dir, "pages-1.img")); err == nil {
		t.Fatal("file kept")
	}
}

// stallingServer takes a session and file connections and reads nothing
// of the files (dropAfter < 0) or drops each after dropAfter bytes.
func stallingServer(t *testing.T, dropAfter int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func() {
				op, err := readHello(c)
				if err != nil {
					return
				}
				if op == opSession {
					writeStatus(c, nil)
					return
				}
				if dropAfter >= 0 {
					io.ReadFull(c, make([]byte, dropAfter))
					c.Close()
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestCloseWhileWriting: a stream closed while a write blocks (the image
// writer's Abort) fails that write and the client, never ending the file.
func TestCloseWhileWriting(t *testing.T) {
	cl, err := Dial(stallingServer(t, -1))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Abort()
	f, err := cl.Create("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := f.Write(make([]byte, 256<<20)) // more than the socket buffers
		wrote <- err
	}()
	for s := f.(*stream); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		busy := s.writing
		s.mu.Unlock()
		if busy {
			break
		}
	}
	time.Sleep(100 * time.Millisecond) // blocked by now: nothing is read
	if err := f.Close(); err == nil || !strings.Contains(err.Error(), "closed while being written") {
		t.Fatalf("close: %v", err)
	}
	if err := <-wrote; err == nil {
		t.Fatal("the write went on")
	}
	if err := cl.Wait(); err == nil {
		t.Fatal("client: no error")
	}
}

// TestServerDropsMidFile: the server's side of a file dropping fails the
// client (the write or the confirmation), never a silent success.
func TestServerDropsMidFile(t *testing.T) {
	cl, err := Dial(stallingServer(t, 4096))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Abort()
	f, err := cl.Create("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 16<<20))
	f.Close()
	if err := cl.Wait(); err == nil {
		t.Fatal("client: no error")
	}
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
