package files

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// openPeerPath opens the slave inode of the pty whose master is fd as an
// O_PATH file (TIOCGPTPEER). No tty is opened: the pair's state does not
// change (the master sees no slave open or hang-up), and a locked pair
// works too.
func openPeerPath(fd int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, uintptr(unix.O_PATH|unix.O_CLOEXEC))
	if e != 0 {
		return -1, fmt.Errorf("slave inode (TIOCGPTPEER O_PATH): %w", e)
	}
	return int(r), nil
}

// dumpSlaveOwner records the owner and mode of the slave inode of the
// pair whose master is fd (login and sshd chown it to the user).
func dumpSlaveOwner(fd int, p *imagepb.Pty) error {
	pfd, err := openPeerPath(fd)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return fmt.Errorf("fstat slave inode: %w", err)
	}
	p.SlaveUid, p.SlaveGid, p.SlaveMode = st.Uid, st.Gid, st.Mode
	return nil
}

// restoreSlaveOwner gives the slave inode of the new pair (master fd) the
// dumped owner and permission bits; images without them (SlaveMode 0)
// keep what devpts gave the restorer.
func restoreSlaveOwner(fd int, p *imagepb.Pty) error {
	if p.SlaveMode == 0 {
		return nil
	}
	pfd, err := openPeerPath(fd)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Fchownat(pfd, "", int(p.SlaveUid), int(p.SlaveGid), unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown slave to %d:%d: %w", p.SlaveUid, p.SlaveGid, err)
	}
	// fchmod refuses O_PATH files; chmod through the fd's /proc link
	// reaches the same inode.
	if err := unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", pfd), p.SlaveMode&0o7777); err != nil {
		return fmt.Errorf("chmod slave to %#o: %w", p.SlaveMode&0o7777, err)
	}
	return nil
}
