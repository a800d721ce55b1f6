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
