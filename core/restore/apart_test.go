package restore

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

func TestStaysApart(t *testing.T) {
	rw := uint32(unix.PROT_READ | unix.PROT_WRITE)
	anon := func(s, e uint64, name string) *imagepb.Vma {
		return &imagepb.Vma{Start: s, End: e, Prot: rw, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE, VmFlags: "rd wr mr mw me ac", Name: name}
	}
	a := anon(0x1000, 0x2000, "")
	for _, tc := range []struct {
		name string
		v    *imagepb.Vma
		want bool
	}{
		{"adjacent, same", anon(0x2000, 0x3000, ""), true},
		{"adjacent heap", anon(0x2000, 0x3000, "[heap]"), true},
		{"not adjacent", anon(0x3000, 0x4000, ""), false},
		{"other label", anon(0x2000, 0x3000, "[anon:x]"), false},
		{"other prot", &imagepb.Vma{Start: 0x2000, End: 0x3000, Prot: unix.PROT_READ, Kind: imagepb.VmaKind_VMA_ANON_PRIVATE, VmFlags: "rd wr mr mw me ac"}, false},
		{"file", &imagepb.Vma{Start: 0x2000, End: 0x3000, Prot: rw, Kind: imagepb.VmaKind_VMA_FILE_PRIVATE, VmFlags: "rd wr mr mw me ac"}, false},
	} {
		if got := staysApart(a, tc.v); got != tc.want {
			t.Errorf("%s: staysApart = %v, want %v", tc.name, got, tc.want)
		}
	}
	if staysApart(nil, a) {
		t.Error("staysApart(nil, v) = true")
	}
}

func TestFreeRange(t *testing.T) {
	vmas := []*imagepb.Vma{{Start: 1 << 20, End: 2 << 20}, {Start: 3 << 20, End: 4 << 20}}
	got, ok := freeRange(vmas, 1<<20, [][2]uint64{{2 << 20, 2<<20 + 4096}})
	if !ok || got != 4<<20 {
		t.Fatalf("freeRange = %#x, %v; want %#x", got, ok, 4<<20)
	}
	got, ok = freeRange(vmas, 4096, nil)
	if !ok || got != 2<<20 {
		t.Fatalf("freeRange = %#x, %v; want %#x", got, ok, 2<<20)
	}
}
