package unixsk

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// wantUnsupported checks that Dump of fd fails with *UnsupportedError
// whose reason contains substr.
func wantUnsupported(t *testing.T, fd int, substr string) {
	t.Helper()
	s, err := Dump(fd, inoOf(t, fd), nil)
	var ue *UnsupportedError
	if !errors.As(err, &ue) {
		t.Fatalf("Dump = %v, %v; want *UnsupportedError", s, err)
	}
	if ue.Ino != inoOf(t, fd) || !strings.Contains(ue.Reason, substr) {
		t.Fatalf("Dump error %q (ino %d), want reason containing %q", err, ue.Ino, substr)
	}
	t.Logf("refused: %v", err)
	if v := getopt(t, fd, unix.SO_PEEK_OFF); v != -1 {
		t.Errorf("SO_PEEK_OFF left at %d", v)
	}
}

func TestRefuseFdPassing(t *testing.T) {
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		t.Run(fmt.Sprint(typ), func(t *testing.T) {
			a, b := socketpair(t, typ)
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(p[0])
			defer unix.Close(p[1])
			send(t, a, [][]byte{[]byte("before")})
			if err := unix.Sendmsg(a, []byte("fds"), unix.UnixRights(p[0], p[1]), nil, 0); err != nil {
				t.Fatal(err)
			}
			before := openFds(t)
			wantUnsupported(t, b, "fd passing in flight")
			if after := openFds(t); after != before {
				t.Errorf("fds leaked by Dump: %d -> %d", before, after)
			}
			// The queue is intact: both messages, and the fds still arrive.
			buf := make([]byte, 64)
			oob := make([]byte, unix.CmsgSpace(8))
			if typ == unix.SOCK_STREAM {
				// Stream reads stop at the skb that carries fds.
				n, _ := unix.Read(b, buf[:6])
				if string(buf[:n]) != "before" {
					t.Fatalf("read %q", buf[:n])
				}
			} else if n, _ := unix.Read(b, buf); string(buf[:n]) != "before" {
				t.Fatalf("read %q", buf[:n])
			}
			n, oobn, _, _, err := unix.Recvmsg(b, buf, oob, unix.MSG_CMSG_CLOEXEC)
			if err != nil || string(buf[:n]) != "fds" {
				t.Fatalf("recv %q %v", buf[:n], err)
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			if len(msgs) != 1 {
				t.Fatalf("control messages: %d", len(msgs))
			}
			fds, _ := unix.ParseUnixRights(&msgs[0])
			for _, fd := range fds {
				unix.Close(fd)
			}
			if len(fds) != 2 {
				t.Fatalf("received %d fds", len(fds))
			}
		})
	}
}

// TestCredentialsKept: credentials attached to queued data (SO_PASSCRED on
// the receiver at send time, or sent explicitly) are dumped with the data
// and sent again with it by Pair, for dgram and stream.
func TestCredentialsKept(t *testing.T) {
	me := unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_STREAM} {
		a, b := socketpair(t, typ)
		setopt(t, b, unix.SO_PASSCRED, 1)
		if err := unix.Sendmsg(a, []byte("hi"), unix.UnixCredentials(&me), nil, 0); err != nil {
			t.Fatal(err)
		}
		da, err := Dump(a, inoOf(t, a), nil)
		if err != nil {
			t.Fatal(err)
		}
		db, err := Dump(b, inoOf(t, b), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(db.Creds) != 1 || db.Creds[0].Pid != me.Pid {
			t.Fatalf("type %d: dumped creds %v, want pid %d", typ, db.Creds, me.Pid)
		}
		fa, fb, err := Pair(da, db)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fa)
		defer unix.Close(fb)
		buf := make([]byte, 16)
		oob := make([]byte, unix.CmsgSpace(12))
		n, oobn, _, _, err := unix.Recvmsg(fb, buf, oob, unix.MSG_DONTWAIT)
		if err != nil || string(buf[:n]) != "hi" {
			t.Fatalf("type %d: recv %q %v", typ, buf[:n], err)
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		if len(msgs) != 1 {
			t.Fatalf("type %d: %d control messages", typ, len(msgs))
		}
		c, err := unix.ParseUnixCredentials(&msgs[0])
		if err != nil || *c != me {
			t.Fatalf("type %d: restored credentials %+v (%v), want %+v", typ, c, err, me)
		}
	}
}

func TestRefuseShapes(t *testing.T) {
	// A name relative to the binder's cwd that no longer leads to its file
	// from the cwd (here: the cwd changed since): where it is is unknown.
	dir := t.TempDir()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	r, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(r)
	err = unix.Bind(r, &unix.SockaddrUnix{Name: "rel.sock"})
	if cerr := os.Chdir(wd); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	wantUnsupported(t, r, "relative path")

	// A task using SO_PEEK_OFF itself: its offset is left as it was.
	x, _ := socketpair(t, unix.SOCK_DGRAM)
	setopt(t, x, unix.SO_PEEK_OFF, 3)
	if _, err := Dump(x, inoOf(t, x), nil); err == nil {
		t.Fatal("Dump accepted a socket with SO_PEEK_OFF in use")
	}
	if v := getopt(t, x, unix.SO_PEEK_OFF); v != 3 {
		t.Errorf("SO_PEEK_OFF changed to %d", v)
	}

	// Wrong inode.
	y, z := socketpair(t, unix.SOCK_STREAM)
	if _, err := Dump(y, inoOf(t, z), nil); err == nil {
		t.Fatal("Dump accepted a wrong inode")
	}
}

func TestRefuseOOB(t *testing.T) {
	a, b := socketpair(t, unix.SOCK_STREAM)
	send(t, a, [][]byte{[]byte("data")})
	if err := unix.Sendmsg(a, []byte("!"), nil, nil, unix.MSG_OOB); err != nil {
		t.Skipf("MSG_OOB not supported: %v", err)
	}
	wantUnsupported(t, b, "MSG_OOB")
}

// TestDgramPeekedEmptyHead: a task that peeked an empty datagram at the
// head (plain MSG_PEEK, as recv(MSG_PEEK|MSG_TRUNC) size probes do) marks
// it, and the kernel's peek-offset walk then skips it; Dump still sees it.
func TestDgramPeekedEmptyHead(t *testing.T) {
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		a, b := socketpair(t, typ)
		q := [][]byte{{}, []byte("one"), {}, []byte("two")}
		send(t, a, q)
		buf := make([]byte, 8)
		if n, _, _, _, err := unix.Recvmsg(b, buf, nil, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT); err != nil || n != 0 {
			t.Fatalf("task peek: %d %v", n, err)
		}
		s, err := Dump(b, inoOf(t, b), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !equalQueues(s.Queue, q) {
			t.Fatalf("type %d: queue %s, want %s", typ, describe(s.Queue), describe(q))
		}
		drain(t, b, typ, q)
	}
}
