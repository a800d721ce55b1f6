package unixsk

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func socketpair(t *testing.T, typ int) (int, int) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func inoOf(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func getopt(t *testing.T, fd, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	if err != nil {
		t.Fatalf("getsockopt %d: %v", opt, err)
	}
	return v
}

func setopt(t *testing.T, fd, opt, v int) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
		t.Fatalf("setsockopt %d=%d: %v", opt, v, err)
	}
}

func send(t *testing.T, fd int, msgs [][]byte) {
	t.Helper()
	for _, m := range msgs {
		if n, err := unix.SendmsgN(fd, m, nil, nil, unix.MSG_DONTWAIT); err != nil || n != len(m) {
			t.Fatalf("send %d bytes: n=%d %v", len(m), n, err)
		}
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// drain reads (consuming) what want says should be queued on fd and checks
// that nothing more is: for stream the concatenated bytes, otherwise
// len(want) messages.
func drain(t *testing.T, fd, typ int, want [][]byte) {
	t.Helper()
	buf := make([]byte, 1<<18)
	var got [][]byte
	if typ == unix.SOCK_STREAM {
		total := 0
		for _, m := range want {
			total += len(m)
		}
		var all []byte
		for len(all) < total {
			n, err := unix.Read(fd, buf)
			if err != nil || n == 0 {
				t.Fatalf("read stream after %d of %d bytes: n=%d %v", len(all), total, n, err)
			}
			all = append(all, buf[:n]...)
		}
		if total > 0 {
			got = [][]byte{all}
		}
		want = concat(want)
	} else {
		for range want {
			n, _, fl, _, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT)
			if err != nil || fl&unix.MSG_TRUNC != 0 {
				t.Fatalf("recv message %d: %v flags %#x", len(got), err, fl)
			}
			got = append(got, append([]byte{}, buf[:n]...))
		}
	}
	if !equalQueues(got, want) {
		t.Fatalf("queue: got %s, want %s", describe(got), describe(want))
	}
	if inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err != nil || inq != 0 {
		t.Fatalf("after draining: SIOCINQ %d %v", inq, err)
	}
	if typ == unix.SOCK_DGRAM {
		if _, _, _, _, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT); err != unix.EAGAIN {
			t.Fatalf("after draining: recv %v, want EAGAIN", err)
		}
	}
}

func concat(q [][]byte) [][]byte {
	if len(q) == 0 {
		return nil
	}
	return [][]byte{bytes.Join(q, nil)}
}

func equalQueues(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func describe(q [][]byte) string {
	s := "["
	for i, m := range q {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprint(len(m))
	}
	return s + "]"
}

type roundtripCase struct {
	name   string
	typ    int
	toB    [][]byte // queued for b (sent by a)
	toA    [][]byte // queued for a (sent by b)
	sndbuf int      // SO_SNDBUFFORCE on a before sending (value passed)
	shrink int      // SO_SNDBUF on a after sending (queue beyond it)
	rcvbuf int      // SO_RCVBUF on b
	// shutdown bits expected after SHUT_WR on a
	shutA, shutB uint32
}

func roundtripCases() []roundtripCase {
	return []roundtripCase{
		{name: "stream", typ: unix.SOCK_STREAM,
			toB: [][]byte{pattern(100<<10, 1)}, toA: [][]byte{[]byte("pong")},
			sndbuf: 8 << 20, rcvbuf: 1 << 20, shutA: sendShutdown, shutB: rcvShutdown},
		{name: "dgram", typ: unix.SOCK_DGRAM,
			toB:    [][]byte{pattern(10, 2), {}, pattern(100000, 3), pattern(1, 4), pattern(2000, 5)},
			toA:    [][]byte{[]byte("x"), []byte("yz")},
			sndbuf: 1 << 20, rcvbuf: 5 << 20, shutA: sendShutdown, shutB: 0},
		{name: "seqpacket", typ: unix.SOCK_SEQPACKET,
			toB:    [][]byte{pattern(100, 6), pattern(70000, 7), pattern(3, 8)},
			sndbuf: 1 << 20, rcvbuf: 3000, shutA: sendShutdown, shutB: rcvShutdown},
		{name: "seqpacket-empty-records", typ: unix.SOCK_SEQPACKET,
			toB:   [][]byte{{}, []byte("abc"), {}, {}},
			toA:   [][]byte{{}},
			shutA: sendShutdown, shutB: rcvShutdown},
		{name: "empty-queues", typ: unix.SOCK_STREAM, shutA: sendShutdown, shutB: rcvShutdown},
		// Queues beyond the default buffers / net.unix.max_dgram_qlen.
		{name: "stream-3MiB", typ: unix.SOCK_STREAM,
			toB: [][]byte{pattern(3<<20, 9)}, sndbuf: 4 << 20, shutA: sendShutdown, shutB: rcvShutdown},
		{name: "dgram-many-shrunk", typ: unix.SOCK_DGRAM, toB: manyMessages(200), shrink: 4096, shutA: sendShutdown},
		{name: "seqpacket-shrunk", typ: unix.SOCK_SEQPACKET, toB: [][]byte{pattern(150000, 1), {}, pattern(5, 2)},
			shrink: 4096, shutA: sendShutdown, shutB: rcvShutdown},
	}
}

func manyMessages(n int) [][]byte {
	q := make([][]byte, n)
	for i := range q {
		q[i] = pattern(i%17, byte(i))
	}
	return q
}

func TestRoundtrip(t *testing.T) {
	for _, tc := range roundtripCases() {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketpair(t, tc.typ)
			if tc.sndbuf != 0 {
				setopt(t, a, unix.SO_SNDBUFFORCE, tc.sndbuf)
			}
			send(t, a, tc.toB)
			send(t, b, tc.toA)
			if tc.shrink != 0 {
				setopt(t, a, unix.SO_SNDBUF, tc.shrink)
			}
			if tc.rcvbuf != 0 {
				setopt(t, b, unix.SO_RCVBUF, tc.rcvbuf)
			}
			setopt(t, a, unix.SO_PASSCRED, 1)
			if err := unix.Shutdown(a, unix.SHUT_WR); err != nil {
				t.Fatal(err)
			}
			inoA, inoB := inoOf(t, a), inoOf(t, b)

			d, err := ReadDiag()
			if err != nil {
				t.Fatal(err)
			}
			imgA, err := Dump(a, inoA, d)
			if err != nil {
				t.Fatal(err)
			}
			imgB, err := Dump(b, inoB, d)
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, imgA, a, tc.typ, inoA, inoB, tc.toA, tc.shutA)
			checkImage(t, imgB, b, tc.typ, inoB, inoA, tc.toB, tc.shutB)
			if !imgA.Passcred || imgB.Passcred {
				t.Errorf("passcred: a %v b %v", imgA.Passcred, imgB.Passcred)
			}
			if v := tc.sndbuf + tc.shrink; v != 0 && imgA.Sndbuf != uint32(2*v) {
				t.Errorf("sndbuf %d, want doubled %d", imgA.Sndbuf, 2*v)
			}
			for _, fd := range []int{a, b} {
				if v := getopt(t, fd, unix.SO_PEEK_OFF); v != -1 {
					t.Errorf("SO_PEEK_OFF left at %d", v)
				}
				if v := getopt(t, fd, unix.SO_TIMESTAMP); v != 0 {
					t.Errorf("SO_TIMESTAMP left at %d", v)
				}
			}

			// Pair from the images, and dump the new pair: same description.
			na, nb, err := Pair(imgA, imgB)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(na); unix.Close(nb) })
			if fl, _ := unix.FcntlInt(uintptr(na), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
				t.Errorf("new fd without FD_CLOEXEC")
			}
			nd, err := ReadDiag()
			if err != nil {
				t.Fatal(err)
			}
			newA, err := Dump(na, inoOf(t, na), nd)
			if err != nil {
				t.Fatal(err)
			}
			newB, err := Dump(nb, inoOf(t, nb), nd)
			if err != nil {
				t.Fatal(err)
			}
			sameImage(t, newA, imgA)
			sameImage(t, newB, imgB)

			// Originals still hold exactly their data; so does the new pair.
			drain(t, a, tc.typ, tc.toA)
			drain(t, b, tc.typ, tc.toB)
			drain(t, na, tc.typ, tc.toA)
			drain(t, nb, tc.typ, tc.toB)
			// SHUT_WR on a is in force on the new a.
			if _, err := unix.SendmsgN(na, []byte("z"), nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL); err != unix.EPIPE {
				t.Errorf("send on restored SHUT_WR end: %v, want EPIPE", err)
			}
		})
	}
}

// checkImage compares a dumped description with the socket it came from.
func checkImage(t *testing.T, s *imagepb.UnixSocket, fd, typ int, ino, peer uint64, queue [][]byte, shut uint32) {
	t.Helper()
	if s.Type != int32(typ) || s.Ino != ino || s.PeerIno != peer || s.Name != "" || s.State != tcpEstablished {
		t.Errorf("image %d: type %d ino %d peer %d name %q state %d", ino, s.Type, s.Ino, s.PeerIno, s.Name, s.State)
	}
	if s.Shutdown != shut {
		t.Errorf("image %d: shutdown %d, want %d", ino, s.Shutdown, shut)
	}
	if s.Sndbuf != uint32(getopt(t, fd, unix.SO_SNDBUF)) || s.Rcvbuf != uint32(getopt(t, fd, unix.SO_RCVBUF)) {
		t.Errorf("image %d: sndbuf %d rcvbuf %d", ino, s.Sndbuf, s.Rcvbuf)
	}
	want := queue
	if typ == unix.SOCK_STREAM {
		want = concat(queue)
	}
	if !equalQueues(s.Queue, want) {
		t.Errorf("image %d: queue %s, want %s", ino, describe(s.Queue), describe(want))
	}
}

// sameImage compares two descriptions of the same end (old and rebuilt).
func sameImage(t *testing.T, got, want *imagepb.UnixSocket) {
	t.Helper()
	if got.Type != want.Type || got.Sndbuf != want.Sndbuf || got.Rcvbuf != want.Rcvbuf ||
		got.Passcred != want.Passcred || got.Shutdown != want.Shutdown || got.State != want.State || got.Name != want.Name {
		t.Errorf("rebuilt end differs:\n got %v\nwant %v", got, want)
	}
	if !equalQueues(got.Queue, want.Queue) {
		t.Errorf("rebuilt queue %s, want %s", describe(got.Queue), describe(want.Queue))
	}
}

func TestReadDiag(t *testing.T) {
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		a, b := socketpair(t, typ)
		send(t, a, [][]byte{pattern(300, 1), pattern(200, 2)})
		if err := unix.Shutdown(b, unix.SHUT_RD); err != nil {
			t.Fatal(err)
		}
		d, err := ReadDiag()
		if err != nil {
			t.Fatal(err)
		}
		ea, okA := d.Lookup(inoOf(t, a))
		eb, okB := d.Lookup(inoOf(t, b))
		if !okA || !okB {
			t.Fatalf("type %d: ends not found (%v %v)", typ, okA, okB)
		}
		if ea.PeerIno != eb.Ino || eb.PeerIno != ea.Ino || ea.Type != typ || ea.State != tcpEstablished || ea.Name != "" {
			t.Errorf("type %d: a %+v b %+v", typ, ea, eb)
		}
		want := uint32(500) // stream, seqpacket: whole queue
		if typ == unix.SOCK_DGRAM {
			want = 300 // first datagram only
		}
		if eb.RQueue != want || ea.RQueue != 0 {
			t.Errorf("type %d: rqueue a %d b %d, want 0 and %d", typ, ea.RQueue, eb.RQueue, want)
		}
		if ea.WQueue == 0 {
			t.Errorf("type %d: a's wqueue 0 with data in flight", typ)
		}
		wantShut := uint8(rcvShutdown)
		if eb.shutdown != wantShut || !eb.hasShutdown {
			t.Errorf("type %d: b shutdown %d (reported %v)", typ, eb.shutdown, eb.hasShutdown)
		}
	}
	if _, ok := (*Diag)(nil).Lookup(1); ok {
		t.Error("nil Diag finds something")
	}
}

func TestSetBufBeyondSysctl(t *testing.T) {
	wmax, err := readSysctl("net/core/wmem_max")
	if err != nil {
		t.Skip(err)
	}
	a, _ := socketpair(t, unix.SOCK_STREAM)
	want := uint32(2 * (wmax + 4096))
	if err := setBuf(a, 1, "SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, want, wmax); err != nil {
		t.Fatal(err)
	}
	if v := getopt(t, a, unix.SO_SNDBUF); uint32(v) != want {
		t.Fatalf("SO_SNDBUF %d, want %d", v, want)
	}
	// Plain SO_SNDBUF above the max is capped silently: what setBuf avoids.
	setopt(t, a, unix.SO_SNDBUF, wmax+4096)
	if v := getopt(t, a, unix.SO_SNDBUF); v != 2*wmax {
		t.Logf("plain SO_SNDBUF above wmem_max gave %d (expected cap %d)", v, 2*wmax)
	}
}

func TestPairRejects(t *testing.T) {
	a := &imagepb.UnixSocket{Type: unix.SOCK_STREAM, Ino: 10, PeerIno: 11}
	b := &imagepb.UnixSocket{Type: unix.SOCK_STREAM, Ino: 11, PeerIno: 10}
	bad := []struct {
		name string
		a, b *imagepb.UnixSocket
	}{
		{"nil", a, nil},
		{"not peers", a, &imagepb.UnixSocket{Type: unix.SOCK_STREAM, Ino: 12, PeerIno: 10}},
		{"types", a, &imagepb.UnixSocket{Type: unix.SOCK_DGRAM, Ino: 11, PeerIno: 10}},
		{"raw", &imagepb.UnixSocket{Type: unix.SOCK_RAW, Ino: 10, PeerIno: 11}, &imagepb.UnixSocket{Type: unix.SOCK_RAW, Ino: 11, PeerIno: 10}},
		{"bound", a, &imagepb.UnixSocket{Type: unix.SOCK_STREAM, Ino: 11, PeerIno: 10, Name: "@x"}},
		{"shutdown", a, &imagepb.UnixSocket{Type: unix.SOCK_STREAM, Ino: 11, PeerIno: 10, Shutdown: 4}},
	}
	for _, c := range bad {
		if fa, fb, err := Pair(c.a, c.b); err == nil {
			unix.Close(fa)
			unix.Close(fb)
			t.Errorf("%s: Pair accepted", c.name)
		}
	}
	fa, fb, err := Pair(a, b)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fa)
	unix.Close(fb)
}
