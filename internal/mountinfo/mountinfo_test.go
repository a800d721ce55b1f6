package mountinfo

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Info
		err  bool
	}{
		{
			name: "proc(5) example",
			in:   "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
			want: []Info{{ID: 36, Parent: 35, Major: 98, Minor: 0, Root: "/mnt1", MountPoint: "/mnt2", Options: "rw,noatime",
				Optional: "master:1", Master: 1, FSType: "ext3", Source: "/dev/root", SuperOptions: "rw,errors=continue"}},
		},
		{
			name: "no optional fields",
			in:   "25 1 0:22 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=65536k,mode=1777",
			want: []Info{{ID: 25, Parent: 1, Major: 0, Minor: 22, Root: "/", MountPoint: "/dev/shm", Options: "rw,nosuid,nodev",
				FSType: "tmpfs", Source: "tmpfs", SuperOptions: "rw,size=65536k,mode=1777"}},
		},
		{
			name: "all optional fields and an unknown one",
			in:   "40 30 0:50 / /a rw shared:7 master:3 propagate_from:2 unbindable future:9 - proc proc rw",
			want: []Info{{ID: 40, Parent: 30, Major: 0, Minor: 50, Root: "/", MountPoint: "/a", Options: "rw",
				Optional: "shared:7 master:3 propagate_from:2 unbindable future:9", Shared: 7, Master: 3, PropagateFrom: 2, Unbindable: true,
				FSType: "proc", Source: "proc", SuperOptions: "rw"}},
		},
		{
			name: "escapes in root, mount point and source",
			in:   `41 30 8:1 /with\040space /a\011tab\012nl\134bs rw - ext4 /dev/my\040disk rw`,
			want: []Info{{ID: 41, Parent: 30, Major: 8, Minor: 1, Root: "/with space", MountPoint: "/a\ttab\nnl\\bs", Options: "rw",
				FSType: "ext4", Source: "/dev/my disk", SuperOptions: "rw"}},
		},
		{
			name: "empty source and blank lines",
			in:   "\n50 1 0:60 / /x rw - tmpfs  rw\n\n",
			want: []Info{{ID: 50, Parent: 1, Major: 0, Minor: 60, Root: "/", MountPoint: "/x", Options: "rw", FSType: "tmpfs", SuperOptions: "rw"}},
		},
		{
			name: "nsfs root",
			in:   "60 1 0:4 net:[4026531840] /run/netns/x rw - nsfs nsfs rw",
			want: []Info{{ID: 60, Parent: 1, Major: 0, Minor: 4, Root: "net:[4026531840]", MountPoint: "/run/netns/x", Options: "rw", FSType: "nsfs", Source: "nsfs", SuperOptions: "rw"}},
		},
		{name: "too few fields", in: "36 35 98:0 /mnt1 /mnt2 rw - ext3", err: true},
		{name: "no separator", in: "36 35 98:0 /mnt1 /mnt2 rw master:1 ext3 /dev/root rw", err: true},
		{name: "too many fields after separator", in: "36 35 98:0 / /m rw - ext3 /dev/root rw extra", err: true},
		{name: "bad id", in: "x 35 98:0 / /m rw - ext3 /dev/root rw", err: true},
		{name: "negative parent", in: "1 -3 98:0 / /m rw - ext3 /dev/root rw", err: true},
		{name: "bad major:minor", in: "1 2 98 / /m rw - ext3 /dev/root rw", err: true},
		{name: "bad minor", in: "1 2 98:z / /m rw - ext3 /dev/root rw", err: true},
		{name: "relative mount point", in: "1 2 98:0 / m rw - ext3 /dev/root rw", err: true},
		{name: "truncated escape", in: `1 2 98:0 / /m\04 rw - ext3 /dev/root rw`, err: true},
		{name: "non-octal escape", in: `1 2 98:0 / /m\089 rw - ext3 /dev/root rw`, err: true},
		{name: "bad shared", in: "1 2 98:0 / /m rw shared:x - ext3 /dev/root rw", err: true},
		{name: "shared without number", in: "1 2 98:0 / /m rw shared - ext3 /dev/root rw", err: true},
		{name: "empty fstype", in: "1 2 98:0 / /m rw -  /dev/root rw", err: true},
		{name: "second line bad", in: "1 0 98:0 / / rw - ext4 /dev/root rw\ngarbage\n", err: true},
		{name: "overlong line", in: strings.Repeat("a", maxLine+10), err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in), nil)
			if tc.err {
				if err == nil {
					t.Fatalf("Parse(%q) = %+v, want an error", tc.in, got)
				}
				if !strings.Contains(tc.name, "overlong") && !errors.Is(err, ErrMalformed) {
					t.Errorf("error %v does not wrap ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestOptionValue(t *testing.T) {
	v, ok := OptionValue("rw,size=65536k,mode=755", "size")
	if !ok || v != "65536k" {
		t.Errorf("size = %q %v", v, ok)
	}
	if HasOption("rw,nosuid", "nosu") || !HasOption("rw,nosuid", "nosuid") {
		t.Error("HasOption")
	}
}

func TestFilter(t *testing.T) {
	const in = "22 1 0:21 / /sys rw - sysfs sysfs rw\n" +
		"31 22 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n" +
		"40 22 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n" +
		"41 1 8:1 / /data rw - ext4 /dev/sda1 rw\n"
	for _, tc := range []struct {
		name string
		f    Filter
		want []int // mount IDs
	}{
		{"nil keeps all", nil, []int{22, 31, 40, 41}},
		{"fstype", FSType("cgroup", "cgroup2"), []int{31, 40}},
		{"fstype none", FSType("xfs"), nil},
		{"id stops", ID(31), []int{31}},
		{"id absent", ID(99), nil},
		{"stop keeps the stopping mount", func(i *Info) (bool, bool) { return false, i.ID == 40 }, []int{22, 31, 40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(in), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int
			for _, i := range got {
				ids = append(ids, i.ID)
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("got %v, want %v", ids, tc.want)
			}
		})
	}
}

// TestFilterSeesBadLines: a malformed line is an error even where the
// filter would have dropped it, and a stop ends the read before it.
func TestFilterSeesBadLines(t *testing.T) {
	in := "22 1 0:21 / /sys rw - sysfs sysfs rw\ngarbage\n"
	if _, err := Parse(strings.NewReader(in), FSType("cgroup")); !errors.Is(err, ErrMalformed) {
		t.Errorf("FSType over a bad line: %v", err)
	}
	if got, err := Parse(strings.NewReader(in), ID(22)); err != nil || len(got) != 1 {
		t.Errorf("ID(22) stopping before a bad line: %+v, %v", got, err)
	}
}

func TestUnescape(t *testing.T) {
	if got, err := Unescape(`/mnt/a\040b\134c`); err != nil || got != `/mnt/a b\c` {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := Unescape(`/mnt/a\9`); err == nil {
		t.Error("truncated escape accepted")
	}
}

func TestDev(t *testing.T) {
	i := Info{Major: 8, Minor: 17}
	if i.Dev() != unix.Mkdev(8, 17) {
		t.Errorf("Dev %#x", i.Dev())
	}
}

func TestReadSelf(t *testing.T) {
	got, err := Self(nil)
	if err != nil || len(got) == 0 {
		t.Fatalf("got %d mounts, %v", len(got), err)
	}
	if _, err := ForPid(1<<30, nil); err == nil {
		t.Error("ForPid of no process: no error")
	}
}

// FuzzParse: any input parses or fails with an error, never a panic, and a
// mount kept carries an absolute mount point and a filesystem type.
func FuzzParse(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
	f.Add("41 30 8:1 /with\\040space /a rw shared:7 - ext4 /dev/my\\040disk rw\n")
	f.Add("50 1 0:60 / /x rw - tmpfs  rw\n")
	f.Fuzz(func(t *testing.T, in string) {
		infos, err := Parse(strings.NewReader(in), nil)
		if err != nil {
			return
		}
		for _, i := range infos {
			if !strings.HasPrefix(i.MountPoint, "/") || i.FSType == "" {
				t.Fatalf("kept %+v", i)
			}
		}
	})
}
