package procfs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fixture returns the content of testdata/name (captured on Linux 6.18).
func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantMalformed fails unless err wraps ErrMalformed.
func wantMalformed(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

const rw = unix.PROT_READ | unix.PROT_WRITE

func TestParseMaps(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []VMA
	}{
		{"empty (zombie)", "", nil},
		{"anon with trailing space",
			"7fa9d4eb8000-7fa9d4ebb000 rw-p 00000000 00:00 0 \n",
			[]VMA{{Start: 0x7fa9d4eb8000, End: 0x7fa9d4ebb000, Perms: "rw-p", Prot: rw}}},
		{"PROT_NONE guard",
			"7fa9d4eb7000-7fa9d4eb8000 ---p 00000000 00:00 0 \n",
			[]VMA{{Start: 0x7fa9d4eb7000, End: 0x7fa9d4eb8000, Perms: "---p"}}},
		{"file with offset, no trailing newline",
			"7fa9d4ee1000-7fa9d5037000 r-xp 00026000 fe:00 326269                     /usr/lib/x86_64-linux-gnu/libc.so.6",
			[]VMA{{Start: 0x7fa9d4ee1000, End: 0x7fa9d5037000, Perms: "r-xp", Prot: unix.PROT_READ | unix.PROT_EXEC,
				Offset: 0x26000, DevMajor: 0xfe, Inode: 326269, Path: "/usr/lib/x86_64-linux-gnu/libc.so.6"}}},
		{"deleted shared file with spaces and parens",
			"7fa9d509d000-7fa9d509f000 rw-s 00000000 fe:00 9977951                    /tmp/pfs/a file (x) (deleted)\n",
			[]VMA{{Start: 0x7fa9d509d000, End: 0x7fa9d509f000, Perms: "rw-s", Prot: rw, Shared: true,
				DevMajor: 0xfe, Inode: 9977951, Path: "/tmp/pfs/a file (x)", Deleted: true}}},
		{"SysV shm",
			"7fa9d50a2000-7fa9d50a3000 rw-s 00000000 00:01 0                          /SYSV00000000 (deleted)\n",
			[]VMA{{Start: 0x7fa9d50a2000, End: 0x7fa9d50a3000, Perms: "rw-s", Prot: rw, Shared: true,
				DevMinor: 1, Path: "/SYSV00000000", Deleted: true}}},
		{"memfd with space in name",
			"7fa9d50a3000-7fa9d50a4000 r--s 00000000 00:01 1026                       /memfd:my memfd (deleted)\n",
			[]VMA{{Start: 0x7fa9d50a3000, End: 0x7fa9d50a4000, Perms: "r--s", Prot: unix.PROT_READ, Shared: true,
				DevMinor: 1, Inode: 1026, Path: "/memfd:my memfd", Deleted: true}}},
		{"shared anon is /dev/zero (deleted) with an inode",
			"7fa9d50a4000-7fa9d50a6000 rw-s 00000000 00:01 1025                       /dev/zero (deleted)\n",
			[]VMA{{Start: 0x7fa9d50a4000, End: 0x7fa9d50a6000, Perms: "rw-s", Prot: rw, Shared: true,
				DevMinor: 1, Inode: 1025, Path: "/dev/zero", Deleted: true}}},
		{"vvar_vclock and vsyscall (wide addresses, short padding)",
			"7fa9d50ac000-7fa9d50ae000 r--p 00000000 00:00 0                          [vvar_vclock]\n" +
				"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n",
			[]VMA{
				{Start: 0x7fa9d50ac000, End: 0x7fa9d50ae000, Perms: "r--p", Prot: unix.PROT_READ, Path: "[vvar_vclock]"},
				{Start: 0xffffffffff600000, End: 0xffffffffff601000, Perms: "--xp", Prot: unix.PROT_EXEC, Path: "[vsyscall]"},
			}},
		// Synthetic: the test kernel lacks CONFIG_ANON_VMA_NAME.
		{"named anon",
			"7f0000000000-7f0000003000 rw-p 00000000 00:00 0                          [anon:my name]\n",
			[]VMA{{Start: 0x7f0000000000, End: 0x7f0000003000, Perms: "rw-p", Prot: rw, Path: "[anon:my name]"}}},
		// Synthetic: file names may end in spaces or '\r'; '\n' is `\012`.
		{"path with trailing space, CR and escaped newline",
			"7f0000000000-7f0000001000 r--p 00001000 08:11 12 /tmp/a\\012b \r\n",
			[]VMA{{Start: 0x7f0000000000, End: 0x7f0000001000, Perms: "r--p", Prot: unix.PROT_READ,
				Offset: 0x1000, DevMajor: 8, DevMinor: 0x11, Inode: 12, Path: "/tmp/a\\012b \r"}}},
		{"large device numbers",
			"1000-2000 r--p 00000000 103:fffff 1 /x\n",
			[]VMA{{Start: 0x1000, End: 0x2000, Perms: "r--p", Prot: unix.PROT_READ, DevMajor: 0x103, DevMinor: 0xfffff, Inode: 1, Path: "/x"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMaps(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseMapsMalformed(t *testing.T) {
	for _, in := range []string{
		"\n",
		"garbage\n",
		"1000-2000 rw-p 00000000 00:00\n",
		"10002000 rw-p 00000000 00:00 0\n",
		"1000-zz00 rw-p 00000000 00:00 0\n",
		"2000-1000 rw-p 00000000 00:00 0\n",
		"1000-1000 rw-p 00000000 00:00 0\n",
		"1000-2000 rw-q 00000000 00:00 0\n",
		"1000-2000 rw- 00000000 00:00 0\n",
		"1000-2000 wr-p 00000000 00:00 0\n",
		"1000-2000 rw-p 0000000g 00:00 0\n",
		"1000-2000 rw-p 00000000 0000 0\n",
		"1000-2000 rw-p 00000000 00:x0 0\n",
		"1000-2000 rw-p 00000000 00:00 -1\n",
		"1000-2000 rw-p 00000000 00:00 0 \n\n",
		"10000000000000000-10000000000000001 rw-p 00000000 00:00 0\n",
		"1000-2000 rw-p 00000000 00:00 0 " + strings.Repeat("x", maxLine+1) + "\n",
	} {
		_, err := ParseMaps(strings.NewReader(in))
		wantMalformed(t, err)
	}
}

func TestParseMapsFixture(t *testing.T) {
	vmas, err := ParseMaps(strings.NewReader(fixture(t, "maps.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if len(vmas) != 31 {
		t.Fatalf("got %d VMAs, want 31", len(vmas))
	}
	paths := map[string]*VMA{}
	for i := range vmas {
		v := &vmas[i]
		if i > 0 && v.Start < vmas[i-1].End {
			t.Errorf("VMA %d overlaps previous", i)
		}
		paths[v.Path] = v
	}
	for _, p := range []string{"[heap]", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "", "/dev/zero", "/SYSV00000000", "/memfd:my memfd", "/tmp/pfs/a file (x)"} {
		if paths[p] == nil {
			t.Errorf("no VMA with path %q", p)
		}
	}
	if v := paths["/dev/zero"]; !v.Deleted || !v.Shared || v.Inode == 0 {
		t.Errorf("shared anon: %+v", v)
	}
	if v := paths["[stack]"]; v.Prot != rw || v.Size() != 0x21000 {
		t.Errorf("stack: %+v", v)
	}
}
