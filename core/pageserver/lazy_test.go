package pageserver

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLazyPages(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: several requests
	if err := os.WriteFile(filepath.Join(dir, "pages-7.img"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServePages(l, dir) }()
	ps, err := NewPageSource(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	f, err := ps.Open("pages-7.img")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(data)-100)
	if n, err := f.ReadAt(b, 100); err != nil || n != len(b) || !bytes.Equal(b, data[100:]) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	// beyond the end: an error, and the reader is done for
	if _, err := f.ReadAt(make([]byte, 10), int64(len(data))-5); err == nil {
		t.Fatal("read beyond the end succeeded")
	}
	if _, err := f.ReadAt(make([]byte, 10), 0); err == nil {
		t.Fatal("a failed reader read again")
	}
	f.Close()
	bad, err := ps.Open("../etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.ReadAt(make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "not a pages file name") {
		t.Fatalf("a name outside the pages files: %v", err)
	}
	bad.Close()
	if err := ps.Finish(true); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end")
	}
}
