// Package linux is the EINTR-safe layer over the raw system calls that the
// namespace, mount, IPC and cgroup code makes directly (what the os package
// does not wrap). Every function retries a call interrupted by a signal
// (EINTR) and returns typed errors: *os.PathError for calls on a path,
// *os.SyscallError naming the call otherwise, both wrapping the unix.Errno
// so that errors.Is(err, unix.EBUSY) and the like work.
//
// Add a wrapper here instead of an ad hoc retry loop next to a call.
package linux

import (
	"os"

	"golang.org/x/sys/unix"
)

// ignoringEINTR calls fn until it returns something other than EINTR.
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// Syscall retries a raw system call (unix.Syscall and the like, wrapped as
// f) on EINTR and returns its result, or its errno as an error.
func Syscall(f func() (uintptr, unix.Errno)) (int, error) {
	for {
		r, e := f()
		switch e {
		case unix.EINTR:
			continue
		case 0:
			return int(r), nil
		}
		return int(r), e
	}
}

// Setns is setns(2): the calling thread joins the namespace open at fd
// (nstype 0: any type).
func Setns(fd, nstype int) error {
	return os.NewSyscallError("setns", ignoringEINTR(func() error { return unix.Setns(fd, nstype) }))
}

// Rmdir is rmdir(2) (for cgroup directories, which os.Remove would also
// try to unlink).
func Rmdir(path string) error {
	if err := ignoringEINTR(func() error { return unix.Rmdir(path) }); err != nil {
		return &os.PathError{Op: "rmdir", Path: path, Err: err}
	}
	return nil
}

// ShmAttach is shmat(2) of SysV segment id at an address the kernel picks;
// it returns the mapping.
func ShmAttach(id int, flag int) ([]byte, error) {
	var b []byte
	err := ignoringEINTR(func() (err error) {
		b, err = unix.SysvShmAttach(id, 0, flag)
		return err
	})
	return b, os.NewSyscallError("shmat", err)
}

// ShmDetach is shmdt(2) of a mapping ShmAttach returned.
func ShmDetach(b []byte) error {
	return os.NewSyscallError("shmdt", ignoringEINTR(func() error { return unix.SysvShmDetach(b) }))
}
