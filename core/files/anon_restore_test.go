package files

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// TestOpenInotifyWds: watches come back at their wds, gaps included
// (placeholders consumed and removed), with no event left queued; a wd
// that cannot be had fails clearly.
func TestOpenInotifyWds(t *testing.T) {
	dir := t.TempDir()
	var ws []*imagepb.InotifyWatch
	for i, wd := range []int32{2, 3, 7} {
		p := filepath.Join(dir, string(rune('a'+i)))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, &imagepb.InotifyWatch{Wd: wd, Path: p, Mask: unix.IN_CREATE})
	}
	// "/" is watched too: placeholders must avoid it
	ws = append(ws, &imagepb.InotifyWatch{Wd: 9, Path: "/", Mask: unix.IN_DELETE})
	f := &imagepb.FileEntry{Kind: imagepb.FileKind_FILE_INOTIFY, Inotify: &imagepb.Inotify{Watches: ws}}
	if err := checkInotify(f); err != nil {
		t.Fatal(err)
	}
	fd, err := openInotify(f)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	fi, err := procfs.ReadFdInfo(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	marks, err := parseInotify(fi)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int32]uint32{}
	for _, m := range marks {
		got[m.Wd] = m.Mask
	}
	if len(got) != 4 || got[2] != unix.IN_CREATE || got[3] != unix.IN_CREATE || got[7] != unix.IN_CREATE || got[9] != unix.IN_DELETE {
		t.Errorf("watches %v", got)
	}
	if fi.Flags&unix.O_NONBLOCK != 0 {
		t.Error("O_NONBLOCK left set")
	}
	if q, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err != nil || q != 0 {
		t.Errorf("%d bytes of events queued (%v)", q, err)
	}
	// an event after restore comes with the wd
	if err := os.Mkdir(filepath.Join(dir, "c", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf [256]byte
	if n, err := unix.Read(fd, buf[:]); err != nil || n < 16 || int32(leU64(buf[:8])) != 7 {
		t.Errorf("event: %d bytes %x (%v)", n, buf[:16], err)
	}

	bad := &imagepb.FileEntry{Kind: imagepb.FileKind_FILE_INOTIFY, Inotify: &imagepb.Inotify{Watches: []*imagepb.InotifyWatch{
		{Wd: 1, Path: dir, Mask: unix.IN_CREATE}, {Wd: 2, Path: dir, Mask: unix.IN_DELETE},
	}}}
	if fd, err := openInotify(bad); err == nil || !strings.Contains(err.Error(), "watch 2") {
		unix.Close(max(fd, 0))
		t.Errorf("two watches on one inode: %v", err)
	}
	missing := &imagepb.FileEntry{Kind: imagepb.FileKind_FILE_INOTIFY, Inotify: &imagepb.Inotify{Watches: []*imagepb.InotifyWatch{
		{Wd: 1, Path: filepath.Join(dir, "gone"), Mask: unix.IN_CREATE},
	}}}
	if err := checkInotify(missing); err == nil {
		t.Error("check: a missing watched path passes")
	}
}

// TestOpenTimerfd: time left, interval, pending expirations and absolute
// deadlines are set back.
func TestOpenTimerfd(t *testing.T) {
	var now unix.Timespec
	unix.ClockGettime(unix.CLOCK_REALTIME, &now)
	deadline := now.Nano() + 30e9
	for _, tc := range []struct {
		name string
		tf   *imagepb.Timerfd
		flag string // expected "settime flags" line
	}{
		{"periodic", &imagepb.Timerfd{ClockId: unix.CLOCK_MONOTONIC, ValueNs: 5e9, IntervalNs: 1e9, Ticks: 42}, "settime flags: 00"},
		{"expired", &imagepb.Timerfd{ClockId: unix.CLOCK_BOOTTIME, Ticks: 1}, "settime flags: 00"},
		{"realtime-abs", &imagepb.Timerfd{ClockId: unix.CLOCK_REALTIME, SettimeFlags: 3, ValueNs: 1, AbsExpiryNs: deadline}, "settime flags: 03"},
		{"monotonic-abs", &imagepb.Timerfd{ClockId: unix.CLOCK_MONOTONIC, SettimeFlags: 1, ValueNs: 20e9}, "settime flags: 01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := openTimerfd(&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_TIMERFD, Flags: unix.O_NONBLOCK, Timerfd: tc.tf})
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			fi, err := procfs.ReadFdInfo(os.Getpid(), fd)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseTimerfd(fi)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(fi.Raw, tc.flag) || got.ClockId != tc.tf.ClockId || got.IntervalNs != tc.tf.IntervalNs || got.Ticks != tc.tf.Ticks {
				t.Errorf("fdinfo:\n%s", fi.Raw)
			}
			want := int64(tc.tf.ValueNs)
			if tc.tf.AbsExpiryNs != 0 {
				want = deadline - now.Nano()
			}
			if d := want - int64(got.ValueNs); d < 0 || d > 2e9 {
				t.Errorf("%d ns left, want %d", got.ValueNs, want)
			}
			if fi.Flags&unix.O_NONBLOCK == 0 {
				t.Error("not O_NONBLOCK")
			}
			var b [8]byte
			if n, err := unix.Read(fd, b[:]); tc.tf.Ticks > 0 && (err != nil || n != 8 || leU64(b[:]) != tc.tf.Ticks) {
				t.Errorf("read %d bytes %x (%v), want %d expirations", n, b, err, tc.tf.Ticks)
			}
		})
	}
}
