package unixsk

import (
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/internal/sockopt"
)

// TestGenericOptions: options set on both ends of a dgram pair (one with
// a filter dropping 1-byte datagrams, locked, a 1-byte datagram queued
// before it was attached and one it let pass) read back the same after a
// rebuild; the refill is not filtered (the filter is attached after it),
// and the filter still drops new short datagrams.
func TestGenericOptions(t *testing.T) {
	a, b := socketpair(t, unix.SOCK_DGRAM)
	for _, o := range []struct{ opt, v int }{{unix.SO_REUSEADDR, 1}, {unix.SO_KEEPALIVE, 1}, {unix.SO_PRIORITY, 4}, {unix.SO_RCVLOWAT, 7}, {unix.SO_TIMESTAMPNS, 1}} {
		setopt(t, a, o.opt, o.v)
	}
	setopt(t, b, unix.SO_SNDBUF, 50000)
	for _, fd := range []int{a, b} {
		if err := sockopt.SetTimeoutUs(fd, unix.SO_RCVTIMEO, 1500000); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.SetsockoptLinger(b, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 5}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptLinger(b, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 0, Linger: 5}); err != nil {
		t.Fatal(err)
	}
	send(t, b, [][]byte{[]byte("x")}) // queued before the filter: kept
	// ld len; jge #2 ? accept : drop
	prog := []unix.SockFilter{{Code: 0x80}, {Code: 0x35, Jt: 0, Jf: 1, K: 2}, {Code: 0x06, K: 0xffff}, {Code: 0x06}}
	if err := unix.SetsockoptSockFprog(a, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 4, Filter: &prog[0]}); err != nil {
		t.Fatal(err)
	}
	setopt(t, a, unix.SO_LOCK_FILTER, 1)
	send(t, b, [][]byte{[]byte("z"), []byte("kept")})
	snap := func(fd int) string {
		var s strings.Builder
		for _, o := range unixInts {
			v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.Opt)
			s.WriteString(o.Name + "=" + strconv.Itoa(v) + " ")
		}
		for _, o := range []int{unix.SO_SNDBUF, unix.SO_RCVBUF, unix.SO_LOCK_FILTER} {
			v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o)
			s.WriteString(strconv.Itoa(v) + " ")
		}
		r, _ := sockopt.TimeoutUs(fd, unix.SO_RCVTIMEO)
		l, _ := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
		f, _ := sockopt.GetFilter(fd)
		return s.String() + strconv.Itoa(int(r)) + " " + strconv.Itoa(int(l.Onoff)) + "/" + strconv.Itoa(int(l.Linger)) + " " + string(f)
	}
	wantA, wantB := snap(a), snap(b)
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
	na, nb := fds[socks[0].Ino], fds[socks[1].Ino]
	if got := snap(na); got != wantA {
		t.Errorf("end a after rebuild:\n%q\nwas\n%q", got, wantA)
	}
	if got := snap(nb); got != wantB {
		t.Errorf("end b after rebuild:\n%q\nwas\n%q", got, wantB)
	}
	send(t, nb, [][]byte{[]byte("y"), []byte("new")})
	drain(t, na, unix.SOCK_DGRAM, [][]byte{[]byte("x"), []byte("kept"), []byte("new")})
	if err := unix.SetsockoptInt(na, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0); err != unix.EPERM {
		t.Errorf("detach the locked filter: %v, want EPERM", err)
	}
}

// TestStreamPeekOff: a stream socket's own SO_PEEK_OFF is carried: the
// next peek goes on where the task's left off.
func TestStreamPeekOff(t *testing.T) {
	a, b := socketpair(t, unix.SOCK_STREAM)
	send(t, b, [][]byte{[]byte("hello world")})
	setopt(t, a, unix.SO_PEEK_OFF, 0)
	buf := make([]byte, 3)
	if n, _, err := unix.Recvfrom(a, buf, unix.MSG_PEEK); err != nil || n != 3 {
		t.Fatalf("peek: %d, %v", n, err)
	}
	socks := dumpAll(t, a, b)
	if v := getopt(t, a, unix.SO_PEEK_OFF); v != 3 {
		t.Fatalf("the dump left SO_PEEK_OFF at %d, want 3", v)
	}
	fds, err := Build(socks, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	na := fds[socks[0].Ino]
	buf = make([]byte, 64)
	n, _, err := unix.Recvfrom(na, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil || string(buf[:n]) != "lo world" {
		t.Errorf("peek after rebuild: %q, %v; want \"lo world\"", buf[:n], err)
	}
	if v := getopt(t, na, unix.SO_PEEK_OFF); v != 11 {
		t.Errorf("SO_PEEK_OFF after the peek: %d, want 11", v)
	}
}

// TestGenericOptionsRefused: options the image does not carry are refused
// by name.
func TestGenericOptionsRefused(t *testing.T) {
	a, _ := socketpair(t, unix.SOCK_STREAM)
	setopt(t, a, unix.SO_TIMESTAMPING, 1<<7|1<<3) // OPT_ID | RX_SOFTWARE
	wantUnsupported(t, a, "SOF_TIMESTAMPING_OPT_ID")
	c, _ := socketpair(t, unix.SOCK_DGRAM)
	rate := uint64(1 << 20)
	if err := unix.SetsockoptUint64(c, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, rate); err != nil {
		t.Skipf("SO_MAX_PACING_RATE: %v", err)
	}
	wantUnsupported(t, c, "SO_MAX_PACING_RATE")
}

// TestOptionsRejected: hostile option data in an image is an error.
func TestOptionsRejected(t *testing.T) {
	for _, c := range []struct {
		s    *imagepb.UnixSocket
		want string
	}{
		{&imagepb.UnixSocket{Opts: []*imagepb.InetOpt{{Level: unix.SOL_IP, Name: unix.IP_TTL, Value: 1}}}, "not one the image may carry"},
		{&imagepb.UnixSocket{Opts: []*imagepb.InetOpt{{Level: unix.SOL_SOCKET, Name: unix.SO_ACCEPTCONN, Value: 1}}}, "not one the image may carry"},
		{&imagepb.UnixSocket{RcvtimeoUs: -1}, "negative"},
		{&imagepb.UnixSocket{LingerSecs: -3}, "negative"},
		{&imagepb.UnixSocket{BindDev: strings.Repeat("e", 20)}, "SO_BINDTODEVICE"},
		{&imagepb.UnixSocket{Filter: []byte{1, 2, 3}}, "socket filter of 3 bytes"},
	} {
		c.s.Type, c.s.Ino, c.s.State = unix.SOCK_STREAM, 1, tcpClose
		if _, err := Build([]*imagepb.UnixSocket{c.s}, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Build(%v) = %v, want an error containing %q", c.s, err, c.want)
		}
	}
}
