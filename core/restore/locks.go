package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// restoreLocks takes again, by syscalls injected into the task, the locks
// only it can own: its POSIX record locks (owned by its fd table, each
// taken through the fd of the open file it was taken on) and the flock
// locks it took itself (so that /proc/locks names the same pid). The
// tree's other open-file locks are taken by files.Opener.TakeFileLocks.
// The task's fds must be installed (by itself or the task sharing its fd
// table).
func (r *restorer) restoreLocks() error {
	for _, e := range r.pr.fds {
		for _, fl := range e.PosixLocks {
			if fl.Kind != imagepb.FileLockKind_FILE_LOCK_POSIX {
				return fmt.Errorf("fd %d: %s among the POSIX locks", e.Fd, files.LockName(fl))
			}
			b, err := files.FlockStruct(fl)
			if err != nil {
				return fmt.Errorf("fd %d: %w", e.Fd, err)
			}
			addr, err := r.put(0, b)
			if err != nil {
				return err
			}
			if _, err := r.call(0, "fcntl(F_SETLK)", unix.SYS_FCNTL, uint64(e.Fd), unix.F_SETLK, addr); err != nil {
				return fmt.Errorf("fd %d: %s: %w", e.Fd, files.LockName(fl), err)
			}
		}
		f, err := r.opener.Entry(e.FileId)
		if err != nil {
			return err
		}
		for _, fl := range f.FileLocks {
			if fl.Kind != imagepb.FileLockKind_FILE_LOCK_FLOCK || fl.Pid != r.pr.pst.Pid {
				continue
			}
			if _, err := r.call(0, "flock", unix.SYS_FLOCK, uint64(e.Fd), uint64(files.FlockOp(fl))); err != nil {
				return fmt.Errorf("fd %d: %s: %w", e.Fd, files.LockName(fl), err)
			}
		}
	}
	return nil
}
