package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// pidfdInfo is struct pidfd_info up to exit_code (PIDFD_INFO_SIZE_VER0).
type pidfdInfo [64]byte

const (
	pidfdInfoExit = 1 << 3 // PIDFD_INFO_EXIT
	// pidfdGetInfo is PIDFD_GET_INFO, _IOWR(0xFF, 11, struct pidfd_info),
	// with the VER0 size.
	pidfdGetInfo = 3<<30 | 64<<16 | 0xFF<<8 | 11
	waitCoreFlag = 0x80 // WCOREFLAG of a wait status
)

// pidfdExitStatus asks a pidfd of an exited process for the wait status
// the process ended with (PIDFD_GET_INFO, PIDFD_INFO_EXIT: Linux 6.15+).
// known is false when the kernel does not tell.
func pidfdExitStatus(fd int) (status int32, known bool, err error) {
	var info pidfdInfo
	binary.LittleEndian.PutUint64(info[0:], pidfdInfoExit)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), pidfdGetInfo, uintptr(unsafe.Pointer(&info[0])))
	switch {
	case e == unix.ENOTTY || e == unix.EINVAL || e == unix.ESRCH:
		return 0, false, nil
	case e != 0:
		return 0, false, fmt.Errorf("PIDFD_GET_INFO: %w", e)
	}
	if binary.LittleEndian.Uint64(info[0:])&pidfdInfoExit == 0 {
		return 0, false, nil
	}
	return int32(binary.LittleEndian.Uint32(info[60:])), true, nil
}

// deadPidfd records a pidfd whose process exited and was reaped (fdinfo
// "Pid: -1") with the status it ended with. A process that dumped core
// is refused: restore could not end its stand-in the same way.
func (t *Table) deadPidfd(f *imagepb.FileEntry, fd, cp int, link string) (uint32, error) {
	status, known, err := pidfdExitStatus(cp)
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): pidfd of an exited process: %w", fd, link, err)
	}
	if known && status&waitCoreFlag != 0 {
		return 0, &UnsupportedError{Fd: fd, Link: link, Kind: "pidfd of a process that dumped core"}
	}
	f.PidfdDead, f.PidfdExitStatus, f.PidfdExitKnown = true, status, known
	return t.add("", f), nil
}

// CheckDeadPidfd verifies what a dead pidfd's stand-in must do: exit
// with a code, or die of a signal other than a core-dumping one.
func CheckDeadPidfd(f *imagepb.FileEntry) error {
	ws := unix.WaitStatus(f.PidfdExitStatus)
	switch {
	case !f.PidfdExitKnown:
		return nil
	case ws.Exited():
		return nil
	case ws.Signaled() && !ws.CoreDump() && ws.Signal() > 0 && ws.Signal() < 65:
		return nil
	}
	return errors.New("pidfd of an exited process: bad exit status in the image")
}

// openDeadPidfd makes the pidfd of a process that was gone at dump time.
func (o *Opener) openDeadPidfd(f *imagepb.FileEntry) (int, error) {
	if err := CheckDeadPidfd(f); err != nil {
		return -1, err
	}
	if o.deadPidfd == nil {
		return -1, errors.New("pidfd of an exited process: cannot be made here")
	}
	fl := int(f.Flags) & (unix.O_NONBLOCK | unix.O_EXCL) // PIDFD_NONBLOCK, PIDFD_THREAD
	return o.deadPidfd(fl, f.PidfdExitStatus, f.PidfdExitKnown)
}
