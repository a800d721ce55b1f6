package files

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Device numbers of pseudo-terminals: /dev/ptmx is 5:2, the slaves of the
// devpts instances are 136:<index> (majors up to 143 are reserved for them).
const (
	ptmxMajor        = 5
	ptmxMinor        = 2
	ptySlaveMajor    = 136
	ptySlaveMajorEnd = 143
	// hostPts is the devpts instance whose ptys are supported.
	hostPts = "/dev/pts"
)

// IsPtyMaster reports whether rdev is /dev/ptmx (a pty master end).
func IsPtyMaster(rdev uint64) bool {
	return unix.Major(rdev) == ptmxMajor && unix.Minor(rdev) == ptmxMinor
}

// PtySlaveIndex returns the index of the pty slave with device number rdev
// (also the tty_nr of /proc/PID/stat), or false when rdev is no pty slave.
func PtySlaveIndex(rdev uint64) (uint32, bool) {
	major := unix.Major(rdev)
	if major < ptySlaveMajor || major > ptySlaveMajorEnd {
		return 0, false
	}
	return (major-ptySlaveMajor)<<20 | unix.Minor(rdev), true
}

// ptyEnd is an end of a pty seen in a task: its entry and our stolen copy.
type ptyEnd struct {
	f       *imagepb.FileEntry
	pid, fd int
	cp      int
	link    string
	devTty  bool // opened as /dev/tty (see devTty)
}

// ptyHeld is a pair whose queued data was read out at dump, to be written
// back if the tasks keep running (PutBackPtys).
type ptyHeld struct {
	st     *imagepb.Pty
	master int // our copy of the master (shares the task's open file)
	slave  int // our own slave, -1 if none
}

// pty records an end of a pseudo-terminal. The pair's state is read once
// every task's fds are known (DumpPtys): whether the master is in the dump
// decides between a pty of the image and a shell job's terminal.
func (t *Table) pty(f *imagepb.FileEntry, pid, fd, cp int, link string, st *unix.Stat_t) (uint32, error) {
	f.Kind = imagepb.FileKind_FILE_PTY
	f.Pty = &imagepb.Pty{}
	if IsPtyMaster(st.Rdev) {
		n, err := unix.IoctlGetUint32(cp, unix.TIOCGPTN)
		if err != nil {
			return 0, fmt.Errorf("fd %d (%s): pty master: TIOCGPTN: %w", fd, link, err)
		}
		f.Pty.Index, f.Pty.Master = n, true
	} else {
		f.Pty.Index, _ = PtySlaveIndex(st.Rdev)
		dev, err := hostPtsDev()
		if err != nil {
			return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		if st.Dev != dev && !t.opts.Console {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "pty slave of another devpts instance than " + hostPts + " (a container's console? checkpoint the container: ctr-cr checkpoint ID)"}
		}
		// (another instance's: a container's console, see DumpPtys)
	}
	id := t.add("", f)
	t.ptys = append(t.ptys, ptyEnd{f: f, pid: pid, fd: fd, cp: cp, link: link})
	return id, nil
}

// containerPts reports whether dev is the devpts instance mounted at
// /dev/pts in pid's root, in a container checkpoint (opts.Console): its
// pairs are made again in the restored container's own devpts.
func (t *Table) containerPts(pid int, dev uint64) bool {
	if !t.opts.Console {
		return false
	}
	var st unix.Stat_t
	return statIn(fmt.Sprintf("/proc/%d/root", pid), hostPts, &st) == nil && st.Dev == dev
}

// hostPtsDev is the device number of the host's devpts instance.
func hostPtsDev() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(hostPts, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", hostPts, err)
	}
	return st.Dev, nil
}

// DumpPtys completes the pty ends recorded by DumpFds, once every task of
// the dump is known and frozen: a slave of another devpts instance than
// the host's is the container's console (FILE_CONSOLE, only with
// opts.Console, see dumpConsole); a slave whose master is not in the dump
// is a shell job's terminal (FILE_TTY, only with opts.ShellJob); for every
// master the pair's state is read and its queued data read out (written
// back by PutBackPtys when the tasks keep running). inDump tells the
// processes of the dump (a pair's session leader must be one of them).
func (t *Table) DumpPtys(opts Options, inDump func(pid int) bool) error {
	masters := map[uint32]*ptyEnd{}
	slaves := map[uint32][]*ptyEnd{}
	if len(t.ptys) == 0 {
		return nil
	}
	hostDev, err := hostPtsDev()
	if err != nil {
		return err
	}
	var devTtys, others []*ptyEnd
	for i := range t.ptys {
		e := &t.ptys[i]
		switch {
		case e.devTty:
			devTtys = append(devTtys, e)
		case !e.f.Pty.Master:
			others = append(others, e)
		default:
			if m := masters[e.f.Pty.Index]; m != nil {
				return &UnsupportedError{Pid: e.pid, Fd: e.fd, Link: e.link, Kind: fmt.Sprintf("pty master %d of another devpts instance (pid %d fd %d has the same index)", e.f.Pty.Index, m.pid, m.fd)}
			}
			masters[e.f.Pty.Index] = e
		}
	}
	// A slave of another devpts instance than the host's whose master is
	// not in the dump is the container's console; with its master in the
	// dump (tmux, script, sshd inside the container) it is a pair of the
	// image like any other.
	for _, e := range others {
		m := masters[e.f.Pty.Index]
		if e.f.Dev != hostDev && (m == nil || m.f.Dev != e.f.Dev) {
			if err := t.dumpConsole(e, opts); err != nil {
				return err
			}
			continue
		}
		slaves[e.f.Pty.Index] = append(slaves[e.f.Pty.Index], e)
	}
	for _, e := range devTtys {
		if err := t.dumpConsole(e, opts); err != nil {
			return err
		}
	}
	for idx, ss := range slaves {
		if masters[idx] != nil {
			continue
		}
		for _, s := range ss {
			if !opts.ShellJob {
				return &UnsupportedError{Pid: s.pid, Fd: s.fd, Link: s.link, Kind: "terminal whose pty master is not in the dump (dump with --shell-job to restore the job onto the restorer's terminal)"}
			}
			s.f.Kind, s.f.Pty = imagepb.FileKind_FILE_TTY, nil
		}
	}
	if len(masters) > 0 {
		devs := map[uint64]bool{}
		for _, ss := range slaves {
			for _, e := range ss {
				devs[e.f.Dev] = true
			}
		}
		if err := ptysHeldOutside(masters, devs, inDump); err != nil {
			return err
		}
	}
	idxs := make([]uint32, 0, len(masters))
	for idx := range masters {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
	for _, idx := range idxs {
		m := masters[idx]
		if err := t.dumpPair(m, len(slaves[idx]) > 0, inDump); err != nil {
			return fmt.Errorf("pid %d: fd %d (pty master of /dev/pts/%d): %w", m.pid, m.fd, idx, err)
		}
	}
	return nil
}

// dumpPair reads the state of the pair whose master is m and reads out its
// queued data. slaveHeld: a task of the dump holds the slave.
func (t *Table) dumpPair(m *ptyEnd, slaveHeld bool, inDump func(pid int) bool) error {
	p := m.f.Pty
	fd := m.cp
	var err error
	if p.Termios, err = getTermios(fd); err != nil {
		return err
	}
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return fmt.Errorf("TIOCGWINSZ: %w", err)
	}
	p.Winsize = &imagepb.PtyWinsize{Rows: uint32(ws.Row), Cols: uint32(ws.Col), Xpixel: uint32(ws.Xpixel), Ypixel: uint32(ws.Ypixel)}
	pkt, err := unix.IoctlGetInt(fd, unix.TIOCGPKT)
	if err != nil {
		return fmt.Errorf("TIOCGPKT: %w", err)
	}
	lck, err := unix.IoctlGetInt(fd, unix.TIOCGPTLCK)
	if err != nil {
		return fmt.Errorf("TIOCGPTLCK: %w", err)
	}
	p.Packet, p.Locked = pkt != 0, lck != 0
	if err := dumpSlaveOwner(fd, p); err != nil {
		return err
	}
	// The session and foreground group of the slave, asked through the
	// master (allowed to anyone holding it).
	if sid, err := unix.IoctlGetInt(fd, unix.TIOCGSID); err == nil && sid > 0 {
		p.Sid = int32(sid)
		if pg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil {
			p.FgPgid = int32(pg)
		}
		if !inDump(sid) {
			return &UnsupportedError{Fd: m.fd, Pid: m.pid, Link: m.link, Kind: fmt.Sprintf("pty that is the controlling terminal of session %d, whose leader is not in the dump", sid)}
		}
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	p.SlaveClosed = !slaveHeld && pfd[0].Revents&unix.POLLHUP != 0
	if !slaveHeld && !p.SlaveClosed {
		return nil // never opened: see imagepb.Pty on queued data
	}
	h := &ptyHeld{st: p, master: fd, slave: -1}
	if h.slave, err = openPeer(fd, p.Locked, unix.O_NONBLOCK); err != nil {
		return err
	}
	t.held = append(t.held, h.slave)
	var st unix.Stat_t
	if err := unix.Fstat(h.slave, &st); err != nil {
		return fmt.Errorf("fstat slave: %w", err)
	}
	if dev, err := hostPtsDev(); err != nil {
		return err
	} else if st.Dev != dev && !t.containerPts(m.pid, st.Dev) {
		return &UnsupportedError{Pid: m.pid, Fd: m.fd, Link: m.link, Kind: "pty master of another devpts instance than " + hostPts}
	}
	excl, err := unix.IoctlGetInt(h.slave, unix.TIOCGEXCL)
	if err != nil {
		return fmt.Errorf("TIOCGEXCL: %w", err)
	}
	p.Exclusive = excl != 0
	t.ptyHeld = append(t.ptyHeld, h)
	return withPacketOff(fd, p.Packet, func() error {
		if p.Output, err = drainMaster(fd); err != nil {
			return fmt.Errorf("read queued output: %w", err)
		}
		if p.Input, err = drainSlave(h.slave, fd, p.Termios); err != nil {
			return fmt.Errorf("read queued input: %w", err)
		}
		return nil
	})
}

// PutBackPtys writes the data read out of the ptys at dump back into them,
// in order, for tasks that keep running (--leave-running, failed dump).
// The tasks must still be frozen.
func (t *Table) PutBackPtys() error {
	var errs []error
	if err := t.putBackConsoles(); err != nil {
		errs = append(errs, err)
	}
	for _, h := range t.ptyHeld {
		if len(h.st.Input) == 0 && len(h.st.Output) == 0 {
			continue
		}
		if err := withPacketOff(h.master, h.st.Packet, func() error { return fillPair(h.master, h.slave, h.st) }); err != nil {
			errs = append(errs, fmt.Errorf("pty /dev/pts/%d: put queued data back: %w", h.st.Index, err))
		}
	}
	t.ptyHeld = nil
	return errors.Join(errs...)
}

// ptysHeldOutside fails when a process outside the dump (and not us)
// holds an end of a pair of the dump: its slave (/dev/pts/<index> of the
// host's devpts), or its master's open file (/dev/ptmx with that
// tty-index in fdinfo, the same open file as the task's by kcmp). After
// restore it would be left with the old pair.
func ptysHeldOutside(masters map[uint32]*ptyEnd, slaveDevs map[uint64]bool, inDump func(pid int) bool) error {
	dev, err := hostPtsDev()
	if err != nil {
		return err
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	self := os.Getpid()
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == self || inDump(pid) {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, e := range fds {
			path := fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())
			l, err := os.Readlink(path)
			if err != nil {
				continue
			}
			var held *ptyEnd
			what := "slave"
			switch {
			case strings.HasPrefix(l, hostPts+"/"):
				var st unix.Stat_t
				if unix.Stat(path, &st) != nil || (st.Dev != dev && !slaveDevs[st.Dev]) {
					continue
				}
				if idx, ok := PtySlaveIndex(st.Rdev); ok {
					held = masters[idx]
				}
			case l == "/dev/ptmx" || l == hostPts+"/ptmx":
				fi, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
				if err != nil {
					continue
				}
				for _, line := range strings.Split(string(fi), "\n") {
					if v, ok := strings.CutPrefix(line, "tty-index:"); ok {
						if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
							held = masters[uint32(n)]
						}
					}
				}
				fd, _ := strconv.Atoi(e.Name())
				if held != nil && !sameFile(pid, fd, held.pid, held.fd) {
					held = nil
				}
				what = "master"
			}
			if held != nil {
				return &UnsupportedError{Pid: held.pid, Fd: held.fd, Link: held.link, Kind: fmt.Sprintf("pty whose %s is also held by pid %d (fd %s) outside the dump", what, pid, e.Name())}
			}
		}
	}
	return nil
}

// sameFile reports whether fd1 of pid1 and fd2 of pid2 are one open file.
func sameFile(pid1, fd1, pid2, fd2 int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), 0 /*KCMP_FILE*/, uintptr(fd1), uintptr(fd2), 0)
	return e == 0 && r == 0
}

// PtySession returns the session whose controlling terminal the pty with
// index is, when its master is in the dump (DumpPtys done).
func (t *Table) PtySession(index uint32) (sid int32, inDump bool) {
	for _, e := range t.ptys {
		if e.f.Pty != nil && e.f.Pty.Master && e.f.Pty.Index == index {
			return e.f.Pty.Sid, true
		}
	}
	return 0, false
}
