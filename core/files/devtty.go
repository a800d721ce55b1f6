package files

// /dev/tty and the virtual consoles (/dev/tty0../dev/tty63) of a shell
// job. /dev/tty (5:0) is the opener's controlling terminal: it comes back
// as /dev/tty of the restorer, whose controlling terminal is the one the
// job is restored onto (--shell-job), with its own open flags. A virtual
// console that is not the task's controlling terminal is an ordinary
// character device, reopened by path; one that is, is the job's terminal.

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

var devTtyRdev = unix.Mkdev(5, 0)

// A shell job's terminal (FILE_TTY): recorded by Table.charDevice (with
// --shell-job) and jobTty, restored as the restorer's own terminal.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_TTY, open: (*Opener).openTerminal})
}

// openTerminal gives a shell job's terminal entry the restorer's terminal
// (--shell-job): /dev/tty opened again, or a duplicate of the terminal.
func (o *Opener) openTerminal(f *imagepb.FileEntry) (int, error) {
	if o.terminal < 0 {
		return -1, errors.New("the image holds a shell job's terminal: restore it with --shell-job from a terminal")
	}
	if f.TtyDevTty {
		return openDevTty(f, o.terminal)
	}
	return unix.FcntlInt(uintptr(o.terminal), unix.F_DUPFD_CLOEXEC, 0)
}

// isVT reports a virtual console: major 4, minors 0 (/dev/tty0, the
// foreground console) to 63; 64 and up are serial ports.
func isVT(rdev uint64) bool { return unix.Major(rdev) == 4 && unix.Minor(rdev) < 64 }

// ttyGetDev is TIOCGDEV: the device of the tty behind fd, in the kernel's
// encoding (the one of /proc/PID/stat tty_nr).
func ttyGetDev(fd int) (uint32, error) { return unix.IoctlGetUint32(fd, unix.TIOCGDEV) }

// jobTty takes /dev/tty and the virtual consoles (see the file comment).
// ok is false for other devices, and for a VT that is the task's
// controlling terminal (the caller treats it as the job's terminal).
func (t *Table) jobTty(f *imagepb.FileEntry, pid, fd, cp int, link string, st *unix.Stat_t, opts Options) (id uint32, ok bool, err error) {
	switch {
	case st.Rdev == devTtyRdev:
		if !opts.ShellJob {
			return 0, true, &UnsupportedError{Fd: fd, Link: link, Kind: "terminal /dev/tty (dump with --shell-job to restore the job onto the restorer's terminal)"}
		}
		f.Kind, f.TtyDevTty, f.Path = imagepb.FileKind_FILE_TTY, true, "/dev/tty"
		return t.add("", f), true, nil
	case isVT(st.Rdev):
		dev, err := ttyGetDev(cp)
		if err != nil {
			return 0, true, fmt.Errorf("fd %d (%s): TIOCGDEV: %w", fd, link, err)
		}
		s, err := procfs.ReadStat(pid)
		if err != nil {
			return 0, true, fmt.Errorf("fd %d (%s): %w", fd, link, err)
		}
		if uint32(s.TtyNr) == dev {
			return 0, false, nil // the job's terminal
		}
		if link != fmt.Sprintf("/dev/tty%d", unix.Minor(st.Rdev)) {
			return 0, true, &UnsupportedError{Fd: fd, Link: link, Kind: "virtual console not reachable at its /dev name"}
		}
		f.Kind = imagepb.FileKind_FILE_CHR
		if unix.Minor(st.Rdev) == 0 {
			f.VtDev = dev
		}
		return t.add("", f), true, nil
	}
	return 0, false, nil
}

// openDevTty opens /dev/tty for a shell job's FILE_TTY entry: the
// restorer's controlling terminal, which must be term (the terminal the
// job is restored onto), with the entry's flags.
func openDevTty(f *imagepb.FileEntry, term int) (int, error) {
	want, err := ttyGetDev(term)
	if err != nil {
		return -1, fmt.Errorf("/dev/tty: TIOCGDEV on the restorer's terminal: %w", err)
	}
	fd, err := unix.Open("/dev/tty", openFlags(f), 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) {
			return -1, fmt.Errorf("the job held /dev/tty: the restorer has no controlling terminal: %w", err)
		}
		return -1, fmt.Errorf("open /dev/tty: %w", err)
	}
	if got, err := ttyGetDev(fd); err != nil || got != want {
		unix.Close(fd)
		return -1, fmt.Errorf("the job held /dev/tty: the restorer's controlling terminal (%#x) is not the terminal it restores onto (%#x)", got, want)
	}
	return fd, nil
}

// checkVtDev verifies that a reopened /dev/tty0 is bound to the virtual
// console the dumped file was (the foreground one at open time).
func checkVtDev(f *imagepb.FileEntry, fd int) error {
	if f.VtDev == 0 {
		return nil
	}
	got, err := ttyGetDev(fd)
	if err != nil {
		return fmt.Errorf("%s: TIOCGDEV: %w", f.Path, err)
	}
	if got != f.VtDev {
		return fmt.Errorf("%s: the foreground virtual console changed since the dump (%#x, was %#x)", f.Path, got, f.VtDev)
	}
	return nil
}
