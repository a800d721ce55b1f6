package unixsk

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// observe consumes what a program would see on fd, in order: its own and
// its peer's name, poll revents, every read until EOF/EAGAIN/an error
// (twice past the end), a send without SIGPIPE (three for dgram), SO_ERROR.
func observe(fd, typ int) string {
	var b strings.Builder
	pn, err := peerName(fd)
	fmt.Fprintf(&b, "peer %q %v;", pn, err)
	sa, err := unix.Getsockname(fd)
	if u, ok := sa.(*unix.SockaddrUnix); ok {
		fmt.Fprintf(&b, " name %q;", u.Name)
	} else {
		fmt.Fprintf(&b, " name %v;", err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT | unix.POLLRDHUP | unix.POLLPRI}}
	unix.Poll(pfd, 0)
	fmt.Fprintf(&b, " revents %#x;", pfd[0].Revents)
	buf := make([]byte, 4096)
	for i := 0; i < 6; i++ {
		n, _, _, from, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT)
		f := ""
		if u, ok := from.(*unix.SockaddrUnix); ok {
			f = u.Name
		}
		fmt.Fprintf(&b, " read %d %q from %q %v;", n, buf[:max(n, 0)], f, err)
	}
	for i := 0; i < 1+2*boolInt(typ == unix.SOCK_DGRAM); i++ {
		_, err := unix.SendmsgN(fd, []byte("w"), nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		fmt.Fprintf(&b, " send %v;", err)
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	fmt.Fprintf(&b, " SO_ERROR %d %v", v, err)
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dumpAll dumps fds (one diag snapshot), checks the image of the first.
func dumpAll(t *testing.T, fds ...int) []*imagepb.UnixSocket {
	t.Helper()
	d, err := ReadDiag()
	if err != nil {
		t.Fatal(err)
	}
	var out []*imagepb.UnixSocket
	for _, fd := range fds {
		s, err := DumpWith(fd, inoOf(t, fd), d, Options{})
		if err != nil {
			t.Fatalf("Dump: %v", err)
		}
		out = append(out, s)
	}
	return out
}

// TestPeerGone: sockets whose peer was closed, of every type, with and
// without data queued from the peer, with data the peer left unread
// (ECONNRESET pending), with an unbound or named peer, accepted from a
// listener or connecting to one: dumped, rebuilt, and then read, written
// and polled like the originals, with the same answers.
func TestPeerGone(t *testing.T) {
	pid := os.Getpid()
	type variant struct {
		name  string
		typ   int
		setup func(t *testing.T) (s int, others []int) // s: the socket checked; others: also in the image
		gone  bool
		reset bool
	}
	pair := func(typ int, data []string, unread bool) func(t *testing.T) (int, []int) {
		return func(t *testing.T) (int, []int) {
			a, p := socketpair(t, typ)
			for _, m := range data {
				send(t, p, [][]byte{[]byte(m)})
			}
			if unread {
				send(t, a, [][]byte{[]byte("unread")})
			}
			unix.Close(p)
			return a, nil
		}
	}
	// a listener; client and accepted end; then one end closed
	listen := func(typ int, closeServer bool, peerBound string) func(t *testing.T) (int, []int) {
		return func(t *testing.T) (int, []int) {
			name := fmt.Sprintf("@ctr-cr-gone-l-%d-%d-%v", pid, typ, closeServer)
			l := mustSocket(t, typ)
			if err := unix.Bind(l, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			unix.Listen(l, 4)
			c := mustSocket(t, typ)
			if peerBound != "" {
				if err := unix.Bind(c, sockaddr(peerBound)); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Connect(c, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			if closeServer {
				send(t, a, [][]byte{[]byte("bye"), []byte("now")})
				unix.Close(a)
				return c, []int{l}
			}
			send(t, c, [][]byte{[]byte("quit")})
			unix.Close(c)
			return a, []int{l}
		}
	}
	var vs []variant
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_SEQPACKET} {
		vs = append(vs,
			variant{"empty", typ, pair(typ, nil, false), true, false},
			variant{"data", typ, pair(typ, []string{"one", "", "three"}, false), true, false},
			variant{"client-of-listener", typ, listen(typ, true, ""), true, false},
			variant{"accepted", typ, listen(typ, false, ""), true, false},
			variant{"accepted-bound-peer", typ, listen(typ, false, fmt.Sprintf("@ctr-cr-gone-c-%d-%d", pid, typ)), true, false},
		)
	}
	vs = append(vs,
		variant{"unread", unix.SOCK_STREAM, pair(unix.SOCK_STREAM, []string{"x"}, true), true, true},
		variant{"unread-empty", unix.SOCK_STREAM, pair(unix.SOCK_STREAM, nil, true), true, true},
		variant{"dgram-pair", unix.SOCK_DGRAM, pair(unix.SOCK_DGRAM, []string{"d1", ""}, false), true, false},
		variant{"client-of-outside-listener", unix.SOCK_STREAM, func(t *testing.T) (int, []int) {
			// the listener (a path, still live) is not in the image
			name := t.TempDir() + "/outside.sock"
			l := mustSocket(t, unix.SOCK_STREAM)
			t.Cleanup(func() { unix.Close(l) })
			if err := unix.Bind(l, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			unix.Listen(l, 4)
			c := mustSocket(t, unix.SOCK_STREAM)
			if err := unix.Connect(c, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			send(t, a, [][]byte{[]byte("closing")})
			unix.Close(a)
			return c, nil
		}, true, false},
		variant{"accepted-from-outside-listener", unix.SOCK_STREAM, func(t *testing.T) (int, []int) {
			// the listener (a path, still live at restore) is not in the
			// image: the accepted end must not take its place
			name := t.TempDir() + "/outside.sock"
			l := mustSocket(t, unix.SOCK_STREAM)
			if err := unix.Bind(l, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			unix.Listen(l, 4)
			var before unix.Stat_t
			unix.Stat(name, &before)
			t.Cleanup(func() {
				var after unix.Stat_t
				if err := unix.Stat(name, &after); err != nil || after.Ino != before.Ino {
					t.Errorf("the listener's file %s changed: %v", name, err)
				}
				c := mustSocket(t, unix.SOCK_STREAM)
				if err := unix.Connect(c, sockaddr(name)); err != nil {
					t.Errorf("the outside listener is no longer reachable: %v", err)
				}
				unix.Close(c)
				unix.Close(l)
			})
			c := mustSocket(t, unix.SOCK_STREAM)
			if err := unix.Connect(c, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			send(t, c, [][]byte{[]byte("last words")})
			unix.Close(c)
			return a, nil
		}, true, false},
		variant{"dgram-path", unix.SOCK_DGRAM, func(t *testing.T) (int, []int) {
			// the dead peer's socket file stays on disk: restore must not
			// touch it (the transient peer is bound away from it)
			name := t.TempDir() + "/srv.sock"
			srv := mustSocket(t, unix.SOCK_DGRAM)
			if err := unix.Bind(srv, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			var before unix.Stat_t
			unix.Stat(name, &before)
			a := mustSocket(t, unix.SOCK_DGRAM)
			an := fmt.Sprintf("@ctr-cr-gone-dgp-%d", pid)
			if err := unix.Bind(a, sockaddr(an)); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(a, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			if err := unix.Sendto(srv, []byte("from-srv"), 0, sockaddr(an)); err != nil {
				t.Fatal(err)
			}
			unix.Close(srv)
			t.Cleanup(func() {
				var after unix.Stat_t
				if err := unix.Stat(name, &after); err != nil || after.Ino != before.Ino {
					t.Errorf("the dead peer's file %s changed: %v (inode %d, was %d)", name, err, after.Ino, before.Ino)
				}
			})
			return a, nil
		}, true, false},
		variant{"dgram-named", unix.SOCK_DGRAM, func(t *testing.T) (int, []int) {
			name := fmt.Sprintf("@ctr-cr-gone-dg-%d", pid)
			srv := mustSocket(t, unix.SOCK_DGRAM)
			if err := unix.Bind(srv, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			a := mustSocket(t, unix.SOCK_DGRAM)
			if err := unix.Connect(a, sockaddr(name)); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(srv, sockaddr(fmt.Sprintf("@ctr-cr-gone-dgc-%d", pid))); err == nil {
				t.Fatal("connect to nothing worked")
			}
			unix.Close(srv)
			return a, nil
		}, true, false},
	)
	for _, v := range vs {
		t.Run(fmt.Sprintf("%s/%d", v.name, v.typ), func(t *testing.T) {
			s, others := v.setup(t)
			socks := dumpAll(t, append([]int{s}, others...)...)
			if socks[0].PeerGone != v.gone || socks[0].ErrReset != v.reset {
				t.Fatalf("image %v: want peer_gone %v err_reset %v", socks[0], v.gone, v.reset)
			}
			t.Logf("%s", Describe(socks[0]))
			// the originals are observed, then closed: they hold the names
			want := observe(s, v.typ)
			for _, fd := range append([]int{s}, others...) {
				unix.Close(fd)
			}
			fds, err := Build(socks, nil)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			for _, fd := range fds {
				t.Cleanup(func() { unix.Close(fd) })
			}
			got := observe(fds[socks[0].Ino], v.typ)
			if got != want {
				t.Errorf("restored:\n %s\noriginal:\n %s", got, want)
			}
		})
	}
}

// TestPeerGoneRefused: what restore cannot rebuild exactly is refused,
// naming it.
func TestPeerGoneRefused(t *testing.T) {
	// a dgram socket connected to a peer that is gone, holding a datagram
	// from someone else (received before it connected)
	name := fmt.Sprintf("@ctr-cr-gone-ref-%d", os.Getpid())
	srv := mustSocket(t, unix.SOCK_DGRAM)
	if err := unix.Bind(srv, sockaddr(name)); err != nil {
		t.Fatal(err)
	}
	a := mustSocket(t, unix.SOCK_DGRAM)
	defer unix.Close(a)
	if err := unix.Bind(a, sockaddr(name+"-a")); err != nil {
		t.Fatal(err)
	}
	x := mustSocket(t, unix.SOCK_DGRAM)
	defer unix.Close(x)
	if err := unix.Sendto(x, []byte("early"), 0, sockaddr(name+"-a")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(a, sockaddr(name)); err != nil {
		t.Fatal(err)
	}
	unix.Close(srv)
	wantUnsupported(t, a, "from another sender")

	// a pending ECONNRESET on a dgram socket whose peer is alive
	p, q := mustSocket(t, unix.SOCK_DGRAM), mustSocket(t, unix.SOCK_DGRAM)
	defer unix.Close(p)
	defer unix.Close(q)
	for i, fd := range []int{p, q} {
		if err := unix.Bind(fd, sockaddr(fmt.Sprintf("%s-%d", name, i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, fd := range []int{p, q} {
		if err := unix.Connect(fd, sockaddr(fmt.Sprintf("%s-%d", name, 1-i))); err != nil {
			t.Fatal(err)
		}
	}
	send(t, p, [][]byte{[]byte("x")})
	unspec := unix.RawSockaddr{Family: unix.AF_UNSPEC}
	if _, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(q), uintptr(unsafe.Pointer(&unspec)), 2); e != 0 {
		t.Fatalf("disconnect: %v", e)
	}
	pfd := []unix.PollFd{{Fd: int32(p)}}
	unix.Poll(pfd, 0)
	if pfd[0].Revents&unix.POLLERR == 0 {
		t.Skip("could not make a pending ECONNRESET on a dgram socket")
	}
	wantUnsupported(t, p, "pending socket error")

	// a seqpacket socket whose peer was closed with data unread
	a2, z := socketpair(t, unix.SOCK_SEQPACKET)
	send(t, a2, [][]byte{[]byte("unread")})
	unix.Close(z)
	wantUnsupported(t, a2, "pending ECONNRESET")
	if v := getopt(t, a2, unix.SO_ERROR); v != int(unix.ECONNRESET) {
		t.Errorf("SO_ERROR after the refused dump: %d, want ECONNRESET (untouched)", v)
	}
}

// TestRelativeName: a listener bound to a relative path, with a connected
// client, is dumped with the directory it was bound from and rebuilt there:
// the same names, the socket file back at its place, connectable.
func TestRelativeName(t *testing.T) {
	dir := t.TempDir()
	l := mustSocket(t, unix.SOCK_STREAM)
	c := mustSocket(t, unix.SOCK_STREAM)
	err := onCwdThread(dir, func() error {
		if err := unix.Bind(l, sockaddr("rel.sock")); err != nil {
			return err
		}
		if err := unix.Listen(l, 4); err != nil {
			return err
		}
		return unix.Connect(c, sockaddr("rel.sock"))
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ReadDiag()
	if err != nil {
		t.Fatal(err)
	}
	var socks []*imagepb.UnixSocket
	for _, fd := range []int{l, c, a} {
		s, err := DumpWith(fd, inoOf(t, fd), d, Options{Cwd: dir})
		if err != nil {
			t.Fatalf("Dump: %v", err)
		}
		socks = append(socks, s)
	}
	if socks[0].BindDir != dir || socks[0].Name != "rel.sock" {
		t.Fatalf("listener image: name %q bind dir %q, want rel.sock in %s", socks[0].Name, socks[0].BindDir, dir)
	}
	for _, fd := range []int{l, c, a} {
		unix.Close(fd)
	}
	os.Remove(dir + "/rel.sock")
	fds, err := Build(socks, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	nl, nc, na := fds[socks[0].Ino], fds[socks[1].Ino], fds[socks[2].Ino]
	for _, x := range []struct {
		fd         int
		self, peer string
	}{{nl, "rel.sock", "-"}, {nc, "", "rel.sock"}, {na, "rel.sock", ""}} {
		sa, _ := unix.Getsockname(x.fd)
		if u, _ := sa.(*unix.SockaddrUnix); u == nil || u.Name != x.self && !(x.self == "" && u.Name == "@") {
			t.Errorf("fd %d: getsockname %v, want %q", x.fd, sa, x.self)
		}
		if x.peer == "-" {
			continue
		}
		if n, err := peerName(x.fd); err != nil || n != x.peer {
			t.Errorf("fd %d: getpeername %q %v, want %q", x.fd, n, err, x.peer)
		}
	}
	send(t, nc, [][]byte{[]byte("hi")})
	drain(t, na, unix.SOCK_STREAM, [][]byte{[]byte("hi")})
	n := mustSocket(t, unix.SOCK_STREAM)
	defer unix.Close(n)
	if err := unix.Connect(n, sockaddr(dir+"/rel.sock")); err != nil {
		t.Errorf("connect to the rebuilt %s/rel.sock: %v", dir, err)
	}
}

// TestPassOptions: SO_PASSSEC, SO_PASSPIDFD, SO_PASSCRED set and
// SO_PASSRIGHTS cleared read back the same after a rebuild; SO_PASSPIDFD
// with a queued message is refused.
func TestPassOptions(t *testing.T) {
	a, b := socketpair(t, unix.SOCK_STREAM)
	opts := []struct {
		name string
		opt  int
		v    int
	}{{"SO_PASSSEC", unix.SO_PASSSEC, 1}, {"SO_PASSPIDFD", unix.SO_PASSPIDFD, 1}, {"SO_PASSCRED", unix.SO_PASSCRED, 1}, {"SO_PASSRIGHTS", unix.SO_PASSRIGHTS, 0}}
	for _, o := range opts {
		if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, o.opt, o.v); err != nil {
			t.Skipf("setsockopt %s: %v", o.name, err)
		}
	}
	socks := dumpAll(t, a, b)
	fds, err := Build(socks, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, o := range opts {
		if v := getopt(t, fds[socks[0].Ino], o.opt); v != o.v {
			t.Errorf("%s: %d after rebuild, want %d", o.name, v, o.v)
		}
		if v, w := getopt(t, fds[socks[1].Ino], o.opt), getopt(t, b, o.opt); v != w {
			t.Errorf("%s on the other end: %d after rebuild, was %d", o.name, v, w)
		}
	}

	x, y := socketpair(t, unix.SOCK_DGRAM)
	setopt(t, x, unix.SO_PASSPIDFD, 1)
	send(t, y, [][]byte{[]byte("m")})
	wantUnsupported(t, x, "SO_PASSPIDFD")
}

// TestAcceptedFromOutside: a connection accepted from a listener outside
// the image (a path, live at restore), both ends in the image: rebuilt
// with socketpair, the accepted end keeps the listener's name (and the
// client sees it as its peer's) without taking the listener's file.
func TestAcceptedFromOutside(t *testing.T) {
	name := t.TempDir() + "/outside.sock"
	l := mustSocket(t, unix.SOCK_STREAM)
	defer unix.Close(l)
	if err := unix.Bind(l, sockaddr(name)); err != nil {
		t.Fatal(err)
	}
	unix.Listen(l, 4)
	var before unix.Stat_t
	unix.Stat(name, &before)
	c := mustSocket(t, unix.SOCK_STREAM)
	if err := unix.Connect(c, sockaddr(name)); err != nil {
		t.Fatal(err)
	}
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	socks := dumpAll(t, c, a)
	unix.Close(c)
	unix.Close(a)
	fds, err := Build(socks, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	nc, na := fds[socks[0].Ino], fds[socks[1].Ino]
	if sa, _ := unix.Getsockname(na); sa.(*unix.SockaddrUnix).Name != name {
		t.Errorf("accepted end: getsockname %v, want %s", sa, name)
	}
	if n, err := peerName(nc); n != name {
		t.Errorf("client: getpeername %q %v, want %s", n, err, name)
	}
	var after unix.Stat_t
	if err := unix.Stat(name, &after); err != nil || after.Ino != before.Ino {
		t.Errorf("the listener's file changed: %v", err)
	}
	send(t, nc, [][]byte{[]byte("x")})
	drain(t, na, unix.SOCK_STREAM, [][]byte{[]byte("x")})
}
