package ptrace

import (
	"encoding/binary"
	"testing"
)

func TestRegsRoundTrip(t *testing.T) {
	var r Regs
	r.Rip, r.Rsp, r.Fs_base, r.Orig_rax = 0x401000, 0x7ffc0000, 0x7f0000001000, ^uint64(0)
	b := RegsBytes(&r)
	if len(b) != 27*8 {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := RegsFromBytes(b)
	if err != nil || got != r {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := RegsFromBytes(b[:100]); err == nil {
		t.Fatal("short registers accepted")
	}
}

func TestXStateFeatures(t *testing.T) {
	x := make([]byte, 2432)
	binary.LittleEndian.PutUint64(x[464:], 0xe7)
	f, size, ok := XStateFeatures(x)
	if !ok || f != 0xe7 || size != 2432 {
		t.Fatalf("got %#x %d %v", f, size, ok)
	}
	if _, _, ok := XStateFeatures(x[:400]); ok {
		t.Fatal("truncated xsave accepted")
	}
}

func TestFirstExec(t *testing.T) {
	maps := `55d0c0000000-55d0c0001000 r--p 00000000 08:01 12 /bin/x
55d0c0001000-55d0c0005000 r-xp 00001000 08:01 12 /bin/x
7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]
`
	a, ok := FirstExec(maps)
	if !ok || a != 0x55d0c0001000 {
		t.Fatalf("got %#x %v", a, ok)
	}
	if _, ok := FirstExec("7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]\n"); ok {
		t.Fatal("vdso accepted as gadget site")
	}
}
