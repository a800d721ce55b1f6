package files

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// F_OWNER_* types of struct f_owner_ex.
const (
	fOwnerTid  = 0
	fOwnerPid  = 1
	fOwnerPgrp = 2
)

// fOwnerEx is struct f_owner_ex (F_GETOWN_EX/F_SETOWN_EX).
type fOwnerEx struct {
	Type int32
	Pid  int32
}

// readFown returns the owner (F_GETOWN_EX) and signal (F_GETSIG) of the
// open file description fd refers to, nil when neither is set. They belong
// to the open file description, so our pidfd_getfd copy reads the task's.
func readFown(fd int) (*imagepb.FileFown, error) {
	var ex fOwnerEx
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&ex))); e != 0 {
		if e == unix.EBADF {
			return nil, nil // an O_PATH fd has no owner
		}
		return nil, fmt.Errorf("F_GETOWN_EX: %w", e)
	}
	sig, err := unix.FcntlInt(uintptr(fd), unix.F_GETSIG, 0)
	if err != nil {
		return nil, fmt.Errorf("F_GETSIG: %w", err)
	}
	if ex.Pid == 0 && sig == 0 {
		return nil, nil
	}
	return &imagepb.FileFown{Type: ex.Type, Pid: ex.Pid, Signum: int32(sig)}, nil
}

// ownerKind names an F_OWNER_* type for messages.
func ownerKind(typ int32) string {
	switch typ {
	case fOwnerTid:
		return "thread"
	case fOwnerPid:
		return "process"
	case fOwnerPgrp:
		return "process group"
	}
	return fmt.Sprintf("owner type %d", typ)
}

// CheckOwners verifies that the F_SETOWN owner of every file is a thread,
// process or process group of the dump (inDump answers by F_OWNER_* type):
// an outside owner cannot be named again after restore.
func (t *Table) CheckOwners(inDump func(typ, pid int32) bool) error {
	for _, f := range t.Files {
		if o := f.Fown; o != nil && o.Pid != 0 && !inDump(o.Type, o.Pid) {
			e := &UnsupportedError{Fd: -1, Link: f.Path,
				Kind: fmt.Sprintf("file whose F_SETOWN owner is %s %d, outside the dump", ownerKind(o.Type), o.Pid)}
			e.Pid, e.Fd = t.firstFd(f.Id)
			return e
		}
	}
	return nil
}

// RestoreOwners sets the F_SETOWN_EX owner and F_SETSIG signal of every
// open file description opened for the tree; call it once every task
// and thread exists. TidOf maps a thread id of the image to ours.
func (o *Opener) RestoreOwners(tidOf func(tid int32) (int, bool)) error {
	for id, fd := range o.open {
		f := o.files[id]
		if f == nil || f.Fown == nil {
			continue
		}
		fo := f.Fown
		if fo.Pid != 0 {
			var pid int
			var ok bool
			if fo.Type == fOwnerTid {
				pid, ok = tidOf(fo.Pid)
			} else if o.pidOf != nil {
				pid, ok = o.pidOf(fo.Pid)
			}
			if !ok {
				return fmt.Errorf("file %d (%s): F_SETOWN owner %s %d is not restored", id, f.Path, ownerKind(fo.Type), fo.Pid)
			}
			ex := fOwnerEx{Type: fo.Type, Pid: int32(pid)}
			if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_SETOWN_EX, uintptr(unsafe.Pointer(&ex))); e != 0 {
				return fmt.Errorf("file %d (%s): F_SETOWN_EX %s %d: %w", id, f.Path, ownerKind(fo.Type), pid, e)
			}
		}
		if fo.Signum != 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETSIG, int(fo.Signum)); err != nil {
				return fmt.Errorf("file %d (%s): F_SETSIG %d: %w", id, f.Path, fo.Signum, err)
			}
		}
	}
	return nil
}

// AsyncOnce reports whether the fd of file id being installed must turn
// O_ASYNC on in the task (F_SETFL, which registers it for SIGIO with that
// fd number): true for the first fd of an O_ASYNC open file description.
// open(2) keeps O_ASYNC in the flags without registering it, so the flag
// is cleared and set again.
func (o *Opener) AsyncOnce(id uint32) (flags uint32, ok bool) {
	f := o.files[id]
	if f == nil || f.Flags&unix.O_ASYNC == 0 || o.asyncDone[id] {
		return 0, false
	}
	if o.asyncDone == nil {
		o.asyncDone = map[uint32]bool{}
	}
	o.asyncDone[id] = true
	return f.Flags, true
}

// recordFown puts the owner and signal of our copy cp on file id's entry.
func (t *Table) recordFown(id uint32, cp int) error {
	fo, err := readFown(cp)
	if err != nil || fo == nil {
		return err
	}
	for _, f := range t.Files {
		if f.Id == id {
			f.Fown = fo
			return nil
		}
	}
	return nil
}

// firstFd returns a process and fd where file id was seen (0, -1 if none).
func (t *Table) firstFd(id uint32) (pid, fd int) {
	pid, fd = 0, -1
	for _, ss := range t.seen {
		for _, s := range ss {
			if s.id == id && (fd < 0 || s.pid < pid || s.pid == pid && s.fd < fd) {
				pid, fd = s.pid, s.fd
			}
		}
	}
	return pid, fd
}
