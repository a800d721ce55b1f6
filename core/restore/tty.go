package restore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// acquireCtty makes the pty of the image that was the controlling terminal
// of r's session r's terminal again. r has just become the session leader
// (setsid) and no other member exists yet: they inherit it when forked.
func (t *tree) acquireCtty(r *restorer) error {
	pe := r.pr.pst
	fd, err := t.opener.PtyCtty(pe.Sid)
	if err != nil || fd < 0 {
		if err != nil {
			return fmt.Errorf("pid %d: controlling terminal: %w", pe.Pid, err)
		}
		return nil
	}
	tfd, err := r.install(fd)
	if err != nil {
		return fmt.Errorf("pid %d: controlling terminal: %w", pe.Pid, err)
	}
	if _, err := r.call(0, "ioctl(TIOCSCTTY)", unix.SYS_IOCTL, tfd, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("pid %d: controlling terminal: %w", pe.Pid, err)
	}
	if _, err := r.call(0, "close", unix.SYS_CLOSE, tfd); err != nil {
		return fmt.Errorf("pid %d: %w", pe.Pid, err)
	}
	return nil
}

// setForeground gives every pty that is a session's controlling terminal
// its dumped foreground process group, once all groups exist: TIOCSPGRP
// injected into the session leader (only a member of the session may set
// it). A group that has no process in the image any more is left out with
// a warning (the leader's group stays in the foreground).
func (t *tree) setForeground() error {
	for _, s := range t.opener.PtySessions() {
		leader := t.byPid[s.Sid]
		if leader == nil || leader.pr.core == nil || leader.exited {
			return fmt.Errorf("pty /dev/pts/%d: the leader of its session %d is not a live process of the image", s.Index, s.Sid)
		}
		if s.FgPgid == 0 || s.FgPgid == leader.pr.pst.Pgid {
			continue // TIOCSCTTY made the leader's group the foreground
		}
		vpgid, ok := t.groupVpid(s.FgPgid, s.Sid)
		if !ok {
			t.warnings = append(t.warnings, fmt.Sprintf("pty /dev/pts/%d: foreground process group %d has no live process in session %d: the session leader's group is in the foreground instead", s.Index, s.FgPgid, s.Sid))
			continue
		}
		fd, err := t.opener.PtyCtty(s.Sid)
		if err != nil {
			return err
		}
		tfd, err := leader.install(fd)
		if err != nil {
			return fmt.Errorf("pid %d: %w", s.Sid, err)
		}
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, uint32(vpgid))
		addr, err := leader.put(0, b)
		if err != nil {
			return err
		}
		if _, err := leader.call(0, fmt.Sprintf("ioctl(TIOCSPGRP, %d)", vpgid), unix.SYS_IOCTL, tfd, unix.TIOCSPGRP, addr); err != nil {
			return fmt.Errorf("pid %d: pty /dev/pts/%d: foreground group %d: %w", s.Sid, s.Index, s.FgPgid, err)
		}
		if _, err := leader.call(0, "close", unix.SYS_CLOSE, tfd); err != nil {
			return fmt.Errorf("pid %d: %w", s.Sid, err)
		}
	}
	return nil
}

// groupVpid returns the number of process group pgid of session sid as
// the restored tasks see it, when a live task of the image is in it.
func (t *tree) groupVpid(pgid, sid int32) (int32, bool) {
	for _, r := range t.tasks {
		pe := r.pr.pst
		if pe.Pgid != pgid || pe.Sid != sid || r.pr.core == nil || r.exited {
			continue
		}
		if l := t.byPid[pgid]; l != nil {
			return int32(l.nsPid), true
		}
		if t.pidns {
			return 0, false // a recreated group is refused in a pid namespace
		}
		return pgid, true
	}
	return 0, false
}
