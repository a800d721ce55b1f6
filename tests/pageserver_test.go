package tests

// The page server (issue 16): pages files of dump|pre-dump --page-server
// go over TCP into the destination's directory.

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// pageServer is a running `ctr-cr page-server` on 127.0.0.1.
// pageServer is a `ctr-cr page-server` the test started.
type pageServer struct{ *testutil.Listener }

// startPageServer starts `ctr-cr page-server` receiving into dir on
// 127.0.0.1.
func startPageServer(t *testing.T, dir string) *pageServer {
	t.Helper()
	return &pageServer{testutil.StartListening(t, testutil.BuildCtrCr(t), "page-server", "--address", "127.0.0.1", "--port", "0", "-D", dir)}
}

// wait waits for the server to exit (at most 20 s) and returns its error.
func (ps *pageServer) wait(t *testing.T) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- ps.Cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		ps.Cmd.Process.Kill()
		t.Fatalf("page-server did not exit")
		return nil
	}
}

// TestCR_PageServerChain: the p_premig case after its second step (its own
// userfaultfd closed) goes through pre-dump, pre-dump --parent-path and
// dump --parent-path, each with --page-server: the pages land in the
// destination, the rest of each image is copied there after, and the case
// is restored from the destination's tip (twice) and checks its memory.
func TestCR_PageServerChain(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, Case{Name: "p_premig", Src: "p_premig.c"})
	step := 0
	for ; step < 2; step++ {
		premigStep(t, r, step+1)
	}
	pid := strconv.Itoa(r.Pid)
	for cycle := 0; cycle < 2; cycle++ {
		tids, err := listTids(r.Pid)
		if err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(r.imgBase, "src", strconv.Itoa(cycle))
		dst := filepath.Join(r.imgBase, "dst", strconv.Itoa(cycle))
		rounds := []struct{ dir, cmd, parent string }{{"r1", "pre-dump", ""}, {"r2", "pre-dump", "../r1"}, {"r3", "dump", "../r2"}}
		for i, rd := range rounds {
			ps := startPageServer(t, filepath.Join(dst, rd.dir))
			args := []string{rd.cmd, "-t", pid, "-D", filepath.Join(src, rd.dir), "--page-server", ps.Addr}
			if rd.parent != "" {
				args = append(args, "--parent-path", rd.parent)
			}
			if _, stderr, err := ctrcr(t, args...); err != nil {
				r.fatalf(stderr, "cycle %d: %s: %v", cycle, rd.cmd, err)
			}
			if err := ps.wait(t); err != nil {
				t.Fatalf("cycle %d: page-server: %v\n%s", cycle, err, ps.Stderr())
			}
			if m, _ := filepath.Glob(filepath.Join(src, rd.dir, "pages-*.img")); len(m) != 0 {
				t.Fatalf("pages written locally too: %v", m)
			}
			if i < 2 {
				step++
				premigStep(t, r, step)
			}
		}
		if err := waitGone(r.Pid, goneTimeout); err != nil {
			t.Fatal(err)
		}
		for _, rd := range rounds {
			// the rest of each image goes to the destination by any means
			files, _ := filepath.Glob(filepath.Join(src, rd.dir, "*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err == nil {
					err = os.WriteFile(filepath.Join(dst, rd.dir, filepath.Base(f)), b, 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		tip := filepath.Join(dst, "r3")
		if cycle == 0 {
			if _, stderr, err := ctrcr(t, "restore", "-D", tip, "-d"); err != nil {
				r.fatalf(stderr, "restore -d: %v", err)
			}
			if err := waitBack(r.Pid, tids, backTimeout, nil); err != nil {
				r.fatalf("", "after restore -d: %v", err)
			}
			continue
		}
		r.startForeground(tip)
		if err := waitFile(r.fgPidFile, backTimeout, r.fgDone); err != nil {
			r.fatalf(r.fgStderrText(), "restore did not complete: %v", err)
		}
	}
	r.finishForeground()
}

// TestNegative_PageServerDrop: a page server whose connection drops in the
// middle of a pages file fails the dump (the case runs on unchanged) and a
// pre-dump round (whose tracking then ends: a retry copies everything),
// and a page server whose client drops exits with an error and keeps no
// file.
func TestNegative_PageServerDrop(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, Case{Name: "b_brk", Src: "b_brk.c"})
	// a server that takes the session, then drops a file half-way
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				hello := make([]byte, 9)
				if _, err := c.Read(hello); err != nil {
					c.Close()
					return
				}
				if hello[8] == 'S' {
					c.Write([]byte{0})
					buf := make([]byte, 1)
					c.Read(buf) // held until the dump ends it
					c.Close()
					return
				}
				buf := make([]byte, 4096)
				c.Read(buf)
				c.Close() // the drop
			}()
		}
	}()
	// a pre-dump round that fails after re-arming the tracking ends it:
	// a retry from the same parent must copy everything, not trust it
	base := t.TempDir()
	pid := strconv.Itoa(r.Pid)
	if _, stderr, err := ctrcr(t, "pre-dump", "-t", pid, "-D", filepath.Join(base, "r1")); err != nil {
		t.Fatalf("pre-dump: %v\n%s", err, stderr)
	}
	if _, stderr, err := ctrcr(t, "pre-dump", "-t", pid, "-D", filepath.Join(base, "r2"), "--parent-path", "../r1", "--page-server", l.Addr().String()); err == nil {
		t.Fatalf("pre-dump to a dropping page server succeeded:\n%s", stderr)
	}
	_, stderr, err := ctrcr(t, "pre-dump", "-t", pid, "-D", filepath.Join(base, "r2"), "--parent-path", "../r1")
	if err != nil || !strings.Contains(stderr, "tracking of parent image") || !strings.Contains(stderr, "every page is copied") {
		t.Fatalf("pre-dump again after a failed round: err %v, want the tracking lost, stderr:\n%s", err, stderr)
	}
	img := filepath.Join(t.TempDir(), "img")
	_, stderr, err = ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--page-server", l.Addr().String())
	if err == nil || !strings.Contains(stderr, "page server") {
		t.Fatalf("dump to a dropping page server: err %v, stderr:\n%s", err, stderr)
	}
	if err := unix.Kill(r.Pid, 0); err != nil || procState(r.Pid) == "t" {
		t.Fatalf("case not running on after the failed dump: %v %q", err, procState(r.Pid))
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Fatalf("an image was left after the failed dump")
	}
	requireRunningUntraced(t, r.Pid)

	// the server side: a client that drops in the middle of a file
	dir := filepath.Join(t.TempDir(), "dst")
	ps := startPageServer(t, dir)
	sess, err := net.Dial("tcp", ps.Addr)
	if err != nil {
		t.Fatal(err)
	}
	hello := func(op byte) []byte {
		b := []byte("CRPS\x02\x00\x00\x00") // protocol version 2
		return append(b, op)
	}
	sess.Write(hello('S'))
	st := make([]byte, 1)
	if _, err := sess.Read(st); err != nil || st[0] != 0 {
		t.Fatalf("session: %v %v", st, err)
	}
	f, err := net.Dial("tcp", ps.Addr)
	if err != nil {
		t.Fatal(err)
	}
	name := "pages-42.img"
	msg := hello('F')
	msg = binary.LittleEndian.AppendUint16(msg, uint16(len(name)))
	msg = append(msg, name...)
	msg = binary.LittleEndian.AppendUint32(msg, 8192)
	msg = binary.LittleEndian.AppendUint32(msg, 0)
	msg = append(msg, make([]byte, 4096)...) // half of the chunk
	f.Write(msg)
	time.Sleep(100 * time.Millisecond)
	f.Close()
	sess.Close()
	err = ps.wait(t)
	if err == nil || !strings.Contains(ps.Stderr(), "dropped") {
		t.Fatalf("page-server after a dropped client: err %v, stderr:\n%s", err, ps.Stderr())
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
		t.Fatalf("%s kept after the failed session", name)
	}
}
