package files

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// maxInotifySkips bounds the dummy watches added to reach high wds.
const maxInotifySkips = 1 << 20

func ioctlPtr(fd int, req uintptr, v *uint64) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(v))); e != 0 {
		return e
	}
	return nil
}

// Timerfds, signalfds and inotify instances (FILE_TIMERFD, FILE_SIGNALFD,
// FILE_INOTIFY): recorded from their fdinfo by anon.go, made again here.
func init() {
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_TIMERFD, anonInode: "timerfd",
		dump: func(t *Table, f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
			return t.timerfd(f, d.fd, d.cp, d.link, d.fi)
		},
		open: openAlone(openTimerfd), describe: describeTimerfd})
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_SIGNALFD, anonInode: "signalfd",
		dump: func(t *Table, f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
			return t.signalfd(f, d.fd, d.link, d.fi)
		},
		open:     openAlone(openSignalfd),
		describe: func(f *imagepb.FileEntry) string { return fmt.Sprintf(" sigmask %#x", f.Sigmask) }})
	registerKind(&kindDriver{kind: imagepb.FileKind_FILE_INOTIFY, anonInode: "inotify",
		dump: func(t *Table, f *imagepb.FileEntry, d *fdBeingDumped) (uint32, error) {
			return t.inotify(f, d.fd, d.cp, d.link, d.fi)
		},
		check: checkAlone(checkInotify),
		open:  openAlone(openInotify), describe: describeInotify})
}

// openSignalfd makes a signalfd of the entry's signal set.
func openSignalfd(f *imagepb.FileEntry) (int, error) {
	var ss unix.Sigset_t
	ss.Val[0] = f.Sigmask
	fl := unix.SFD_CLOEXEC
	if f.Flags&unix.O_NONBLOCK != 0 {
		fl |= unix.SFD_NONBLOCK
	}
	fd, err := unix.Signalfd(-1, &ss, fl)
	if err != nil {
		return -1, fmt.Errorf("signalfd(%#x): %w", f.Sigmask, err)
	}
	return fd, nil
}

// describeTimerfd names a timer's clock, time left, interval and the
// expirations not read.
func describeTimerfd(f *imagepb.FileEntry) string {
	tf := f.Timerfd
	if tf == nil {
		return ""
	}
	s := fmt.Sprintf(" clock %d, next in %dns, interval %dns, %d unread tick(s)", tf.ClockId, tf.ValueNs, tf.IntervalNs, tf.Ticks)
	if tf.SettimeFlags&1 != 0 {
		s += " (absolute)"
	}
	return s
}

// describeInotify lists an inotify instance's watches, and the events
// queued at dump, which are lost.
func describeInotify(f *imagepb.FileEntry) string {
	in := f.Inotify
	if in == nil {
		return ""
	}
	var ws []string
	for _, w := range in.Watches {
		ws = append(ws, fmt.Sprintf("%d=%s mask %#x", w.Wd, w.Path, w.Mask))
	}
	s := fmt.Sprintf(" %d watch(es) [%s]", len(in.Watches), strings.Join(ws, ", "))
	if in.QueuedBytes > 0 {
		s += fmt.Sprintf("; %d bytes of events queued at dump are lost", in.QueuedBytes)
	}
	return s
}

// baseClock is the clock to read "now" from for a timer clock.
func baseClock(clk int32) int32 {
	switch clk {
	case unix.CLOCK_REALTIME_ALARM:
		return unix.CLOCK_REALTIME
	case unix.CLOCK_BOOTTIME_ALARM:
		return unix.CLOCK_BOOTTIME
	}
	return clk
}

// openTimerfd creates the timer, arms it with the time it had left (an
// absolute timer stays absolute, see imagepb.Timerfd) and puts back the
// expirations that were not read.
func openTimerfd(f *imagepb.FileEntry) (int, error) {
	tf := f.Timerfd
	if tf == nil {
		return -1, errors.New("timerfd entry without its description")
	}
	fl := unix.TFD_CLOEXEC
	if f.Flags&unix.O_NONBLOCK != 0 {
		fl |= unix.TFD_NONBLOCK
	}
	fd, err := unix.TimerfdCreate(int(tf.ClockId), fl)
	if err != nil {
		return -1, fmt.Errorf("timerfd_create(clock %d): %w", tf.ClockId, err)
	}
	if tf.ValueNs != 0 || tf.IntervalNs != 0 {
		value := int64(tf.ValueNs)
		if value == 0 {
			value = 1 // a periodic timer expired at dump: due now
		}
		its := unix.ItimerSpec{Interval: unix.NsecToTimespec(int64(tf.IntervalNs))}
		flags := 0
		if tf.SettimeFlags&tfdTimerAbstime != 0 {
			flags = int(tf.SettimeFlags & (tfdTimerAbstime | tfdTimerCancelOnSet))
			if isRealtime(tf.ClockId) && tf.AbsExpiryNs != 0 {
				its.Value = unix.NsecToTimespec(tf.AbsExpiryNs)
			} else {
				var now unix.Timespec
				if err := unix.ClockGettime(baseClock(tf.ClockId), &now); err != nil {
					unix.Close(fd)
					return -1, fmt.Errorf("clock_gettime(%d): %w", tf.ClockId, err)
				}
				its.Value = unix.NsecToTimespec(now.Nano() + value)
			}
		} else {
			its.Value = unix.NsecToTimespec(value)
		}
		if err := unix.TimerfdSettime(fd, flags, &its, nil); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("timerfd_settime: %w", err)
		}
	}
	if tf.Ticks > 0 {
		v := tf.Ticks
		if err := ioctlPtr(fd, tfdIocSetTicks, &v); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("TFD_IOC_SET_TICKS %d (needs CONFIG_CHECKPOINT_RESTORE): %w", tf.Ticks, err)
		}
	}
	return fd, nil
}

// dummyWatchPaths are watched (and unwatched at once) to consume the wds
// that were free in the dumped instance.
var dummyWatchPaths = []string{"/", "/proc", "/sys", "/dev", "/etc", "/usr", "/tmp", "/var", "/run"}

// openInotify creates an inotify instance with the dumped watches at the
// same wds. The kernel hands wds out cyclically from 1 and does not reuse
// a removed one before wrapping, so adding the watches in ascending wd
// order, with a watch added and removed for each wd that was free, gives
// every watch its number back (checked). The IN_IGNORED events of the
// removed watches are read away. Events queued at dump are lost.
func openInotify(f *imagepb.FileEntry) (int, error) {
	in := f.Inotify
	if in == nil {
		return -1, errors.New("inotify entry without its description")
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("inotify_init1: %w", err)
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	next, skips, dummy := int32(1), 0, -1
	for _, w := range in.Watches {
		if w.Wd < next {
			return fail(fmt.Errorf("inotify: watch descriptors not in ascending order (%d after %d)", w.Wd, next-1))
		}
		if skips += int(w.Wd - next); skips > maxInotifySkips {
			return fail(fmt.Errorf("inotify: wd %d would need more than %d placeholder watches", w.Wd, maxInotifySkips))
		}
		for ; next < w.Wd; next++ {
			wd, err := addDummyWatch(fd, &dummy)
			if err != nil {
				return fail(fmt.Errorf("inotify: placeholder for wd %d: %w", next, err))
			}
			if _, err := unix.InotifyRmWatch(fd, uint32(wd)); err != nil {
				return fail(fmt.Errorf("inotify: remove placeholder wd %d: %w", wd, err))
			}
			if int32(wd) != next {
				return fail(fmt.Errorf("inotify: placeholder got wd %d, expected %d", wd, next))
			}
		}
		mask := w.Mask&^(unix.IN_MASK_ADD|unix.IN_MASK_CREATE) | unix.IN_MASK_CREATE
		var st unix.Stat_t
		if unix.Lstat(w.Path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			mask |= unix.IN_DONT_FOLLOW
		}
		wd, err := unix.InotifyAddWatch(fd, w.Path, mask)
		if err != nil {
			return fail(fmt.Errorf("inotify: watch %d on %s: %w", w.Wd, w.Path, err))
		}
		if int32(wd) != w.Wd {
			return fail(fmt.Errorf("inotify: watch on %s got wd %d instead of %d", w.Path, wd, w.Wd))
		}
		next = w.Wd + 1
	}
	var buf [4096]byte
	for {
		if _, err := unix.Read(fd, buf[:]); err != nil {
			break
		}
	}
	if f.Flags&unix.O_NONBLOCK == 0 {
		if err := unix.SetNonblock(fd, false); err != nil {
			return fail(err)
		}
	}
	return fd, nil
}

// addDummyWatch adds a watch on an inode no watch of fd uses yet;
// *which remembers the candidate that worked.
func addDummyWatch(fd int, which *int) (int, error) {
	start := max(*which, 0)
	var last error
	for i := start; i < len(dummyWatchPaths); i++ {
		wd, err := unix.InotifyAddWatch(fd, dummyWatchPaths[i], unix.IN_DELETE_SELF|unix.IN_MASK_CREATE)
		if err == nil {
			*which = i
			return wd, nil
		}
		last = err
	}
	if start > 0 {
		*which = 0
		return addDummyWatch(fd, which)
	}
	return -1, fmt.Errorf("no free placeholder inode: %v", last)
}

// checkInotify verifies that every watched path still exists.
func checkInotify(f *imagepb.FileEntry) error {
	if f.Inotify == nil {
		return nil
	}
	for _, w := range f.Inotify.Watches {
		var st unix.Stat_t
		if err := unix.Lstat(w.Path, &st); err != nil {
			return fmt.Errorf("inotify watch %d: %s: %w", w.Wd, w.Path, err)
		}
	}
	return nil
}
