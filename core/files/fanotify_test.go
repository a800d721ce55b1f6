package files

import (
	"bytes"
	"strings"
	"testing"

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
