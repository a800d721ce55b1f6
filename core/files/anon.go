package files

// Dump of the anonymous-inode files that carry kernel state of their own:
// timerfd, signalfd and inotify. Their state comes from fdinfo (see the
// parsers below and testdata/fdinfo_*.txt, captured on Linux 6.18), from
// the stolen fd (timerfd_gettime, FIONREAD) and, for inotify watches, from
// the file handles fdinfo shows (open_by_handle_at gives back the path).

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/internal/mountinfo"
)

// Timerfd constants not in x/sys/unix.
const (
	tfdTimerAbstime     = 1                             // TFD_TIMER_ABSTIME
	tfdTimerCancelOnSet = 2                             // TFD_TIMER_CANCEL_ON_SET
	tfdIocSetTicks      = 0x40085400                    // TFD_IOC_SET_TICKS: _IOW('T', 0, __u64)
	anonStatusFlags     = unix.O_NONBLOCK | unix.O_RDWR // what timerfd/signalfd/inotify keep in f_flags
)

// parseTimespecPair parses fdinfo's "(sec, nsec)" into nanoseconds.
func parseTimespecPair(s string) (uint64, error) {
	in, okOpen := strings.CutPrefix(strings.TrimSpace(s), "(")
	in, okClose := strings.CutSuffix(in, ")")
	if !okOpen || !okClose {
		return 0, fmt.Errorf("bad time %q", s)
	}
	a, b, ok := strings.Cut(in, ",")
	if !ok {
		return 0, fmt.Errorf("bad time %q", s)
	}
	sec, err := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad time %q: %w", s, err)
	}
	nsec, err := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
	if err != nil || nsec >= 1e9 || sec > (1<<63-1)/1_000_000_000 {
		return 0, fmt.Errorf("bad time %q", s)
	}
	return sec*1e9 + nsec, nil
}

// parseTimerfd reads a timerfd's fdinfo:
//
//	clockid: 1
//	ticks: 0
//	settime flags: 01          (octal)
//	it_value: (49, 156087404)  (time left, also for absolute timers)
//	it_interval: (0, 20000000)
func parseTimerfd(fi *procfs.FdInfo) (*imagepb.Timerfd, error) {
	tf := &imagepb.Timerfd{}
	get := func(key string) (string, error) {
		v, ok := fi.Field(key)
		if !ok {
			return "", fmt.Errorf("timerfd: no %q in fdinfo", key)
		}
		return v, nil
	}
	v, err := get("clockid")
	if err != nil {
		return nil, err
	}
	clk, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("timerfd: clockid %q", v)
	}
	tf.ClockId = int32(clk)
	if v, err = get("ticks"); err != nil {
		return nil, err
	}
	if tf.Ticks, err = strconv.ParseUint(v, 10, 64); err != nil {
		return nil, fmt.Errorf("timerfd: ticks %q", v)
	}
	if v, err = get("settime flags"); err != nil {
		return nil, err
	}
	fl, err := strconv.ParseUint(v, 8, 32)
	if err != nil {
		return nil, fmt.Errorf("timerfd: settime flags %q", v)
	}
	tf.SettimeFlags = uint32(fl)
	if v, err = get("it_value"); err != nil {
		return nil, err
	}
	if tf.ValueNs, err = parseTimespecPair(v); err != nil {
		return nil, fmt.Errorf("timerfd: it_value: %w", err)
	}
	if v, err = get("it_interval"); err != nil {
		return nil, err
	}
	if tf.IntervalNs, err = parseTimespecPair(v); err != nil {
		return nil, fmt.Errorf("timerfd: it_interval: %w", err)
	}
	return tf, nil
}

// parseSigmask reads a signalfd's "sigmask:" (hex, bit n-1 for signal n).
func parseSigmask(fi *procfs.FdInfo) (uint64, error) {
	v, ok := fi.Field("sigmask")
	if !ok {
		return 0, errors.New("signalfd: no sigmask in fdinfo")
	}
	m, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("signalfd: sigmask %q", v)
	}
	return m, nil
}

// inotifyMark is one "inotify wd:" line of fdinfo (all numbers hex):
//
//	inotify wd:1 ino:3c4a3 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000
//
// sdev is the kernel's dev_t (major<<20 | minor); the file handle part is
// missing when the file system cannot encode one.
type inotifyMark struct {
	Wd          int32
	Ino         uint64
	Sdev        uint32
	Mask        uint32
	IgnoredMask uint32
	HandleType  int32
	Handle      []byte // nil without a file handle
}

// Dev is the watched file system's device number as stat(2) shows it.
func (m inotifyMark) Dev() uint64 { return unix.Mkdev(m.Sdev>>20, m.Sdev&(1<<20-1)) }

// parseInotify returns the watches of an inotify fdinfo, in line order.
func parseInotify(fi *procfs.FdInfo) ([]inotifyMark, error) {
	var out []inotifyMark
	for _, l := range strings.Split(fi.Raw, "\n") {
		rest, ok := strings.CutPrefix(l, "inotify ")
		if !ok {
			continue
		}
		var m inotifyMark
		seen := map[string]bool{}
		hlen := -1
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, ":")
			if !ok {
				return nil, fmt.Errorf("inotify: bad fdinfo field %q in %q", kv, l)
			}
			seen[k] = true
			var err error
			var n uint64
			if k != "f_handle" {
				n, err = strconv.ParseUint(v, 16, 64)
			}
			switch k {
			case "wd":
				if n == 0 || n > 1<<31-1 {
					err = errors.New("out of range")
				}
				m.Wd = int32(n)
			case "ino":
				m.Ino = n
			case "sdev":
				m.Sdev = uint32(n)
			case "mask":
				m.Mask = uint32(n)
			case "ignored_mask":
				m.IgnoredMask = uint32(n)
			case "fhandle-bytes":
				hlen = int(n)
			case "fhandle-type":
				m.HandleType = int32(n)
			case "f_handle":
				m.Handle, err = hex.DecodeString(v)
			}
			if err != nil {
				return nil, fmt.Errorf("inotify: %s %q in %q: %v", k, v, l, err)
			}
		}
		for _, k := range []string{"wd", "ino", "sdev", "mask"} {
			if !seen[k] {
				return nil, fmt.Errorf("inotify: no %s in %q", k, l)
			}
		}
		if m.Handle != nil && hlen != len(m.Handle) {
			return nil, fmt.Errorf("inotify: fhandle-bytes %d but %d bytes of f_handle in %q", hlen, len(m.Handle), l)
		}
		out = append(out, m)
	}
	return out, nil
}

// timerfd records a timerfd. A periodic timer whose expirations were not
// read yet shows only "ticks: 1" in fdinfo (the kernel counts the missed
// periods on read), so the stolen fd is read and the exact count put back
// at once with TFD_IOC_SET_TICKS; the timer then runs on from its next
// period, as a read by the task would have left it.
func (t *Table) timerfd(f *imagepb.FileEntry, fd, cp int, link string, fi *procfs.FdInfo) (uint32, error) {
	tf, err := parseTimerfd(fi)
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	f.Kind = imagepb.FileKind_FILE_TIMERFD
	f.Flags &= anonStatusFlags
	if tf.Ticks > 0 && tf.IntervalNs > 0 {
		pfd := []unix.PollFd{{Fd: int32(cp), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 0); err == nil && n == 1 {
			var b [8]byte
			if n, err := unix.Read(cp, b[:]); err != nil || n != 8 {
				return 0, fmt.Errorf("fd %d (%s): read the timer's expirations: %v", fd, link, err)
			}
			tf.Ticks = leU64(b[:])
			v := tf.Ticks
			if err := ioctlPtr(cp, tfdIocSetTicks, &v); err != nil {
				return 0, fmt.Errorf("fd %d (%s): %d expirations read and not put back: TFD_IOC_SET_TICKS: %w", fd, link, tf.Ticks, err)
			}
		}
	}
	var its unix.ItimerSpec
	if err := unix.TimerfdGettime(cp, &its); err != nil {
		return 0, fmt.Errorf("fd %d (%s): timerfd_gettime: %w", fd, link, err)
	}
	tf.ValueNs, tf.IntervalNs = uint64(its.Value.Nano()), uint64(its.Interval.Nano())
	if tf.SettimeFlags&tfdTimerAbstime != 0 && tf.ValueNs != 0 && isRealtime(tf.ClockId) {
		var now unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &now); err != nil {
			return 0, fmt.Errorf("fd %d (%s): clock_gettime: %w", fd, link, err)
		}
		tf.AbsExpiryNs = now.Nano() + int64(tf.ValueNs)
	}
	f.Timerfd = tf
	return t.add("", f), nil
}

func isRealtime(clk int32) bool {
	return clk == unix.CLOCK_REALTIME || clk == unix.CLOCK_REALTIME_ALARM
}

func leU64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// signalfd records a signalfd: its signal set.
func (t *Table) signalfd(f *imagepb.FileEntry, fd int, link string, fi *procfs.FdInfo) (uint32, error) {
	m, err := parseSigmask(fi)
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	f.Kind = imagepb.FileKind_FILE_SIGNALFD
	f.Flags &= anonStatusFlags
	f.Sigmask = m
	return t.add("", f), nil
}

// inotify records an inotify instance: its watches (path found from the
// file handle of each) and how many bytes of events were queued (they are
// not saved).
func (t *Table) inotify(f *imagepb.FileEntry, fd, cp int, link string, fi *procfs.FdInfo) (uint32, error) {
	marks, err := parseInotify(fi)
	if err != nil {
		return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
	}
	f.Kind = imagepb.FileKind_FILE_INOTIFY
	f.Flags &= anonStatusFlags
	in := &imagepb.Inotify{}
	// FIONREAD (TIOCINQ on x86-64) does not consume the events
	if q, err := unix.IoctlGetInt(cp, unix.TIOCINQ); err == nil {
		in.QueuedBytes = uint32(q)
	}
	var mounts []mountinfo.Info
	for _, m := range marks {
		if m.Handle == nil {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: fmt.Sprintf("inotify watch %d on a file system without file handles (inode %d)", m.Wd, m.Ino)}
		}
		if mounts == nil {
			if mounts, err = readMounts(); err != nil {
				return 0, fmt.Errorf("fd %d (%s): %w", fd, link, err)
			}
		}
		path, err := handlePath(m, mounts)
		if err != nil {
			return 0, &UnsupportedError{Fd: fd, Link: link, Kind: fmt.Sprintf("inotify watch %d: %v", m.Wd, err)}
		}
		in.Watches = append(in.Watches, &imagepb.InotifyWatch{Wd: m.Wd, Path: path, Mask: m.Mask, Dev: m.Dev(), Ino: m.Ino})
	}
	sortWatches(in.Watches)
	f.Inotify = in
	return t.add("", f), nil
}

func sortWatches(w []*imagepb.InotifyWatch) {
	for i := 1; i < len(w); i++ {
		for j := i; j > 0 && w[j].Wd < w[j-1].Wd; j-- {
			w[j], w[j-1] = w[j-1], w[j]
		}
	}
}

// readMounts reads the mounts of our mount namespace (/proc/self/mountinfo).
func readMounts() ([]mountinfo.Info, error) {
	return mountinfo.Self(nil)
}

// handlePath opens the watched inode by its file handle through a mount of
// its file system (mounts of the whole file system first) and returns the
// path it is reachable at, checked with lstat.
func handlePath(m inotifyMark, mounts []mountinfo.Info) (string, error) {
	dev := m.Dev()
	var tried bool
	var last error
	for pass := 0; pass < 2; pass++ {
		for _, mp := range mounts {
			if mp.Dev() != dev || (mp.Root == "/") != (pass == 0) {
				continue
			}
			tried = true
			p, err := pathByHandle(m, dev, mp.MountPoint)
			if err == nil {
				return p, nil
			}
			last = err
		}
	}
	if !tried {
		return "", fmt.Errorf("no mount of device %d:%d (inode %d) in our mount namespace", unix.Major(dev), unix.Minor(dev), m.Ino)
	}
	return "", fmt.Errorf("inode %d of device %d:%d has no reachable path: %v", m.Ino, unix.Major(dev), unix.Minor(dev), last)
}

func pathByHandle(m inotifyMark, dev uint64, mountPath string) (string, error) {
	mfd, err := unix.Open(mountPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // an O_PATH fd gives EBADF
	if err != nil {
		return "", fmt.Errorf("open %s: %w", mountPath, err)
	}
	defer unix.Close(mfd)
	hfd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(m.HandleType, m.Handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("open_by_handle_at through %s: %w", mountPath, err)
	}
	defer unix.Close(hfd)
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", hfd))
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if !strings.HasPrefix(path, "/") || unix.Lstat(path, &st) != nil || st.Dev != dev || st.Ino != m.Ino {
		return "", fmt.Errorf("%q is not the watched inode", path)
	}
	return path, nil
}
