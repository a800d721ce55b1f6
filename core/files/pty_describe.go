package files

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Pseudo-terminals (FILE_PTY): pairs of the host's devpts whose master is in
// the image, recorded by Table.pty and DumpPtys (pty.go, pty_io.go,
// pty_owner.go), recreated by openPty (pty_restore.go). A container's
// console (FILE_CONSOLE) is in console.go; a shell job's terminal
// (FILE_TTY) in devtty.go.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_PTY, open: (*Opener).openPty, describe: describePty})
}

// describePty names a pty end: which pair, and on the master the pair's
// line settings, window size, modes, queued bytes and session.
func describePty(f *imagepb.FileEntry) string {
	p := f.Pty
	switch {
	case p == nil:
		return ""
	case !p.Master:
		return fmt.Sprintf(" slave of /dev/pts/%d", p.Index)
	}
	parts := ptySettings(p)
	for _, m := range []struct {
		on   bool
		name string
	}{{p.Packet, "packet"}, {p.Locked, "locked"}, {p.Exclusive, "exclusive"}, {p.SlaveClosed, "slave closed"}} {
		if m.on {
			parts = append(parts, m.name)
		}
	}
	parts = append(parts, fmt.Sprintf("queued %dB in (to the slave) %dB out (to the master)", len(p.Input), len(p.Output)))
	parts = append(parts, ptySession(p)...)
	return fmt.Sprintf(" master of /dev/pts/%d: %s", p.Index, strings.Join(parts, ", "))
}

// describeConsole names a container's console with its settings and
// session.
func describeConsole(f *imagepb.FileEntry) string {
	p := f.Pty
	if p == nil {
		return ""
	}
	parts := append(ptySettings(p), ptySession(p)...)
	return fmt.Sprintf(" container console /dev/pts/%d (master outside): %s", p.Index, strings.Join(parts, ", "))
}

// ptySettings names a pty's line mode and window size.
func ptySettings(p *imagepb.Pty) []string {
	var parts []string
	if t := p.Termios; t != nil {
		mode := "raw"
		if t.Lflag&unix.ICANON != 0 {
			mode = "canonical"
		} else if len(t.Cc) > unix.VTIME {
			mode += fmt.Sprintf(" (VMIN %d VTIME %d)", t.Cc[unix.VMIN], t.Cc[unix.VTIME])
		}
		if t.Lflag&unix.ECHO != 0 {
			mode += " echo"
		}
		if t.Lflag&unix.ISIG != 0 {
			mode += " isig"
		}
		parts = append(parts, mode)
	}
	if w := p.Winsize; w != nil {
		parts = append(parts, fmt.Sprintf("%dx%d", w.Cols, w.Rows))
	}
	return parts
}

// ptySession names the session whose controlling terminal a pty is.
func ptySession(p *imagepb.Pty) []string {
	if p.Sid == 0 {
		return nil
	}
	return []string{fmt.Sprintf("controlling terminal of session %d, foreground group %d", p.Sid, p.FgPgid)}
}
