package files

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// fdinfo reads testdata/fdinfo_<name>.txt, captured on Linux 6.18.
func fdinfo(t *testing.T, name string) *procfs.FdInfo {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fdinfo_"+name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := procfs.ParseFdInfo(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func TestParseTimerfd(t *testing.T) {
	tests := []struct {
		name string
		want *imagepb.Timerfd
	}{
		// CLOCK_MONOTONIC, TFD_NONBLOCK|TFD_CLOEXEC, {100 s, 20 ms}
		{"timerfd_periodic", &imagepb.Timerfd{ClockId: 1, ValueNs: 99_988_389_728, IntervalNs: 20_000_000}},
		// CLOCK_REALTIME, TFD_TIMER_ABSTIME at now+50 s: it_value is the time left
		{"timerfd_realtime_abs", &imagepb.Timerfd{ClockId: 0, SettimeFlags: 1, ValueNs: 49_330_346_378}},
		// 1 ms period, 10 ms later: fdinfo shows one tick, it_value 0
		{"timerfd_expired", &imagepb.Timerfd{ClockId: 1, Ticks: 1, IntervalNs: 1_000_000}},
		{"timerfd_boottime_expired", &imagepb.Timerfd{ClockId: 7, Ticks: 1}},
		// TFD_TIMER_ABSTIME|TFD_TIMER_CANCEL_ON_SET: "settime flags: 03"
		{"timerfd_monotonic_abs", &imagepb.Timerfd{ClockId: 1, SettimeFlags: 3, ValueNs: 6_597_278_118}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTimerfd(fdinfo(t, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"it_value: 5", "it_value: (1, 1000000000)", "it_value: (x, 1)", "clockid: z", "settime flags: 9"} {
		k, _, _ := strings.Cut(bad, ":")
		raw := "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\nclockid: 1\nticks: 0\nsettime flags: 00\nit_value: (0, 0)\nit_interval: (0, 0)\n"
		lines := strings.Split(raw, "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, k+":") {
				lines[i] = bad
			}
		}
		fi, err := procfs.ParseFdInfo(strings.NewReader(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseTimerfd(fi); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := parseTimerfd(fdinfo(t, "signalfd")); err == nil {
		t.Error("signalfd fdinfo parsed as a timerfd")
	}
}

func TestParseSigmask(t *testing.T) {
	// SIGHUP, SIGUSR1, SIGRTMIN+2 (36)
	m, err := parseSigmask(fdinfo(t, "signalfd"))
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(1)<<(unix.SIGHUP-1) | 1<<(unix.SIGUSR1-1) | 1<<35
	if m != want {
		t.Errorf("sigmask %#x, want %#x", m, want)
	}
	if _, err := parseSigmask(fdinfo(t, "timerfd_periodic")); err == nil {
		t.Error("no error without sigmask")
	}
}

func TestParseInotify(t *testing.T) {
	fi := fdinfo(t, "inotify")
	if fi.Flags != unix.O_NONBLOCK {
		t.Errorf("flags %#o", fi.Flags)
	}
	got, err := parseInotify(fi)
	if err != nil {
		t.Fatal(err)
	}
	h := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// /tmp (wd 4, re-added after removal), a subdirectory with
	// IN_ALL_EVENTS (wd 3), a directory with IN_CREATE|IN_DELETE (wd 1)
	want := []inotifyMark{
		{Wd: 4, Ino: 0x3c4a3, Sdev: 0xfe00000, Mask: 0x100, HandleType: 1, Handle: h("a3c4030000000000")},
		{Wd: 3, Ino: 0x984162, Sdev: 0xfe00000, Mask: 0xfff, HandleType: 1, Handle: h("6241980074610c8d")},
		{Wd: 1, Ino: 0x98447f, Sdev: 0xfe00000, Mask: 0x300, HandleType: 1, Handle: h("7f44980032d966ce")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if d := got[0].Dev(); unix.Major(d) != 254 || unix.Minor(d) != 0 {
		t.Errorf("dev %d:%d, want 254:0", unix.Major(d), unix.Minor(d))
	}
	for _, bad := range []string{
		"inotify wd:0 ino:1 sdev:0 mask:1",
		"inotify ino:1 sdev:0 mask:1",
		"inotify wd:1 ino:1 sdev:0 mask:1 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4",
		"inotify wd:1 ino:zz sdev:0 mask:1",
		"inotify wd:1 ino:1 sdev:0 mask:1 junk",
	} {
		fi, err := procfs.ParseFdInfo(strings.NewReader("pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1039\n" + bad + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseInotify(fi); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	// without a file handle (file systems that cannot encode one)
	fi, _ = procfs.ParseFdInfo(strings.NewReader("pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1039\ninotify wd:2 ino:10 sdev:5 mask:2 ignored_mask:0 \n"))
	if m, err := parseInotify(fi); err != nil || len(m) != 1 || m[0].Handle != nil || m[0].Wd != 2 {
		t.Errorf("got %+v, %v", m, err)
	}
}

// TestHandlePath resolves a real inotify watch's file handle to its path
// (needs CAP_DAC_READ_SEARCH for open_by_handle_at).
func TestHandlePath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("open_by_handle_at needs root")
	}
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, sub, unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	fi, err := procfs.ReadFdInfo(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	marks, err := parseInotify(fi)
	if err != nil || len(marks) != 1 {
		t.Fatalf("%+v %v", marks, err)
	}
	if marks[0].Handle == nil {
		t.Skip("file system of the temp dir has no file handles")
	}
	mounts, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	p, err := handlePath(marks[0], mounts)
	if err != nil {
		t.Fatal(err)
	}
	if p != sub {
		t.Errorf("path %q, want %q", p, sub)
	}
}
