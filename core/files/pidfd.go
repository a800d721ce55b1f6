package files

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// Pidfds (FILE_PIDFD): of a process of the dump (pidfd_pid), or of one
// that had exited and been reaped at dump time (pidfd_dead.go).
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_PIDFD, anonInode: "pidfd",
		dump: (*Table).pidfd, open: (*Opener).openPidfd, describe: describePidfd})
}

// pidfd records a pidfd; the process it refers to must be in the dump (a
// pidfd of a live outside process cannot be recreated), or have exited and
// been reaped (deadPidfd).
func (t *Table) pidfd(f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
	fd, cp, link, fi := d.fd, d.cp, d.link, d.fi
	f.Kind = imagepb.FileKind_FILE_PIDFD
	v, ok := fi.Field("Pid")
	if !ok {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "pidfd without a Pid in fdinfo"}
	}
	pid, err := strconv.Atoi(strings.Fields(v)[0])
	if err == nil && pid == -1 {
		return t.deadPidfd(f, fd, cp, link)
	}
	if err != nil || pid <= 0 {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "pidfd of an exited process"}
	}
	f.PidfdPid = int32(pid)
	return t.add("", f), nil
}

// CheckPidfds verifies that every pidfd refers to a process of the dump.
func (t *Table) CheckPidfds(inDump func(pid int32) bool) error {
	for _, f := range t.Files {
		if f.Kind == imagepb.FileKind_FILE_PIDFD && !f.PidfdDead && !inDump(f.PidfdPid) {
			return &UnsupportedError{Fd: -1, Link: fmt.Sprintf("pidfd of pid %d", f.PidfdPid), Kind: "pidfd of a process outside the dump"}
		}
	}
	return nil
}

// openPidfd opens a pidfd of the restored process that stands for the
// dumped one, with its PIDFD_NONBLOCK/PIDFD_THREAD flags.
func (o *Opener) openPidfd(f *imagepb.FileEntry) (int, error) {
	if f.PidfdDead {
		return o.openDeadPidfd(f)
	}
	if o.pidOf == nil {
		return -1, errors.New("pidfd: no process map")
	}
	pid, ok := o.pidOf(f.PidfdPid)
	if !ok {
		return -1, fmt.Errorf("pidfd of pid %d: not a restored process", f.PidfdPid)
	}
	fl := int(f.Flags) & (unix.O_NONBLOCK | unix.O_EXCL) // PIDFD_NONBLOCK, PIDFD_THREAD
	return unix.PidfdOpen(pid, fl)
}

// describePidfd names the process a pidfd refers to, or how the exited
// one ended.
func describePidfd(f *imagepb.FileEntry) string {
	if !f.PidfdDead {
		return fmt.Sprintf(" of pid %d", f.PidfdPid)
	}
	ws := unix.WaitStatus(f.PidfdExitStatus)
	switch {
	case !f.PidfdExitKnown:
		return " of an exited process"
	case ws.Signaled():
		return fmt.Sprintf(" of an exited process (killed by signal %d)", ws.Signal())
	}
	return fmt.Sprintf(" of an exited process (exit code %d)", ws.ExitStatus())
}
