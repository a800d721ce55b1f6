package files

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// ptyIndexWait bounds the wait for a pty index to become free: the pair of
// a just-killed dumped task is released asynchronously by the kernel.
const ptyIndexWait = 3 * time.Second

// ptyPair is a pair recreated by the opener. Our fds are closed by Finish
// (the restored tasks hold their own).
type ptyPair struct {
	master int
	slave  int // our slave, -1 when the pair needs none
	st     *imagepb.Pty
}

// PtySession is a session whose controlling terminal is a pty of the image.
type PtySession struct {
	Sid    int32 // the session (its leader's pid in the image)
	FgPgid int32 // its foreground process group at dump, 0 if unknown
	Index  uint32
}

// PtySessions lists the sessions that have a pty of the image, or a
// container's console, as their controlling terminal, by sid.
func (o *Opener) PtySessions() []PtySession {
	var out []PtySession
	seen := map[int32]bool{}
	for _, f := range o.files {
		console := f.Kind == imagepb.FileKind_FILE_CONSOLE && f.Pty != nil && !seen[f.Pty.Sid]
		if (console || f.Kind == imagepb.FileKind_FILE_PTY && f.Pty != nil && f.Pty.Master) && f.Pty.Sid != 0 {
			out = append(out, PtySession{Sid: f.Pty.Sid, FgPgid: f.Pty.FgPgid, Index: f.Pty.Index})
			seen[f.Pty.Sid] = true
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sid < out[j].Sid })
	return out
}

// PtyCtty returns our slave fd of the pty that is the controlling terminal
// of session sid (the pair is created on first use), or -1 when the
// session has none. The session leader makes it its terminal (TIOCSCTTY)
// right after setsid, before any other member is created.
func (o *Opener) PtyCtty(sid int32) (int, error) {
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_CONSOLE && f.Pty != nil && f.Pty.Sid == sid && sid != 0 {
			return o.consoleSlave(f.Pty)
		}
	}
	for _, s := range o.PtySessions() {
		if s.Sid != sid {
			continue
		}
		p, err := o.ptyPair(s.Index)
		if err != nil {
			return -1, fmt.Errorf("pty /dev/pts/%d: %w", s.Index, err)
		}
		return p.slave, nil
	}
	return -1, nil
}

// ptyMaster returns the master entry of the pair index.
func (o *Opener) ptyMaster(index uint32) *imagepb.FileEntry {
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_PTY && f.Pty != nil && f.Pty.Master && f.Pty.Index == index {
			return f
		}
	}
	return nil
}

// openPty returns our fd of a pty end, creating its pair on first use.
func (o *Opener) openPty(f *imagepb.FileEntry) (int, error) {
	if f.Pty == nil {
		return -1, errors.New("pty entry without its description")
	}
	p, err := o.ptyPair(f.Pty.Index)
	if err != nil {
		return -1, fmt.Errorf("pty /dev/pts/%d: %w", f.Pty.Index, err)
	}
	if f.Pty.Master {
		return p.master, nil
	}
	if fd, ok := o.open[f.Id]; ok {
		return fd, nil
	}
	return -1, errors.New("slave not opened with its pair")
}

// ptyPair recreates the pair index: the same index, unlocked to open
// every slave of the image (each its own open file, with its flags),
// window size, packet mode, queued data, termios, exclusive and lock state.
func (o *Opener) ptyPair(index uint32) (*ptyPair, error) {
	if p := o.ptys[index]; p != nil {
		return p, nil
	}
	me := o.ptyMaster(index)
	if me == nil {
		return nil, errors.New("its master is not in the image")
	}
	st := me.Pty
	var slaves []*imagepb.FileEntry
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_PTY && f.Pty != nil && !f.Pty.Master && f.Pty.Index == index {
			slaves = append(slaves, f)
		}
	}
	m, err := openPtmxIndex(index, o.openPtmx)
	if err != nil {
		return nil, err
	}
	p := &ptyPair{master: m, slave: -1, st: st}
	o.ptys[index] = p // closed by Finish from now on
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		return nil, fmt.Errorf("unlock: %w", err)
	}
	if len(slaves) > 0 || st.SlaveClosed || len(st.Output) > 0 || len(st.Input) > 0 || st.Sid != 0 || st.Exclusive {
		if p.slave, err = openPeer(m, false, unix.O_NONBLOCK); err != nil {
			return nil, err
		}
	}
	if ws := st.Winsize; ws != nil {
		w := unix.Winsize{Row: uint16(ws.Rows), Col: uint16(ws.Cols), Xpixel: uint16(ws.Xpixel), Ypixel: uint16(ws.Ypixel)}
		if err := unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &w); err != nil {
			return nil, fmt.Errorf("TIOCSWINSZ: %w", err)
		}
	}
	if err := fillPair(m, p.slave, st); err != nil {
		return nil, err
	}
	if st.Packet {
		if err := unix.IoctlSetPointerInt(m, unix.TIOCPKT, 1); err != nil {
			return nil, fmt.Errorf("TIOCPKT: %w", err)
		}
	}
	for _, f := range slaves {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(openFlags(f)))
		if e != 0 {
			return nil, fmt.Errorf("open slave (file %d): TIOCGPTPEER: %w", f.Id, e)
		}
		o.open[f.Id] = int(r)
	}
	if err := restoreSlaveOwner(m, st); err != nil {
		return nil, err
	}
	if st.Exclusive {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(p.slave), unix.TIOCEXCL, 0); e != 0 {
			return nil, fmt.Errorf("TIOCEXCL: %w", e)
		}
	}
	if st.Locked {
		if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 1); err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
	}
	if err := unix.SetNonblock(m, me.Flags&unix.O_NONBLOCK != 0); err != nil {
		return nil, err
	}
	return p, nil
}

// openPtmx opens a new pty master: /dev/ptmx, in the root when there is one
// (a container's: its own devpts instance).
func (o *Opener) openPtmx() (int, error) {
	return o.openPath("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
}

// openPtmxIndex opens /dev/ptmx (through open) until the new pair gets index want: the
// kernel hands out the lowest free index, so the masters opened on the way
// are kept until then (and closed after). When want is taken it waits a
// little (a killed task's pair is released asynchronously), then fails
// naming who holds it.
func openPtmxIndex(want uint32, open func() (int, error)) (int, error) {
	deadline := time.Now().Add(ptyIndexWait)
	for {
		fd, got, err := openPtmxOnce(want, open)
		if err != nil || got == want {
			return fd, err
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("pty index %d is in use%s (the next free index is %d)", want, ptyHolder(want), got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openPtmxOnce opens masters until index want or a higher one comes up;
// it returns the master of want, or -1 and the index it got instead.
func openPtmxOnce(want uint32, open func() (int, error)) (int, uint32, error) {
	var extra []int
	defer func() {
		for _, fd := range extra {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := open()
		if err != nil {
			return -1, 0, fmt.Errorf("open /dev/ptmx (while looking for index %d, %d opened): %w", want, len(extra), err)
		}
		n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		if err != nil {
			unix.Close(fd)
			return -1, 0, fmt.Errorf("TIOCGPTN: %w", err)
		}
		if n == want {
			return fd, n, nil
		}
		if n > want {
			unix.Close(fd)
			return -1, n, nil
		}
		extra = append(extra, fd)
	}
}

// ptyHolder names a process that has pty index open (its slave
// /dev/pts/<index>, or its master: fdinfo shows the tty-index of /dev/ptmx
// files), for errors.
func ptyHolder(index uint32) string {
	slave := hostPts + "/" + strconv.FormatUint(uint64(index), 10)
	master := "tty-index:\t" + strconv.FormatUint(uint64(index), 10) + "\n"
	procs, _ := os.ReadDir("/proc")
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
			if err != nil {
				continue
			}
			what := ""
			switch l {
			case slave:
				what = "its slave " + slave
			case "/dev/ptmx", hostPts + "/ptmx":
				if fi, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name())); err == nil && strings.Contains(string(fi), master) {
					what = "its master"
				}
			}
			if what != "" {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				return fmt.Sprintf(": %s is open in pid %d (%s, fd %s)", what, pid, strings.TrimSpace(string(comm)), e.Name())
			}
		}
	}
	return ""
}

// closePtys closes our fds of the recreated pairs.
func (o *Opener) closePtys(closed map[int]bool) {
	for _, p := range o.ptys {
		for _, fd := range []int{p.master, p.slave} {
			if fd >= 0 && !closed[fd] {
				unix.Close(fd)
				closed[fd] = true
			}
		}
	}
	o.ptys = map[uint32]*ptyPair{}
}

// checkPtys verifies the pty entries of the image: every slave's pair has
// its master in the image, one master per index.
func (o *Opener) checkPtys() error {
	masters := map[uint32]bool{}
	for _, f := range o.files {
		if f.Kind != imagepb.FileKind_FILE_PTY {
			continue
		}
		if f.Pty == nil {
			return fmt.Errorf("file %d: pty entry without its description", f.Id)
		}
		if f.Pty.Master {
			if masters[f.Pty.Index] {
				return fmt.Errorf("file %d: a second master of pty %d", f.Id, f.Pty.Index)
			}
			masters[f.Pty.Index] = true
			if f.Pty.Termios == nil {
				return fmt.Errorf("file %d: pty master %d without its termios", f.Id, f.Pty.Index)
			}
		}
	}
	for _, f := range o.files {
		if f.Kind == imagepb.FileKind_FILE_PTY && !f.Pty.Master && !masters[f.Pty.Index] {
			return fmt.Errorf("file %d: pty slave %d whose master is not in the image", f.Id, f.Pty.Index)
		}
	}
	if len(masters) > 0 {
		if _, err := os.Stat("/dev/ptmx"); err != nil {
			return fmt.Errorf("the image has ptys: %w", err)
		}
	}
	return nil
}
