package threadns

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// TestEnterRoot: a process in a mount namespace of its own has a tmpfs
// with a marker file over an empty directory of ours; functions run by
// EnterRoot of that process see the marker, bind a unix socket there by
// its path, and the calling thread's view is unchanged. After Close, Do
// fails and a second Close is harmless.
func TestEnterRoot(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none "$0" && touch "$0/marker" && echo ready && exec sleep 60`, dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	buf := make([]byte, 16)
	if n, err := out.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "ready") {
		t.Fatalf("the child did not mount its tmpfs: %v %q", err, buf[:n])
	}
	marker := filepath.Join(dir, "marker")
	r, err := EnterRoot(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Do(func() error { _, err := os.Stat(marker); return err }); err != nil {
		t.Errorf("in its mount namespace: %v", err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sock := filepath.Join(dir, "s.sock")
	if err := r.Do(func() error { return unix.Bind(fd, &unix.SockaddrUnix{Name: sock}) }); err != nil {
		t.Fatalf("bind in its mount namespace: %v", err)
	}
	if err := r.Do(func() error { _, err := os.Stat(sock); return err }); err != nil {
		t.Errorf("the socket file is not in its tmpfs: %v", err)
	}
	for _, p := range []string{marker, sock} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s is visible in our own mount namespace", p)
		}
	}
	r.Close()
	r.Close()
	done := make(chan error, 1)
	go func() { done <- r.Do(func() error { return nil }) }()
	select {
	case err := <-done:
		if !errors.Is(err, errClosed) {
			t.Errorf("Do after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Do after Close hangs")
	}
}

// BenchmarkEnterRoot: what a restore with unix sockets pays for their
// path names: a thread entering a root (here our own process's), one Do,
// Close.
func BenchmarkEnterRoot(b *testing.B) {
	testutil.RequiresRoot(b)
	for i := 0; i < b.N; i++ {
		r, err := EnterRoot(os.Getpid())
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
