package files

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// maxPtyQueue bounds the bytes read out of one direction of a pty (the
// kernel queues at most a few tens of KiB: line discipline buffer plus flip
// buffers).
const maxPtyQueue = 1 << 20

// ptyWriteTimeout bounds the wait for room when queued data is written
// back into a pty.
const ptyWriteTimeout = 2 * time.Second

// getTermios reads the line settings of a pty (through either end: on the
// master, TCGETS2 reads the slave's termios).
func getTermios(fd int) (*imagepb.PtyTermios, error) {
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
	if err != nil {
		return nil, fmt.Errorf("TCGETS2: %w", err)
	}
	return &imagepb.PtyTermios{
		Iflag: tio.Iflag, Oflag: tio.Oflag, Cflag: tio.Cflag, Lflag: tio.Lflag,
		Line: uint32(tio.Line), Cc: append([]byte(nil), tio.Cc[:]...), Ispeed: tio.Ispeed, Ospeed: tio.Ospeed,
	}, nil
}

// termiosOf converts the image's termios (validated: cc of at most 19
// bytes) to the kernel's.
func termiosOf(t *imagepb.PtyTermios) unix.Termios {
	tio := unix.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag, Line: uint8(t.Line), Ispeed: t.Ispeed, Ospeed: t.Ospeed}
	copy(tio.Cc[:], t.Cc)
	return tio
}

func setTermios(fd int, tio unix.Termios) error {
	if err := unix.IoctlSetTermios(fd, unix.TCSETS2, &tio); err != nil {
		return fmt.Errorf("TCSETS2: %w", err)
	}
	return nil
}

// rawInput is tio without any input processing: bytes written to the
// master land in the slave's queue as they are, not echoed, not
// interpreted (signals, flow control, line editing).
func rawInput(tio unix.Termios) unix.Termios {
	tio.Iflag = 0
	tio.Lflag &^= unix.ICANON | unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL | unix.ECHOCTL | unix.ECHOKE | unix.ISIG | unix.IEXTEN | unix.EXTPROC
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 0, 0
	return tio
}

// openPeer opens a slave of the pty whose master is fd (TIOCGPTPEER: the
// right devpts instance whatever the mounts), never as our controlling
// terminal. A locked pair is unlocked for the open and locked again.
func openPeer(fd int, locked bool, flags int) (int, error) {
	if locked {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return -1, fmt.Errorf("TIOCSPTLCK 0: %w", err)
		}
		defer unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 1)
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|flags))
	if e != 0 {
		return -1, fmt.Errorf("open the slave (TIOCGPTPEER): %w", e)
	}
	return int(r), nil
}

// drainMaster reads what the slave wrote and the master did not read yet.
// Our copy shares the task's open file (its O_NONBLOCK too), so a read is
// made only when poll says there is something and asks no more than
// FIONREAD counts (the master's line discipline is raw: it never waits
// then). Packet mode must be off (reads would carry a status byte).
func drainMaster(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		if n == 0 || pfd[0].Revents&unix.POLLIN == 0 {
			return out, nil
		}
		avail, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
		if err != nil {
			return nil, fmt.Errorf("FIONREAD: %w", err)
		}
		if avail <= 0 {
			return out, nil
		}
		r, err := unix.Read(fd, buf[:min(avail, len(buf))])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EIO || err == unix.EAGAIN || r == 0 {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, buf[:r]...)
		if len(out) > maxPtyQueue {
			return nil, fmt.Errorf("more than %d bytes queued", maxPtyQueue)
		}
	}
}

// drainSlave reads, through our own non-blocking slave s, what was written
// to the master and not read from the slave yet: with the line discipline
// briefly non-canonical (a partial line is read too; VMIN=VTIME=0 returns
// at once when nothing is left; nothing else changes), then the termios
// tio put back.
func drainSlave(s, master int, tio *imagepb.PtyTermios) ([]byte, error) {
	orig := termiosOf(tio)
	nc := orig
	nc.Lflag &^= unix.ICANON
	nc.Cc[unix.VMIN], nc.Cc[unix.VTIME] = 0, 0
	if err := setTermios(master, nc); err != nil {
		return nil, err
	}
	var out []byte
	var rerr error
	buf := make([]byte, 4096)
	for {
		r, err := unix.Read(s, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil && err != unix.EAGAIN && err != unix.EIO {
			rerr = err
		}
		if r <= 0 {
			break
		}
		out = append(out, buf[:r]...)
		if len(out) > maxPtyQueue {
			rerr = fmt.Errorf("more than %d bytes queued", maxPtyQueue)
			break
		}
	}
	if err := setTermios(master, orig); err != nil {
		return nil, errors.Join(rerr, err)
	}
	return out, rerr
}

// withPacketOff runs f with packet mode off on the master fd when it is on:
// line setting changes made meanwhile would queue status bytes for the
// master's reader. Turning it back on drops any status byte pending.
func withPacketOff(fd int, packet bool, f func() error) error {
	if !packet {
		return f()
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 0); err != nil {
		return fmt.Errorf("TIOCPKT 0: %w", err)
	}
	err := f()
	if perr := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1); perr != nil {
		err = errors.Join(err, fmt.Errorf("TIOCPKT 1: %w", perr))
	}
	return err
}

// fillPair writes queued data into a pair and sets its final termios:
// output (for the master to read) written to the slave with output
// processing off, then input (for the slave to read) written to the master
// with the line discipline raw (see rawInput). slave may be -1 when there
// is no output to write.
func fillPair(master, slave int, st *imagepb.Pty) error {
	final := termiosOf(st.Termios)
	if len(st.Output) > 0 {
		if slave < 0 {
			return errors.New("no slave to write the queued output with")
		}
		t := final
		t.Oflag &^= unix.OPOST
		if err := setTermios(master, t); err != nil {
			return err
		}
		if err := writeAll(slave, st.Output); err != nil {
			setTermios(master, final)
			return fmt.Errorf("write %d bytes of queued output: %w", len(st.Output), err)
		}
	}
	if len(st.Input) > 0 {
		if err := setTermios(master, rawInput(final)); err != nil {
			return err
		}
		if err := writeAll(master, st.Input); err != nil {
			setTermios(master, final)
			return fmt.Errorf("write %d bytes of queued input: %w", len(st.Input), err)
		}
		if err := waitTaken(slave, len(st.Input)); err != nil {
			setTermios(master, final)
			return err
		}
	}
	return setTermios(master, final)
}

// nttyBufSize is the line discipline's input buffer (N_TTY_BUF_SIZE):
// bytes beyond it wait in the pty's flip buffers.
const nttyBufSize = 4096

// waitTaken waits until the line discipline of the slave s holds the n
// bytes just written to the master (or as many as its buffer takes), so
// that they are not processed in the final mode: the pty passes them on
// asynchronously.
func waitTaken(s, n int) error {
	if s < 0 {
		return errors.New("no slave to check the queued input with")
	}
	want := min(n, nttyBufSize-1)
	deadline := time.Now().Add(ptyWriteTimeout)
	for {
		got, err := unix.IoctlGetInt(s, unix.TIOCINQ)
		if err != nil {
			return fmt.Errorf("FIONREAD: %w", err)
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the slave holds %d bytes of the %d queued after %v", got, n, ptyWriteTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// writeAll writes b to fd, waiting for room (at most ptyWriteTimeout).
func writeAll(fd int, b []byte) error {
	deadline := time.Now().Add(ptyWriteTimeout)
	for len(b) > 0 {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
			return err
		}
		if pfd[0].Revents&unix.POLLOUT != 0 {
			n, err := unix.Write(fd, b)
			if err != nil && err != unix.EAGAIN && err != unix.EINTR {
				return err
			}
			if n > 0 {
				b = b[n:]
				continue
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no room for %d bytes after %v", len(b), ptyWriteTimeout)
		}
	}
	return nil
}
