package unixsk

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestBuildRejects: hostile or inconsistent descriptions are errors, never
// panics, and leave nothing open.
func TestBuildRejects(t *testing.T) {
	st := func(ino uint64) *imagepb.UnixSocket {
		return &imagepb.UnixSocket{Type: unix.SOCK_STREAM, Ino: ino, State: tcpClose}
	}
	cases := []struct {
		name  string
		socks []*imagepb.UnixSocket
		want  string
	}{
		{"nil", []*imagepb.UnixSocket{nil}, "empty"},
		{"type", []*imagepb.UnixSocket{{Type: 99, Ino: 1}}, "unsupported type"},
		{"ino0", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM}}, "inode 0"},
		{"dup", []*imagepb.UnixSocket{st(1), st(1)}, "twice"},
		{"state", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, State: 3}}, "bad state"},
		{"dgram listener", []*imagepb.UnixSocket{{Type: unix.SOCK_DGRAM, Ino: 1, State: tcpListen, Name: "@x"}}, "listening"},
		{"name", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, Name: "rel"}}, "bad name"},
		{"long name", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, Name: "/" + strings.Repeat("a", 200)}}, "bad name"},
		{"peer", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, PeerIno: 2, State: tcpEstablished}}, "neither in the image"},
		{"external unnamed", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, PeerIno: 2, External: true}}, "external peer"},
		{"listener", []*imagepb.UnixSocket{st(1), {Type: unix.SOCK_STREAM, Ino: 2, ListenerIno: 1, State: tcpEstablished}}, "not a listener"},
		{"creds", []*imagepb.UnixSocket{{Type: unix.SOCK_DGRAM, Ino: 1, Queue: [][]byte{{1}}, Creds: []*imagepb.UnixCred{{}, {}}}}, "queued elements"},
		{"embryo", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, Embryo: &imagepb.UnixSocket{}}}, "no listener"},
		{"shutdown", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, Shutdown: 8}}, "shutdown"},
		{"gone with peer", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, PeerIno: 1, PeerGone: true, State: tcpEstablished}}, "peer gone"},
		{"gone bad name", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, PeerGone: true, State: tcpEstablished, PeerName: "rel"}}, "closed peer"},
		{"reset dgram", []*imagepb.UnixSocket{{Type: unix.SOCK_DGRAM, Ino: 1, PeerGone: true, State: tcpEstablished, ErrReset: true}}, "ECONNRESET"},
		{"gone icons", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, State: tcpListen, Name: "@l", Icons: []uint64{0, 0}, GoneIcons: []*imagepb.UnixSocket{{}}}}, "closed waiting clients"},
		{"gone icon nil", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, State: tcpListen, Name: "@l", Icons: []uint64{0}, GoneIcons: []*imagepb.UnixSocket{nil}}}, "empty closed"},
		{"bind dir", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, Name: "x", BindDir: "rel"}}, "binding directory"},
		{"bind dir abs name", []*imagepb.UnixSocket{{Type: unix.SOCK_STREAM, Ino: 1, Name: "/x", BindDir: "/d"}}, "binding directory"},
	}
	for _, c := range cases {
		_, err := Build(c.socks, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Build = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	// fds in flight without an opener
	a := &imagepb.UnixSocket{Type: unix.SOCK_DGRAM, Ino: 1, PeerIno: 2, Queue: [][]byte{{1}}, Fds: []*imagepb.UnixFds{{FileIds: []uint32{7}}}}
	b := &imagepb.UnixSocket{Type: unix.SOCK_DGRAM, Ino: 2, PeerIno: 1}
	if _, err := Build([]*imagepb.UnixSocket{a, b}, nil); err == nil || !strings.Contains(err.Error(), "in flight") {
		t.Errorf("fds without opener: Build = %v", err)
	}
}

func mustSocket(t *testing.T, typ int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestBuildRoundtrip: a listener with an accepted connection and a
// waiting client that sent data, a dgram server with datagrams from a
// bound and an unbound sender, and an SCM_RIGHTS message carrying a pipe:
// dumped, captured, closed, rebuilt, and read back.
func TestBuildRoundtrip(t *testing.T) {
	lname := fmt.Sprintf("@ctr-cr-build-l-%d", os.Getpid())
	dname := fmt.Sprintf("@ctr-cr-build-d-%d", os.Getpid())
	xname := fmt.Sprintf("@ctr-cr-build-x-%d", os.Getpid())
	l := mustSocket(t, unix.SOCK_STREAM)
	if err := unix.Bind(l, sockaddr(lname)); err != nil {
		t.Fatal(err)
	}
	unix.Listen(l, 5)
	c0 := mustSocket(t, unix.SOCK_STREAM)
	if err := unix.Connect(c0, sockaddr(lname)); err != nil {
		t.Fatal(err)
	}
	a0, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	c1 := mustSocket(t, unix.SOCK_STREAM)
	if err := unix.Connect(c1, sockaddr(lname)); err != nil {
		t.Fatal(err)
	}
	send(t, c1, [][]byte{[]byte("waiting")})
	send(t, c0, [][]byte{[]byte("to-a0")})
	d := mustSocket(t, unix.SOCK_DGRAM)
	x := mustSocket(t, unix.SOCK_DGRAM)
	y := mustSocket(t, unix.SOCK_DGRAM)
	unix.Bind(d, sockaddr(dname))
	unix.Bind(x, sockaddr(xname))
	unix.Sendto(x, []byte("x1"), 0, sockaddr(dname))
	unix.Sendto(y, []byte("y1"), 0, sockaddr(dname))
	// a pipe in flight on a stream pair
	p0, p1 := socketpair(t, unix.SOCK_STREAM)
	var pp [2]int
	if err := unix.Pipe2(pp[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Write(pp[1], []byte("piped"))
	if err := unix.Sendmsg(p0, []byte("f"), unix.UnixRights(pp[0]), nil, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(pp[0])
	defer unix.Close(pp[1])

	// dump: files in flight are kept by id
	inflight := map[uint32]int{}
	o := Options{InFlight: func(fds []int) ([]uint32, error) {
		var ids []uint32
		for _, fd := range fds {
			id := uint32(100 + len(inflight))
			inflight[id] = fd
			ids = append(ids, id)
		}
		return ids, nil
	}}
	diag, err := ReadDiag()
	if err != nil {
		t.Fatal(err)
	}
	orig := []int{l, c0, a0, c1, d, x, y, p0, p1}
	ino := map[int]uint64{}
	var socks []*imagepb.UnixSocket
	byIno := map[uint64]*imagepb.UnixSocket{}
	for _, fd := range orig {
		ino[fd] = inoOf(t, fd)
		s, err := DumpWith(fd, ino[fd], diag, o)
		if err != nil {
			t.Fatalf("dump fd %d: %v", fd, err)
		}
		socks = append(socks, s)
		byIno[s.Ino] = s
	}
	ls := byIno[ino[l]]
	acc, err := CaptureEmbryos(l, ls, map[uint64]*imagepb.UnixSocket{ino[c1]: byIno[ino[c1]]}, o)
	if err != nil || len(acc) != 1 {
		t.Fatalf("CaptureEmbryos = %v, %v", acc, err)
	}
	if e := byIno[ino[c1]].Embryo; e == nil || len(e.Queue) != 1 || string(e.Queue[0]) != "waiting" {
		t.Fatalf("embryo = %v", e)
	}
	if got := byIno[ino[d]].Senders; len(got) != 2 || got[0] != xname || got[1] != "" {
		t.Fatalf("senders = %q", got)
	}
	if f := byIno[ino[p1]].Fds; len(f) != 1 || len(f[0].FileIds) != 1 {
		t.Fatalf("fds in flight = %v", f)
	}
	for _, fd := range append(orig, acc...) {
		unix.Close(fd)
	}

	built, err := Build(socks, func(id uint32) (int, error) { return inflight[id], nil })
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, fd := range built {
			unix.Close(fd)
		}
		for _, fd := range inflight {
			unix.Close(fd)
		}
	}()
	at := func(fd int) int { return built[ino[fd]] }
	buf := make([]byte, 64)
	read := func(fd int, want string) {
		t.Helper()
		n, _, _, from, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:max(n, 0)], err, want)
		}
		_ = from
	}
	read(at(a0), "to-a0")
	if sa, err := unix.Getsockname(at(a0)); err != nil || sa.(*unix.SockaddrUnix).Name != lname {
		t.Errorf("accepted end name %v, %v; want %s", sa, err, lname)
	}
	w, _, err := unix.Accept4(at(l), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(w)
	read(w, "waiting")
	n, _, _, from, err := unix.Recvmsg(at(d), buf, nil, unix.MSG_DONTWAIT)
	if err != nil || string(buf[:n]) != "x1" || from.(*unix.SockaddrUnix).Name != xname {
		t.Errorf("first datagram %q from %v (%v)", buf[:max(n, 0)], from, err)
	}
	read(at(d), "y1")
	oob := make([]byte, 64)
	n, oobn, _, _, err := unix.Recvmsg(at(p1), buf, oob, unix.MSG_DONTWAIT)
	if err != nil || string(buf[:n]) != "f" {
		t.Fatalf("fd message %q, %v", buf[:max(n, 0)], err)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	if len(msgs) != 1 {
		t.Fatalf("%d control messages", len(msgs))
	}
	rfds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(rfds) != 1 {
		t.Fatalf("rights %v, %v", rfds, err)
	}
	defer unix.Close(rfds[0])
	if n, err := unix.Read(rfds[0], buf); err != nil || string(buf[:n]) != "piped" {
		t.Errorf("pipe in flight reads %q, %v", buf[:max(n, 0)], err)
	}
}
