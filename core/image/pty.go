package image

import (
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Limits of pty entries (files.img, FILE_PTY).
const (
	maxPtyIndex = 1 << 20 // NR_UNIX98_PTY_MAX
	maxPtyCc    = 19      // NCCS of struct termios2
	maxPtyQueue = 1 << 20 // bytes of queued data per direction
)

// ptySid is a session named by a pty master, checked against pstree.img.
type ptySid struct {
	l     loc
	entry int
	sid   int32
	pgid  int32
}

// checkPtys checks the pty entries of files.img on their own: kind and
// description agree, index, termios and queues within the kernel's
// limits, one master per index, a master for every slave; it returns the
// sessions named, for the check against pstree.img.
func checkPtys(l loc, files []*imagepb.FileEntry) ([]ptySid, error) {
	masters := map[uint32]bool{}
	var sids []ptySid
	for i, f := range files {
		p := f.Pty
		if f.Kind == imagepb.FileKind_FILE_CONSOLE {
			if err := checkConsole(l, i, f); err != nil {
				return nil, err
			}
			if p.Sid != 0 {
				sids = append(sids, ptySid{l, i, p.Sid, p.FgPgid})
			}
			continue
		}
		switch {
		case f.Kind != imagepb.FileKind_FILE_PTY && p != nil:
			return nil, l.corrupt(i, -1, "file %d of kind %v has a pty description", f.Id, f.Kind)
		case f.Kind != imagepb.FileKind_FILE_PTY:
			continue
		case p == nil:
			return nil, l.corrupt(i, -1, "pty file %d without its description", f.Id)
		case p.Index >= maxPtyIndex:
			return nil, l.corrupt(i, -1, "pty file %d: index %d out of range", f.Id, p.Index)
		case !p.Master:
			continue
		case masters[p.Index]:
			return nil, l.corrupt(i, -1, "pty file %d: a second master of pty %d", f.Id, p.Index)
		case p.Termios == nil || len(p.Termios.Cc) > maxPtyCc:
			return nil, l.corrupt(i, -1, "pty file %d: master without termios or with more than %d control characters", f.Id, maxPtyCc)
		case len(p.Input) > maxPtyQueue || len(p.Output) > maxPtyQueue:
			return nil, l.corrupt(i, -1, "pty file %d: more than %d bytes of queued data", f.Id, maxPtyQueue)
		case p.Sid < 0 || p.FgPgid < 0 || (p.Sid == 0 && p.FgPgid != 0):
			return nil, l.corrupt(i, -1, "pty file %d: session %d, foreground group %d", f.Id, p.Sid, p.FgPgid)
		case p.Winsize != nil && (p.Winsize.Rows > 0xffff || p.Winsize.Cols > 0xffff || p.Winsize.Xpixel > 0xffff || p.Winsize.Ypixel > 0xffff):
			return nil, l.corrupt(i, -1, "pty file %d: window size out of range", f.Id)
		}
		masters[p.Index] = true
		if p.Sid != 0 {
			sids = append(sids, ptySid{l, i, p.Sid, p.FgPgid})
		}
	}
	for i, f := range files {
		if f.Kind == imagepb.FileKind_FILE_PTY && !f.Pty.Master && !masters[f.Pty.Index] {
			return nil, l.corrupt(i, -1, "pty file %d: slave of pty %d, whose master is not in files.img", f.Id, f.Pty.Index)
		}
	}
	return sids, nil
}

// checkConsole checks a container console entry: a slave, its settings
// within the kernel's limits, no queued data.
func checkConsole(l loc, i int, f *imagepb.FileEntry) error {
	p := f.Pty
	switch {
	case p == nil:
		return l.corrupt(i, -1, "console file %d without its description", f.Id)
	case p.Master || p.Index >= maxPtyIndex:
		return l.corrupt(i, -1, "console file %d: master, or index %d out of range", f.Id, p.Index)
	case p.Termios == nil || len(p.Termios.Cc) > maxPtyCc:
		return l.corrupt(i, -1, "console file %d: without termios or with more than %d control characters", f.Id, maxPtyCc)
	case len(p.Input) > maxPtyQueue:
		return l.corrupt(i, -1, "console file %d: more than %d bytes of queued data", f.Id, maxPtyQueue)
	case len(p.Output) > 0 || p.Packet || p.Locked || p.SlaveClosed:
		return l.corrupt(i, -1, "console file %d: queued output or master state", f.Id)
	case p.Sid < 0 || p.FgPgid < 0 || (p.Sid == 0 && p.FgPgid != 0):
		return l.corrupt(i, -1, "console file %d: session %d, foreground group %d", f.Id, p.Sid, p.FgPgid)
	case p.Winsize != nil && (p.Winsize.Rows > 0xffff || p.Winsize.Cols > 0xffff || p.Winsize.Xpixel > 0xffff || p.Winsize.Ypixel > 0xffff):
		return l.corrupt(i, -1, "console file %d: window size out of range", f.Id)
	}
	return nil
}
