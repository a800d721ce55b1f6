package files

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// newPair opens a pty pair (no root needed): master, and a non-blocking
// slave of ours.
func newPair(t *testing.T) (m, s int) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { unix.Close(m) })
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	if s, err = openPeer(m, false, unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	return m, s
}

// readAvail reads what fd has within 200 ms.
func readAvail(t *testing.T, fd int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 20); n <= 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		if n > 0 {
			out = append(out, buf[:n]...)
		} else if err != nil && err != unix.EAGAIN {
			break
		}
	}
	return out
}

// TestPtyQueues: data queued both ways in a pair is read out (in order,
// a partial canonical line too, control characters untouched) and written
// into a new pair, where each side reads it once, with nothing echoed and
// the termios the same; the first pair's termios is unchanged.
func TestPtyQueues(t *testing.T) {
	for _, canon := range []bool{false, true} {
		m, s := newPair(t)
		tio, err := unix.IoctlGetTermios(m, unix.TCGETS2)
		if err != nil {
			t.Fatal(err)
		}
		if !canon {
			tio.Lflag &^= unix.ICANON | unix.ECHO | unix.ISIG
			tio.Iflag &^= unix.ICRNL | unix.IXON
			tio.Oflag &^= unix.OPOST
			tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 5
		} else {
			tio.Lflag |= unix.ICANON | unix.ECHO | unix.ISIG
		}
		if err := unix.IoctlSetTermios(m, unix.TCSETS2, tio); err != nil {
			t.Fatal(err)
		}
		in := []byte("line one\nx\x01\x7f partial")
		if !canon {
			in = []byte("raw\x03\x11\x13\r bytes\n")
		}
		if _, err := unix.Write(m, in); err != nil {
			t.Fatal(err)
		}
		echo := readAvail(t, m) // canonical mode echoes what was typed
		out := []byte("from the slave\n")
		if _, err := unix.Write(s, out); err != nil {
			t.Fatal(err)
		}
		wantOut := out
		if canon {
			wantOut = []byte("from the slave\r\n") // ONLCR
		}
		time.Sleep(20 * time.Millisecond)
		before, _ := getTermios(m)
		gotOut, err := drainMaster(m)
		if err != nil {
			t.Fatal(err)
		}
		gotIn, err := drainSlave(s, m, before)
		if err != nil {
			t.Fatal(err)
		}
		wantIn := in
		if canon {
			wantIn = bytes.ReplaceAll(in, []byte("x\x01\x7f"), []byte("x")) // VERASE erased the ^A
		}
		if !bytes.Equal(gotOut, wantOut) || !bytes.Equal(gotIn, wantIn) {
			t.Fatalf("canon %v: read out %q / %q, want %q / %q (echo was %q)", canon, gotOut, gotIn, wantOut, wantIn, echo)
		}
		after, _ := getTermios(m)
		if after.String() != before.String() {
			t.Fatalf("canon %v: termios changed by the read-out: %v, was %v", canon, after, before)
		}

		m2, s2 := newPair(t)
		st := &imagepb.Pty{Termios: before, Input: gotIn, Output: gotOut}
		if err := fillPair(m2, s2, st); err != nil {
			t.Fatal(err)
		}
		if got, _ := getTermios(m2); got.String() != before.String() {
			t.Fatalf("canon %v: new pair termios %v, want %v", canon, got, before)
		}
		if got := readAvail(t, m2); !bytes.Equal(got, wantOut) {
			t.Fatalf("canon %v: new master reads %q, want %q (nothing echoed)", canon, got, wantOut)
		}
		if got := readAvail(t, s2); !bytes.Equal(got, wantIn) {
			t.Fatalf("canon %v: new slave reads %q, want %q", canon, got, wantIn)
		}
		if got := readAvail(t, m2); len(got) != 0 {
			t.Fatalf("canon %v: the new master got %q after the slave read", canon, got)
		}
	}
}

// TestPtyIndex: openPtmxIndex gets a given free index, and fails naming
// the index when it is taken.
func TestPtyIndex(t *testing.T) {
	m, _ := newPair(t)
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	fd, got, err := openPtmxOnce(n, (&Opener{}).openPtmx)
	if err != nil || fd != -1 || got <= n {
		t.Fatalf("index %d taken by us: openPtmxOnce = %d, %d, %v", n, fd, got, err)
	}
	m2, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	n2, _ := unix.IoctlGetUint32(m2, unix.TIOCGPTN)
	unix.Close(m2) // free again (released asynchronously: openPtmxIndex waits)
	fd, err = openPtmxIndex(n2, (&Opener{}).openPtmx)
	if err != nil {
		t.Fatalf("openPtmxIndex(%d): %v", n2, err)
	}
	if got, _ := unix.IoctlGetUint32(fd, unix.TIOCGPTN); got != n2 {
		t.Fatalf("openPtmxIndex(%d) gave index %d", n2, got)
	}
	unix.Close(fd)
}
