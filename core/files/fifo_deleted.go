package files

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// recreateDeletedFifo makes a new FIFO for a named pipe that was unlinked
// while open, and returns an O_RDWR non-blocking fd of it that is already
// unlinked again. The kernel shows such an fd as "PATH (deleted)", PATH
// the name it had: the FIFO is made at a temporary name in the same
// directory and then given PATH's name before it goes, so /proc/PID/fd
// reads exactly as it did. When PATH is free the FIFO is renamed to it and
// unlinked; when a file has that name now, the two are exchanged
// (renameat2 RENAME_EXCHANGE) and the file renamed back over the FIFO, so
// PATH names that same file before and after (a directory there is an
// error).
func (o *Opener) recreateDeletedFifo(f *imagepb.FileEntry) (int, error) {
	dir, name := filepath.Split(f.Path)
	if name == "" || dir == "" {
		return -1, fmt.Errorf("deleted fifo %q: not an absolute file path", f.Path)
	}
	dfd, err := o.openPath(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("deleted fifo %s: its directory: %w", f.Path, err)
	}
	defer unix.Close(dfd)
	tmp := ""
	for i := 0; i < 100; i++ {
		t := fmt.Sprintf(".%s.ctr-cr-fifo.%d", name, i)
		if err = unix.Mknodat(dfd, t, unix.S_IFIFO|f.Mode&0o7777, 0); err == nil {
			tmp = t
			break
		}
		if err != unix.EEXIST {
			break
		}
	}
	if tmp == "" {
		return -1, fmt.Errorf("deleted fifo %s: mkfifo in %s: %w", f.Path, dir, err)
	}
	hold, err := unix.Openat(dfd, tmp, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return -1, fmt.Errorf("deleted fifo %s: open: %w", f.Path, err)
	}
	unix.Fchmod(hold, f.Mode&0o7777)
	unix.Fchown(hold, int(f.Uid), int(f.Gid))
	if err := takeNameAndUnlink(dfd, tmp, name); err != nil {
		unix.Close(hold)
		unix.Unlinkat(dfd, tmp, 0)
		return -1, fmt.Errorf("deleted fifo %s: %w", f.Path, err)
	}
	return hold, nil
}

// takeNameAndUnlink gives the FIFO at tmp (in directory dfd) the name name
// and unlinks it, leaving what name referred to (if anything) in place.
func takeNameAndUnlink(dfd int, tmp, name string) error {
	err := unix.Renameat2(dfd, tmp, dfd, name, unix.RENAME_NOREPLACE)
	if err == nil {
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			return fmt.Errorf("unlink: %w", err)
		}
		return nil
	}
	if err != unix.EEXIST {
		return fmt.Errorf("rename to its name: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat the file with its name now: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("a directory has its name now")
	}
	if err := unix.Renameat2(dfd, tmp, dfd, name, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("exchange with the file that has its name now: %w", err)
	}
	// that file is at tmp now; renaming it back unlinks the FIFO
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		unix.Renameat2(dfd, tmp, dfd, name, unix.RENAME_EXCHANGE)
		return fmt.Errorf("rename the file that has its name back: %w", err)
	}
	return nil
}
