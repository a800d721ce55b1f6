package kernel

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const tfdIocSetTicks = 0x40085400 // TFD_IOC_SET_TICKS: _IOW('T', 0, __u64)

// probeAnonFds checks what the timerfd and inotify restore use: the
// TFD_IOC_SET_TICKS ioctl (CONFIG_CHECKPOINT_RESTORE), on a timerfd of our
// own, and file handles (name_to_handle_at/open_by_handle_at on "/"), which
// turn the inodes inotify watches into paths.
func probeAnonFds(p *prober) {
	if fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK); err != nil {
		p.set(fTimerfdTicks, false, "timerfd_create: %s", errno(err))
	} else {
		v := uint64(1)
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&v)))
		unix.Close(fd)
		if e != 0 {
			p.set(fTimerfdTicks, false, "ioctl(TFD_IOC_SET_TICKS): %s", errno(e))
		} else {
			p.set(fTimerfdTicks, true, "ioctl(TFD_IOC_SET_TICKS) works")
		}
	}
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, "/", 0)
	if err != nil {
		p.set(fFileHandles, false, "name_to_handle_at(/): %s", errno(err))
		return
	}
	root, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		p.set(fFileHandles, false, "open /: %s", errno(err))
		return
	}
	defer unix.Close(root)
	fd, err := unix.OpenByHandleAt(root, h, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		p.set(fFileHandles, false, "open_by_handle_at(/): %s", errno(err))
		return
	}
	unix.Close(fd)
	p.set(fFileHandles, true, "open_by_handle_at(/) works (handle type %d)", h.Type())
}
