package procfs

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseFdInfo(t *testing.T) {
	tests := []struct {
		file   string
		pos    int64
		flags  uint32
		mntID  int
		ino    uint64
		fields map[string][]string
	}{
		// open(O_WRONLY|O_CREAT|O_APPEND|O_CLOEXEC) after write(3).
		{"fdinfo_append.txt", 3, 0o2102001, 26, 9977952, map[string][]string{}},
		// open(O_RDWR): O_LARGEFILE is forced on 64-bit.
		{"fdinfo_file.txt", 0, 0o100002, 26, 9977951, map[string][]string{}},
		// memfd_create: internal shm mount, mnt_id 0.
		{"fdinfo_memfd.txt", 0, 0o100002, 0, 1026, map[string][]string{}},
		{"fdinfo_eventfd.txt", 0, 0o2004002, 17, 1039, map[string][]string{
			"eventfd-count": {"7"}, "eventfd-id": {"1"}, "eventfd-semaphore": {"0"},
		}},
		{"fdinfo_timerfd.txt", 0, 0o2000002, 17, 1039, map[string][]string{
			"clockid": {"1"}, "ticks": {"0"}, "settime flags": {"00"},
			"it_value": {"(99, 999389434)"}, "it_interval": {"(1, 0)"},
		}},
		{"fdinfo_signalfd.txt", 0, 0o2, 17, 1039, map[string][]string{"sigmask": {"0000000000004200"}}},
		{"fdinfo_epoll.txt", 0, 0o2, 17, 1039, map[string][]string{
			"tfd": {"5 events:       19 data:             1234  pos:0 ino:40f sdev:10"},
		}},
		{"fdinfo_inotify.txt", 0, 0, 17, 1039, map[string][]string{
			"inotify wd": {"1 ino:3c4a3 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			raw := fixture(t, tc.file)
			fi, err := ParseFdInfo(strings.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Pos != tc.pos || fi.Flags != tc.flags || fi.MntID != tc.mntID || fi.Ino != tc.ino {
				t.Errorf("got pos=%d flags=%#o mnt_id=%d ino=%d", fi.Pos, fi.Flags, fi.MntID, fi.Ino)
			}
			if !reflect.DeepEqual(fi.Fields, tc.fields) {
				t.Errorf("Fields = %q, want %q", fi.Fields, tc.fields)
			}
			if fi.Raw != raw {
				t.Error("Raw differs from input")
			}
		})
	}

	t.Run("repeated keys, lines without colon", func(t *testing.T) {
		in := "pos:\t-1\nflags:\t02\nmnt_id:\t17\nino:\t1039\n" +
			"tfd:        5 events:       19 data:             1234  pos:0 ino:40f sdev:10\n" +
			"tfd:        6 events:       19 data:                6  pos:0 ino:410 sdev:10\n" +
			"no colon here\n"
		fi, err := ParseFdInfo(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Pos != -1 || len(fi.Fields["tfd"]) != 2 || len(fi.Fields) != 1 {
			t.Errorf("got %+v", fi)
		}
		if v, ok := fi.Field("tfd"); !ok || !strings.HasPrefix(v, "5 ") {
			t.Errorf("Field(tfd) = %q, %v", v, ok)
		}
		if _, ok := fi.Field("nope"); ok {
			t.Error("Field(nope) found")
		}
	})
}

func TestParseFdInfoMalformed(t *testing.T) {
	const ok = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\n"
	for _, in := range []string{
		"",
		"pos:\t0\nflags:\t02\nmnt_id:\t17\n",
		"flags:\t02\nmnt_id:\t17\nino:\t1039\n",
		strings.Replace(ok, "02", "08", 1),
		strings.Replace(ok, "02", "0x2", 1),
		strings.Replace(ok, "02", "", 1),
		strings.Replace(ok, "pos:\t0", "pos:\tzero", 1),
		strings.Replace(ok, "17", "-", 1),
		strings.Replace(ok, "1039", "-1039", 1),
		ok + "pos:\t0\n",
		ok + strings.Repeat("x", maxSmallFile),
	} {
		_, err := ParseFdInfo(strings.NewReader(in))
		wantMalformed(t, err)
	}
}
