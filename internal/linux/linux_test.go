package linux

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTypedErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	err := Rmdir(missing)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "rmdir" || pe.Path != missing || !errors.Is(err, unix.ENOENT) {
		t.Errorf("Rmdir of a missing directory: %#v", err)
	}
	err = Setns(-1, 0)
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "setns" || !errors.Is(err, unix.EBADF) {
		t.Errorf("Setns(-1): %#v", err)
	}
	if _, err := ShmAttach(-1, 0); !errors.As(err, &se) || se.Syscall != "shmat" {
		t.Errorf("ShmAttach(-1): %#v", err)
	}
}

func TestSyscallRetriesEINTR(t *testing.T) {
	calls := 0
	r, err := Syscall(func() (uintptr, unix.Errno) {
		calls++
		if calls < 3 {
			return 0, unix.EINTR
		}
		return 7, 0
	})
	if r != 7 || err != nil || calls != 3 {
		t.Errorf("got %d, %v after %d calls", r, err, calls)
	}
	if _, err := Syscall(func() (uintptr, unix.Errno) { return 0, unix.EPERM }); err != unix.EPERM {
		t.Errorf("EPERM: %v", err)
	}
}
