package show

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// locksExtra describes the file locks held through an fd: the task's
// POSIX locks on it and the locks of its open file description.
func locksExtra(f *imagepb.FileEntry, fd *imagepb.FdEntry) string {
	var names []string
	for _, l := range fd.PosixLocks {
		names = append(names, files.LockName(l))
	}
	for _, l := range f.FileLocks {
		names = append(names, files.LockName(l))
	}
	if len(names) == 0 {
		return ""
	}
	return " locks: " + strings.Join(names, ", ")
}

// mapLocksExtra describes the locks of the open file description only a
// mapping of f keeps (f nil: an anonymous mapping).
func mapLocksExtra(f *imagepb.FileEntry) string {
	if f == nil || len(f.MapLocks) == 0 {
		return ""
	}
	var names []string
	for _, l := range f.MapLocks {
		names = append(names, files.LockName(l))
	}
	return " locks of its file: " + strings.Join(names, ", ")
}

// deadPidfdExtra describes a pidfd of a process gone at dump time.
func deadPidfdExtra(f *imagepb.FileEntry) string {
	ws := unix.WaitStatus(f.PidfdExitStatus)
	switch {
	case !f.PidfdExitKnown:
		return " of an exited process"
	case ws.Signaled():
		return fmt.Sprintf(" of an exited process (killed by signal %d)", ws.Signal())
	}
	return fmt.Sprintf(" of an exited process (exit code %d)", ws.ExitStatus())
}
