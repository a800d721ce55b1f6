package procfs

import (
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// stackBlock is the [stack] block of testdata/smaps.txt.
const stackBlock = `7ffd89021000-7ffd89042000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                  24 kB
Pss:                  24 kB
Pss_Dirty:            24 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:        24 kB
Referenced:           24 kB
Anonymous:            24 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
VmFlags: rd wr mr mw me gd ac 
`

// vsyscallBlock is the last block of testdata/smaps.txt (no trailing newline).
const vsyscallBlock = `ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Size:                  4 kB
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  8 kB
VmFlags: ex`

func TestParseSmaps(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Smaps
	}{
		{"empty", "", nil},
		{"stack", stackBlock, Smaps{{
			VMA:  VMA{Start: 0x7ffd89021000, End: 0x7ffd89042000, Perms: "rw-p", Prot: rw, Path: "[stack]"},
			Size: 132 << 10, Rss: 24 << 10, Anonymous: 24 << 10, KernelPageSize: 4 << 10,
			VmFlags: []string{"rd", "wr", "mr", "mw", "me", "gd", "ac"},
		}}},
		{"two blocks, unknown keys ignored", stackBlock + vsyscallBlock, Smaps{
			{
				VMA:  VMA{Start: 0x7ffd89021000, End: 0x7ffd89042000, Perms: "rw-p", Prot: rw, Path: "[stack]"},
				Size: 132 << 10, Rss: 24 << 10, Anonymous: 24 << 10, KernelPageSize: 4 << 10,
				VmFlags: []string{"rd", "wr", "mr", "mw", "me", "gd", "ac"},
			},
			{
				VMA:  VMA{Start: 0xffffffffff600000, End: 0xffffffffff601000, Perms: "--xp", Prot: unix.PROT_EXEC, Path: "[vsyscall]"},
				Size: 4 << 10, Swap: 8 << 10, VmFlags: []string{"ex"},
			},
		}},
		{"empty VmFlags", "1000-2000 ---p 00000000 00:00 0 \nVmFlags: \n", Smaps{{
			VMA: VMA{Start: 0x1000, End: 0x2000, Perms: "---p"}, VmFlags: []string{},
		}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSmaps(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseSmapsMalformed(t *testing.T) {
	for _, in := range []string{
		"Size: 4 kB\n", // key before header
		"1000-2000 rw-p 00000000 00:00 0\nSize: 4 kB\n",       // no VmFlags
		"1000-2000 rw-p 00000000 00:00 0\nRss: 4\nVmFlags:\n", // no unit
		"1000-2000 rw-p 00000000 00:00 0\nRss: x kB\nVmFlags:\n",
		"1000-2000 rw-p 00000000 00:00 0\nSwap: 4 MB\nVmFlags:\n",
		"1000-2000 rw-p 00000000 00:00 0\nSize: 18446744073709551615 kB\nVmFlags:\n",
		"1000-2000 rw-p 00000000 00:00 0\nVmFlags: rd\n1000-3000 rw-p 00000000 00:00 0\nVmFlags: rd\n", // overlap
		"1000-2000 rw-p 00000000 00:00 0\nVmFlags: rd\n2000-3000 rw-p 00000000 00:00 0\n",              // last lacks VmFlags
		"1000-2000 rw-p 00000000 00:00 0\nVmFlags: rd\ngarbage\n",
		"1000-2000 rw-p 00000000 00:00 0\nVmFlags: rd\n\n",
	} {
		_, err := ParseSmaps(strings.NewReader(in))
		wantMalformed(t, err)
	}
}

func TestParseSmapsFixture(t *testing.T) {
	sm, err := ParseSmaps(strings.NewReader(fixture(t, "smaps.txt")))
	if err != nil {
		t.Fatal(err)
	}
	vmas, err := ParseMaps(strings.NewReader(fixture(t, "maps.txt")))
	if err != nil {
		t.Fatal(err)
	}
	// smaps.txt and maps.txt were captured from the same process.
	if len(sm) != len(vmas) {
		t.Fatalf("smaps has %d VMAs, maps %d", len(sm), len(vmas))
	}
	want := map[string]string{
		"[stack]":         "rd wr mr mw me gd ac",
		"[vdso]":          "rd ex mr mw me de",
		"[vvar]":          "rd mr pf io de dd",
		"[vvar_vclock]":   "rd mr pf io de dd",
		"[vsyscall]":      "ex",
		"[heap]":          "rd wr mr mw me ac",
		"/dev/zero":       "rd wr sh mr mw me ms",
		"/SYSV00000000":   "rd wr sh mr mw me ms",
		"/memfd:my memfd": "rd sh mr mw me ms",
	}
	locked := 0
	for i := range sm {
		e := &sm[i]
		if e.VMA != vmas[i] {
			t.Errorf("VMA %d: smaps header %+v != maps %+v", i, e.VMA, vmas[i])
		}
		if e.Size != e.VMA.Size() {
			t.Errorf("%x: Size %d != End-Start %d", e.Start, e.Size, e.VMA.Size())
		}
		if w, ok := want[e.Path]; ok && strings.Join(e.VmFlags, " ") != w {
			t.Errorf("%s: VmFlags %q, want %q", e.Path, e.VmFlags, w)
		}
		if e.HasFlag("lo") {
			locked++
		}
		if got, ok := sm.Find(e.Start); !ok || got != e {
			t.Errorf("Find(%x) = %p, %v", e.Start, got, ok)
		}
	}
	if locked != 1 {
		t.Errorf("%d mlock()ed VMAs, want 1", locked)
	}
	if _, ok := sm.Find(sm[0].Start + 1); ok {
		t.Error("Find of a non-start address succeeded")
	}
	if e, _ := sm.Find(0x7ffd89021000); e == nil || e.Rss != 24<<10 || e.Anonymous != 24<<10 || !e.HasFlag("gd") || e.HasFlag("sh") {
		t.Errorf("stack entry: %+v", e)
	}
}
