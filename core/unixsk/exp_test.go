package unixsk

import (
	"testing"

	"golang.org/x/sys/unix"
)

func ino(t *testing.T, fd int) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func peek(fd int, flags int) (int, int, int, []byte, error) {
	buf := make([]byte, 100)
	oob := make([]byte, 512)
	n, oobn, rf, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|flags)
	return n, oobn, rf, oob[:max(oobn, 0)], err
}

func TestExp(t *testing.T) {
	p, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	unix.Write(p[0], []byte("hello"))
	unix.Shutdown(p[0], unix.SHUT_WR)
	d, err := ReadDiag()
	if err != nil {
		t.Fatal(err)
	}
	e0, _ := d.Lookup(ino(t, p[0]))
	e1, _ := d.Lookup(ino(t, p[1]))
	t.Logf("e0 %+v\ne1 %+v", e0, e1)
	unix.Close(p[0])
	d, _ = ReadDiag()
	e1, _ = d.Lookup(ino(t, p[1]))
	_, ok := d.Lookup(e1.PeerIno)
	t.Logf("after close e1 %+v peer found %v", e1, ok)
	v, err := unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	t.Logf("peekoff default %d %v", v, err)
	t.Log(unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0))
	t.Log(unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1))
	t.Log(unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, -5))
	v, err = unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	t.Logf("peekoff after -5 %d %v", v, err)

	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		p, _ := unix.Socketpair(unix.AF_UNIX, typ, 0)
		unix.Write(p[0], nil)
		unix.Write(p[0], []byte("abc"))
		unix.Write(p[0], nil)
		unix.Write(p[0], []byte("defgh"))
		// plain peek of head (marks empty head as peeked)
		n, _, _, _, err := peek(p[1], 0)
		t.Logf("type %d plain head peek n=%d err=%v", typ, n, err)
		unix.Shutdown(p[0], unix.SHUT_WR)
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0)
		for i := 0; i < 7; i++ {
			n, oobn, rf, _, err := peek(p[1], unix.MSG_TRUNC)
			off, _ := unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF)
			t.Logf("  peek %d: n=%d oobn=%d rf=%#x err=%v off=%d", i, n, oobn, rf, err, off)
		}
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_TIMESTAMP, 1)
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0)
		for i := 0; i < 7; i++ {
			n, oobn, rf, _, err := peek(p[1], unix.MSG_TRUNC)
			t.Logf("  ts peek %d: n=%d oobn=%d rf=%#x err=%v", i, n, oobn, rf, err)
		}
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_TIMESTAMP, 0)
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		n, oobn, rf, oob, err := peek(p[1], unix.MSG_TRUNC)
		t.Logf("  passcred peek: n=%d oobn=%d rf=%#x err=%v oob=%v", n, oobn, rf, err, oob)
		// send after passcred set
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_PASSCRED, 0)
		sb, _ := unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_SNDBUF)
		rb, _ := unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_RCVBUF)
		t.Logf("  sndbuf %d rcvbuf %d", sb, rb)
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 1000)
		sb, _ = unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_SNDBUF)
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 10)
		sb2, _ := unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_SNDBUF)
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 10)
		rb2, _ := unix.GetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_RCVBUF)
		t.Logf("  sndbuf(1000)=%d sndbuf(10)=%d rcvbuf(10)=%d", sb, sb2, rb2)
	}
}
