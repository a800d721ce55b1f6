package show

import (
	"strings"

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
