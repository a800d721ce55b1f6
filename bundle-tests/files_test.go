package bundletests

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildStatic compiles testdata/<name>.c statically into the rootfs's
// /bin/<name>.
func (b *bundle) buildStatic(name string, flags ...string) {
	b.t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		b.t.Fatalf("gcc is needed: %v", err)
	}
	src, _ := filepath.Abs(filepath.Join("testdata", name+".c"))
	args := append([]string{"-static", "-O1", "-o", filepath.Join(b.dir, "rootfs", "bin", name), src}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		b.t.Fatalf("gcc -static %s: %v\n%s", name, err, out)
	}
}

// waitFile waits until the rootfs has path.
func (b *bundle) waitFile(path string) {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(b.dir, "rootfs", path)); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("container %s: no %s after 10s", b.id, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// askUnixsk connects to testdata/unixsk's listener from outside, through
// the socket file on the bundle's rootfs, and returns its answer to
// "check n".
func (b *bundle) askUnixsk(n int) (string, error) {
	c, err := net.DialTimeout("unix", filepath.Join(b.dir, "rootfs", "run", "app.sock"), 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("connect from outside: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "check %d\n", n); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	return strings.TrimSpace(string(out)), err
}

// TestRestore_UnixSocketPath: the container's init (testdata/unixsk.c)
// listens on /run/app.sock, a path inside the container, holds a
// connection to it and a dgram socket bound at /run/app.dgram with a
// datagram queued by a sender connected to it by path, and a dgram socket
// bound at /run/gone.sock, unlinked since. After each of two
// checkpoint/restore cycles, the names are the container's paths again
// (getsockname/getpeername inside), the kept connection passes data both
// ways, the queued datagram is there, the unlinked name is the socket's
// and its path is still gone, new connections to the path work
// from inside and from outside (through the bundle's rootfs: the socket
// file is the restored listener's), and no socket file was made in
// ctr-cr's own root.
func TestRestore_UnixSocketPath(t *testing.T) {
	for _, p := range []string{"/run/app.sock", "/run/app.dgram", "/run/gone.sock"} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists on the host: the test would not see a socket file made there", p)
		}
	}
	b := newBundle(t, "runc", "exec /bin/unixsk")
	b.buildStatic("unixsk")
	b.start()
	b.waitFile("tmp/ready")
	n := 1
	if out, err := b.askUnixsk(n); err != nil || out != "OK" {
		t.Fatalf("before the checkpoint: %v: %s", err, out)
	}
	for cycle := 0; cycle < 2; cycle++ {
		os.RemoveAll(filepath.Join(b.dir, "checkpoint"))
		if out, err := ctrcr(t, "checkpoint", b.id); err != nil {
			t.Fatalf("cycle %d: checkpoint: %v\n%s", cycle, err, out)
		}
		if out, err := ctrcr(t, "restore", "-d", b.dir); err != nil {
			t.Fatalf("cycle %d: restore: %v\n%s", cycle, err, out)
		}
		n++
		if out, err := b.askUnixsk(n); err != nil || out != "OK" {
			t.Fatalf("cycle %d: in the restored container: %v: %s", cycle, err, out)
		}
		for _, p := range []string{"/run/app.sock", "/run/app.dgram", "/run/gone.sock"} {
			if _, err := os.Lstat(p); err == nil {
				os.Remove(p)
				t.Fatalf("cycle %d: the restore made %s in ctr-cr's own root", cycle, p)
			}
		}
	}
}
