package files

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_CONSOLE, open: (*Opener).openConsoleEntry, describe: describeConsole})
}

// A container's console (process.terminal): the runtime's init made a pty
// in the container's own devpts, gave the slave to the process as its
// stdio and controlling terminal, and sent the master over the console
// socket to whoever runs the container. The master is not in the dump,
// and the pair cannot be recreated (its index in another devpts instance,
// its master with someone else); at restore the runtime makes a new pair
// in the new container's devpts and sends its master over the console
// socket given to the restore. The slave's entries (FILE_CONSOLE) are
// reopened there by path with the dumped line settings and window size,
// and the input typed ahead (written to the master, not read yet) is put
// back into the new console. Output not read by the master's holder yet
// is not ours to read, and is lost.

// dumpConsole records e, a slave of a devpts instance that is not the
// host's whose master is not in the dump, as the container's console: it
// must be /dev/pts/<index> in the root of the process holding it. An end
// opened as /dev/tty must be a console recorded so (by the task's other
// fds) already.
func (t *Table) dumpConsole(e *ptyEnd, opts Options) error {
	p := e.f.Pty
	unsup := func(why string) error {
		return &UnsupportedError{Pid: e.pid, Fd: e.fd, Link: e.link, Kind: why}
	}
	if !opts.Console {
		return unsup("pty slave of another devpts instance than " + hostPts + " (a container's console: checkpoint the container, whose config.json has process.terminal)")
	}
	path := fmt.Sprintf("/dev/pts/%d", p.Index)
	if e.devTty {
		if !t.hasConsole(p.Index) {
			return unsup(fmt.Sprintf("/dev/tty of a terminal (pty %d) that is not the container's console", p.Index))
		}
		path = e.link
	} else {
		var st unix.Stat_t
		if err := statIn(fmt.Sprintf("/proc/%d/root", e.pid), path, &st); err != nil || st.Dev != e.f.Dev || st.Rdev != e.f.Rdev {
			return unsup(fmt.Sprintf("pty slave that is not the container's console %s (another devpts instance)", path))
		}
	}
	var err error
	if p.Termios, err = getTermios(e.cp); err != nil {
		return fmt.Errorf("pid %d: fd %d (console %s): %w", e.pid, e.fd, path, err)
	}
	ws, err := unix.IoctlGetWinsize(e.cp, unix.TIOCGWINSZ)
	if err != nil {
		return fmt.Errorf("pid %d: fd %d (console %s): TIOCGWINSZ: %w", e.pid, e.fd, path, err)
	}
	p.Winsize = &imagepb.PtyWinsize{Rows: uint32(ws.Row), Cols: uint32(ws.Col), Xpixel: uint32(ws.Xpixel), Ypixel: uint32(ws.Ypixel)}
	e.f.Kind, e.f.Path = imagepb.FileKind_FILE_CONSOLE, path
	if h := t.consoleHeld[p.Index]; h != nil {
		p.Input = h.st.Input
		return nil
	}
	// the runtime makes one console at restore: a second pty of the
	// container's devpts without its master (one of `runc exec -t`) could
	// not come back, and the container must not be stopped for it
	for idx := range t.consoleHeld {
		return unsup(fmt.Sprintf("pty slave %s of the container's devpts whose master is not in the dump, besides the console /dev/pts/%d (a terminal of `exec -t`?)", path, idx))
	}
	// the first end of this console: its input typed ahead is read out
	// (put back by PutBackPtys if the tasks run on, also when reading
	// failed half-way)
	h := &ptyHeld{st: p, master: -1, slave: e.cp}
	if t.consoleHeld == nil {
		t.consoleHeld = map[uint32]*ptyHeld{}
	}
	t.consoleHeld[p.Index] = h
	p.Input, err = drainSlave(e.cp, e.cp, p.Termios)
	if err != nil {
		return fmt.Errorf("pid %d: fd %d (console %s): read the input typed ahead: %w", e.pid, e.fd, path, err)
	}
	// TIOCSTI cannot queue more than the line discipline holds (4095
	// bytes): more would be lost silently when it is put back
	if len(p.Input) > maxConsoleInput {
		return fmt.Errorf("pid %d: fd %d (console %s): %d bytes typed ahead, more than the %d a console takes back", e.pid, e.fd, path, len(p.Input), maxConsoleInput)
	}
	return nil
}

// maxConsoleInput is the most input typed ahead that a console can be
// given back: N_TTY's buffer holds 4096 bytes, one kept free.
const maxConsoleInput = 4095

// putBackConsoles puts the input read out of the consoles back, for tasks
// that run on.
func (t *Table) putBackConsoles() error {
	var errs []error
	for idx, h := range t.consoleHeld {
		if err := stuffInput(h.slave, h.st); err != nil {
			errs = append(errs, fmt.Errorf("console /dev/pts/%d: put the input typed ahead back: %w", idx, err))
		}
	}
	t.consoleHeld = nil
	return errors.Join(errs...)
}

// stuffInput puts st.Input into the input queue of the tty fd as if typed
// (TIOCSTI: root may do it on any tty), with the line discipline raw
// meanwhile (not echoed nor interpreted again), then sets st.Termios.
func stuffInput(fd int, st *imagepb.Pty) error {
	final := termiosOf(st.Termios)
	if len(st.Input) == 0 {
		return setTermios(fd, final)
	}
	if err := setTermios(fd, rawInput(final)); err != nil {
		return err
	}
	for i := range st.Input {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSTI, uintptr(unsafe.Pointer(&st.Input[i]))); e != 0 {
			setTermios(fd, final)
			return fmt.Errorf("TIOCSTI (byte %d of %d): %w", i, len(st.Input), e)
		}
	}
	return setTermios(fd, final)
}

// hasConsole reports whether a console with index is recorded.
func (t *Table) hasConsole(index uint32) bool {
	for _, e := range t.ptys {
		if e.f.Kind == imagepb.FileKind_FILE_CONSOLE && e.f.Pty.Index == index && !e.devTty {
			return true
		}
	}
	return false
}

// devTty takes a file opened as /dev/tty (5:0, the opener's controlling
// terminal then) when the dump may hold a container's console: TIOCGDEV
// names the terminal behind it; a pty slave is recorded as a pty end,
// to be the console (by DumpPtys: its index must be a console's of the
// dump, which is the controlling terminal in a container; restored as
// /dev/pts/<index>, the file's name then being that). ok is false for
// anything else, left to the caller.
func (t *Table) devTty(f *imagepb.FileEntry, pid, fd, cp int, link string, st *unix.Stat_t, opts Options) (id uint32, ok bool, err error) {
	if !opts.Console || st.Rdev != unix.Mkdev(5, 0) {
		return 0, false, nil
	}
	dev, err := unix.IoctlGetUint32(cp, unix.TIOCGDEV)
	if err != nil {
		return 0, false, nil
	}
	idx, slave := PtySlaveIndex(uint64(unix.Mkdev(uint32(dev>>8)&0xfff, dev&0xff|(dev>>12)&^0xff)))
	if !slave {
		return 0, false, nil
	}
	f.Kind = imagepb.FileKind_FILE_PTY
	f.Pty = &imagepb.Pty{Index: idx}
	id = t.add("", f)
	t.ptys = append(t.ptys, ptyEnd{f: f, pid: pid, fd: fd, cp: cp, link: link, devTty: true})
	return id, true, nil
}

// statIn stats path (following symlinks) in root, never leaving it.
func statIn(root, path string, st *unix.Stat_t) error {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	o := &Opener{rootFd: rfd}
	return o.statPath(path, st)
}

// ConsoleSession records that the container's console with index is the
// controlling terminal of session sid, with foreground group fg (pids as
// the dump sees them), for tasks whose tty_nr names it. It reports false
// when the dump has no console with that index.
func (t *Table) ConsoleSession(index uint32, sid, fg int32) (bool, error) {
	found := false
	for _, e := range t.ptys {
		p := e.f.Pty
		if e.f.Kind != imagepb.FileKind_FILE_CONSOLE || p.Index != index {
			continue
		}
		if p.Sid != 0 && p.Sid != sid {
			return true, fmt.Errorf("console /dev/pts/%d: the controlling terminal of sessions %d and %d", index, p.Sid, sid)
		}
		p.Sid, p.FgPgid, found = sid, fg, true
	}
	return found, nil
}

// consoleSlave returns our fd of the console with index in the root (one
// per index, closed by Finish), its dumped settings applied on first use.
func (o *Opener) consoleSlave(st *imagepb.Pty) (int, error) {
	if fd, ok := o.consoles[st.Index]; ok {
		return fd, nil
	}
	fd, err := o.openConsole(st.Index, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if err != nil {
		return -1, err
	}
	o.consoles[st.Index] = fd
	if ws := st.Winsize; ws != nil {
		w := unix.Winsize{Row: uint16(ws.Rows), Col: uint16(ws.Cols), Xpixel: uint16(ws.Xpixel), Ypixel: uint16(ws.Ypixel)}
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &w); err != nil {
			return -1, fmt.Errorf("console /dev/pts/%d: TIOCSWINSZ: %w", st.Index, err)
		}
	}
	if err := stuffInput(fd, st); err != nil {
		return -1, fmt.Errorf("console /dev/pts/%d: %w", st.Index, err)
	}
	return fd, nil
}

// openConsole opens /dev/pts/<index> in the root and checks that it is
// that pty's slave.
func (o *Opener) openConsole(index uint32, flags int) (int, error) {
	if o.rootFd <= 0 {
		return -1, errors.New("the image holds a container's console: restore the container (ctr-cr restore --console-socket PATH BUNDLE)")
	}
	path := fmt.Sprintf("/dev/pts/%d", index)
	flags |= unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		flags |= unix.O_NOCTTY // (openat2 refuses it beside O_PATH)
	}
	fd, err := o.openPath(path, flags, 0)
	if err != nil {
		return -1, fmt.Errorf("console %s in the container (restore with --console-socket, the runtime makes it): %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if n, ok := PtySlaveIndex(st.Rdev); !ok || n != index || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		unix.Close(fd)
		return -1, fmt.Errorf("console %s in the container is not that pty's slave", path)
	}
	return fd, nil
}

// openConsoleEntry opens a console entry: its own open file (with its
// flags) of the console, whose settings are applied first.
func (o *Opener) openConsoleEntry(f *imagepb.FileEntry) (int, error) {
	if f.Pty == nil || f.Pty.Termios == nil {
		return -1, errors.New("console entry without its description")
	}
	if _, err := o.consoleSlave(f.Pty); err != nil {
		return -1, err
	}
	return o.openConsole(f.Pty.Index, openFlags(f))
}

// checkConsoles verifies that the consoles of the image exist in the root
// (the runtime made them, for --console-socket).
func (o *Opener) checkConsoles() error {
	for _, f := range o.files {
		if f.Kind != imagepb.FileKind_FILE_CONSOLE {
			continue
		}
		if f.Pty == nil || f.Pty.Termios == nil {
			return fmt.Errorf("file %d: console entry without its description", f.Id)
		}
		fd, err := o.openConsole(f.Pty.Index, unix.O_PATH)
		if err != nil {
			return err
		}
		unix.Close(fd)
	}
	return nil
}

// closeConsoles closes our fds of the consoles.
func (o *Opener) closeConsoles(closed map[int]bool) {
	for _, fd := range o.consoles {
		if !closed[fd] {
			unix.Close(fd)
			closed[fd] = true
		}
	}
	o.consoles = map[uint32]int{}
}
