package files

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// TestKindDrivers: every file kind of the image format has its driver (a
// new FileKind value without one fails here), every anon inode name leads
// to a kind whose driver records it, and only FILE_SHMEM is never opened as
// an fd of its own.
func TestKindDrivers(t *testing.T) {
	for n, name := range imagepb.FileKind_name {
		k := imagepb.FileKind(n)
		if k == imagepb.FileKind_FILE_UNKNOWN {
			continue
		}
		d, err := driverOf(k)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if d.kind != k {
			t.Errorf("%s: the driver of kind %v", name, d.kind)
		}
		if (d.open == nil) != (k == imagepb.FileKind_FILE_SHMEM) {
			t.Errorf("%s: open set %v", name, d.open != nil)
		}
	}
	for name, d := range anonDrivers {
		if d.anonInode != name || d.dump == nil || kindDrivers[d.kind] != d {
			t.Errorf("anon inode %q: driver of %v inconsistent", name, d.kind)
		}
	}
	want := []string{"eventfd", "eventpoll", "fanotify", "inotify", "pidfd", "signalfd", "timerfd"}
	if len(anonDrivers) != len(want) {
		t.Errorf("%d anon inode kinds, want %d (%v)", len(anonDrivers), len(want), want)
	}
	for _, name := range want {
		if anonDrivers[name] == nil {
			t.Errorf("anon inode %q has no driver", name)
		}
	}
	socks := map[int]imagepb.FileKind{unix.AF_UNIX: imagepb.FileKind_FILE_UNIX, unix.AF_INET: imagepb.FileKind_FILE_INET,
		unix.AF_INET6: imagepb.FileKind_FILE_INET, unix.AF_NETLINK: imagepb.FileKind_FILE_NETLINK, unix.AF_PACKET: imagepb.FileKind_FILE_PACKET}
	if len(sockDrivers) != len(socks) {
		t.Errorf("%d socket families, want %d", len(sockDrivers), len(socks))
	}
	for fam, k := range socks {
		if d := sockDrivers[fam]; d == nil || d.kind != k || d.dump == nil {
			t.Errorf("socket family %d: driver %v, want one of %v", fam, d, k)
		}
	}
}

// TestUnknownKind: an entry of a kind this ctr-cr does not know (a hostile
// image, or one of a newer ctr-cr) is refused by Check before anything is
// restored, and by Open, with one message; show describes it as nothing.
func TestUnknownKind(t *testing.T) {
	for _, k := range []imagepb.FileKind{imagepb.FileKind_FILE_UNKNOWN, 77} {
		f := &imagepb.FileEntry{Id: 3, Kind: k, Path: "/x"}
		o, err := NewOpener([]*imagepb.FileEntry{f})
		if err != nil {
			t.Fatal(err)
		}
		err = o.Check()
		if err == nil || !strings.Contains(err.Error(), "file 3 (/x): unsupported file kind") {
			t.Errorf("kind %d: Check: %v", k, err)
		}
		if _, err := o.Open(3); err == nil || !strings.Contains(err.Error(), "file 3 (/x): unsupported file kind") {
			t.Errorf("kind %d: Open: %v", k, err)
		}
		if s := Describe(f); s != "" {
			t.Errorf("kind %d: Describe %q", k, s)
		}
	}
	shm := &imagepb.FileEntry{Id: 4, Kind: imagepb.FileKind_FILE_SHMEM, Path: "/dev/zero"}
	o, err := NewOpener([]*imagepb.FileEntry{shm})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(4); err == nil || !strings.Contains(err.Error(), "unsupported file kind FILE_SHMEM") {
		t.Errorf("shmem: Open: %v", err)
	}
}

// TestDescribeEmptyEntries: an entry that lacks its kind's description (a
// hostile image) is described without a panic.
func TestDescribeEmptyEntries(t *testing.T) {
	for n := range imagepb.FileKind_name {
		f := &imagepb.FileEntry{Kind: imagepb.FileKind(n), PidfdDead: n%2 == 0}
		_ = Describe(f)
	}
}

// TestEmptyEntries: an entry of each kind that lacks everything but its
// kind (a hostile image) is refused by Check or Open with an error, or
// opens as an empty object of the kind: never a panic.
func TestEmptyEntries(t *testing.T) {
	for n, name := range imagepb.FileKind_name {
		t.Run(name, func(t *testing.T) {
			f := &imagepb.FileEntry{Id: 1, Kind: imagepb.FileKind(n), Path: "/nonexistent-ctr-cr-test"}
			o, err := NewOpener([]*imagepb.FileEntry{f})
			if err != nil {
				t.Fatal(err)
			}
			defer o.Finish()
			if err := o.Check(); err != nil {
				return
			}
			if _, err := o.Open(1); err != nil {
				return
			}
			switch f.Kind {
			case imagepb.FileKind_FILE_EVENTFD, imagepb.FileKind_FILE_SIGNALFD, imagepb.FileKind_FILE_EPOLL, imagepb.FileKind_FILE_PIPE:
			default:
				t.Errorf("an empty %s entry opened", name)
			}
		})
	}
}

// TestDescribe: the text `ctr-cr show` prints after a file of each kind
// (as it printed before the kinds became drivers).
func TestDescribe(t *testing.T) {
	for _, c := range []struct {
		f    *imagepb.FileEntry
		want string
	}{
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_REG, Path: "/a"}, ""},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_EVENTFD, Pos: 5, Flags: 1}, " count 5 semaphore"},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_PIPE, Ino: 7, Size: 9, GhostData: []byte("ab"), PipeExternal: true},
			" pipe 7, 2 byte(s) queued, capacity 9, other end outside: restore with --inherit-fd fd[N]:pipe:[7]"},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_EPOLL, EpollTargets: []*imagepb.EpollTarget{{Tfd: 3, Events: 1, Data: 2}}},
			" 1 target(s) [fd 3 events 0x1 data 0x2]"},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_PIDFD, PidfdDead: true, PidfdExitKnown: true, PidfdExitStatus: 9},
			" of an exited process (killed by signal 9)"},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_TIMERFD, Timerfd: &imagepb.Timerfd{ClockId: 1, ValueNs: 2, IntervalNs: 3, Ticks: 4, SettimeFlags: 1}},
			" clock 1, next in 2ns, interval 3ns, 4 unread tick(s) (absolute)"},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_PTY, Pty: &imagepb.Pty{Index: 3, Master: true, Sid: 4, FgPgid: 5,
			Termios: &imagepb.PtyTermios{Lflag: unix.ICANON | unix.ECHO}, Winsize: &imagepb.PtyWinsize{Rows: 2, Cols: 3}, Input: []byte("a")}},
			" master of /dev/pts/3: canonical echo, 3x2, queued 1B in (to the slave) 0B out (to the master), controlling terminal of session 4, foreground group 5"},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_PTY, Pty: &imagepb.Pty{Index: 3}}, " slave of /dev/pts/3"},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_CONSOLE, Pty: &imagepb.Pty{Index: 0}}, " container console /dev/pts/0 (master outside): "},
		{&imagepb.FileEntry{Kind: imagepb.FileKind_FILE_MEMFD, Path: "m", Size: 9}, ` memfd "m", 9 bytes`},
	} {
		if got := Describe(c.f); got != c.want {
			t.Errorf("%v: %q, want %q", c.f.Kind, got, c.want)
		}
	}
}
