package files

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// TestParseFanotify: the group line and the three kinds of marks of a
// fanotify fdinfo (captured on Linux 6.18), newest mark first.
func TestParseFanotify(t *testing.T) {
	flags, ev, marks, err := parseFanotify(fdinfo(t, "fanotify"))
	if err != nil {
		t.Fatal(err)
	}
	if flags != 3 || ev != 0x8000 || len(marks) != 4 {
		t.Fatalf("flags %#x event flags %#x, %d marks", flags, ev, len(marks))
	}
	if m := marks[0]; m.typ != imagepb.FanotifyMark_FILESYSTEM || m.inode.Sdev != 0x15 || m.m.Mask != 0x1000 {
		t.Errorf("file system mark: %+v", m)
	}
	if m := marks[1]; m.typ != imagepb.FanotifyMark_MOUNT || m.mntID != 0x16 {
		t.Errorf("mount mark: %+v", m)
	}
	if m := marks[2]; m.typ != imagepb.FanotifyMark_INODE || m.inode.Ino != 0x985a31 || m.inode.Sdev != 0xfe00000 || len(m.inode.Handle) != 8 || m.m.Mask != 0x48000002 {
		t.Errorf("inode mark: %+v", m)
	}
	if m := marks[3]; m.m.Mflags != 0x440 || m.m.Mask != 0 || m.m.IgnoredMask != 2 || m.inode.HandleType != 1 {
		t.Errorf("ignore mark: %+v", m.m)
	}
}

// TestParseFanotifyBad: damaged or unknown lines are errors, not panics.
func TestParseFanotifyBad(t *testing.T) {
	for _, l := range []string{
		"fanotify mnt_id:16 mflags:0 mask:1000 ignored_mask:0", // no group line
		"fanotify flags:3\n",
		"fanotify flags:3 event-flags:0\nfanotify mnt_ns:5 mflags:0 mask:1 ignored_mask:0",
		"fanotify flags:3 event-flags:0\nfanotify mnt_id:zz mflags:0 mask:1 ignored_mask:0",
		"fanotify flags:3 event-flags:0\nfanotify mnt_id:1 mask:1 ignored_mask:0",
		"fanotify flags:3 event-flags:0\nfanotify ino:1 sdev:0 mflags:0 mask:1 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:ab",
		"fanotify flags:3 event-flags:0\nfanotify flags:3 event-flags:0",
		"fanotify flags:3 event-flags:0\nfanotify junk",
	} {
		fi, err := procfs.ParseFdInfo(bytes.NewReader([]byte("pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\n" + l + "\n")))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := parseFanotify(fi); err == nil || !strings.Contains(err.Error(), "fanotify") {
			t.Errorf("%q: err %v", l, err)
		}
	}
}

// TestOpenFanotifyRoundTrip: a group made from an entry shows the same
// flags and marks in fdinfo, in the same order (oldest mark first in the
// entry, newest first in fdinfo); damaged entries fail clearly.
func TestOpenFanotifyRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fanotify mount marks need root")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	g := &imagepb.FanotifyGroup{InitFlags: unix.FAN_CLASS_NOTIF | unix.FAN_NONBLOCK, EventFFlags: unix.O_RDONLY, Marks: []*imagepb.FanotifyMark{
		{Type: imagepb.FanotifyMark_INODE, Path: file, Mask: unix.FAN_MODIFY, IgnoredMask: unix.FAN_OPEN, Mflags: unix.FAN_MARK_IGNORED_SURV_MODIFY, Dev: st.Dev, Ino: st.Ino},
		{Type: imagepb.FanotifyMark_INODE, Path: dir, Mask: unix.FAN_CLOSE_WRITE | unix.FAN_EVENT_ON_CHILD},
		{Type: imagepb.FanotifyMark_MOUNT, Path: "/proc", Mask: unix.FAN_OPEN_EXEC},
	}}
	f := &imagepb.FileEntry{Kind: imagepb.FileKind_FILE_FANOTIFY, Fanotify: g}
	g.Marks[1].Dev, g.Marks[1].Ino = statDevIno(t, dir)
	if err := checkFanotify(f); err != nil {
		t.Fatal(err)
	}
	fd, err := openFanotify(f)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	fi, err := procfs.ReadFdInfo(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	flags, _, marks, err := parseFanotify(fi)
	if err != nil {
		t.Fatal(err)
	}
	if flags != g.InitFlags || len(marks) != 3 || fi.Flags&unix.O_NONBLOCK != 0 {
		t.Fatalf("flags %#x (fd flags %#o), %d marks", flags, fi.Flags, len(marks))
	}
	if m := marks[2]; m.typ != imagepb.FanotifyMark_INODE || m.inode.Ino != st.Ino || m.m.Mask != unix.FAN_MODIFY || m.m.IgnoredMask != unix.FAN_OPEN || m.m.Mflags != unix.FAN_MARK_IGNORED_SURV_MODIFY {
		t.Errorf("oldest mark: %+v %+v", m.inode, m.m)
	}
	if marks[0].typ != imagepb.FanotifyMark_MOUNT {
		t.Errorf("newest mark is %v", marks[0].typ)
	}

	for _, bad := range []*imagepb.FileEntry{
		{Kind: imagepb.FileKind_FILE_FANOTIFY},
		{Kind: imagepb.FileKind_FILE_FANOTIFY, Fanotify: &imagepb.FanotifyGroup{InitFlags: unix.FAN_CLASS_CONTENT}},
		{Kind: imagepb.FileKind_FILE_FANOTIFY, Fanotify: &imagepb.FanotifyGroup{Marks: []*imagepb.FanotifyMark{{Type: 7, Path: dir, Mask: 1}}}},
		{Kind: imagepb.FileKind_FILE_FANOTIFY, Fanotify: &imagepb.FanotifyGroup{Marks: []*imagepb.FanotifyMark{{Path: dir, Mask: 1, Mflags: 1 << 30}}}},
		{Kind: imagepb.FileKind_FILE_FANOTIFY, Fanotify: &imagepb.FanotifyGroup{Marks: []*imagepb.FanotifyMark{{Path: filepath.Join(dir, "gone"), Mask: 1}}}},
	} {
		if fd, err := openFanotify(bad); err == nil {
			unix.Close(fd)
			t.Errorf("%v: no error", bad)
		}
	}
	if err := checkFanotify(&imagepb.FileEntry{Fanotify: &imagepb.FanotifyGroup{Marks: []*imagepb.FanotifyMark{{Path: file, Dev: st.Dev, Ino: st.Ino + 1}}}}); err == nil {
		t.Error("checkFanotify: another inode at the path passed")
	}
}

func statDevIno(t *testing.T, p string) (uint64, uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}
