package ptrace

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func TestRestartFixup(t *testing.T) {
	for _, c := range []struct {
		orig, rax, wantRax uint64
		rewind             bool
	}{
		{202, ^uint64(511), 202, true},                  // -ERESTARTSYS: futex again
		{34, ^uint64(513), 34, true},                    // -ERESTARTNOHAND
		{35, ^uint64(515), sysRestartSyscall, true},     // -ERESTART_RESTARTBLOCK
		{0, ^uint64(3), ^uint64(3), false},              // -EINTR stays
		{^uint64(0), ^uint64(511), ^uint64(511), false}, // not in a syscall
	} {
		in := Regs{Orig_rax: c.orig, Rax: c.rax, Rip: 0x1000}
		out := RestartFixup(in)
		wantRip := uint64(0x1000)
		if c.rewind {
			wantRip -= 2
		}
		if out.Rax != c.wantRax || out.Rip != wantRip {
			t.Errorf("orig %d rax %#x: got rax %#x rip %#x, want %#x %#x", int64(c.orig), c.rax, out.Rax, out.Rip, c.wantRax, wantRip)
		}
	}
}

func TestStatusMasks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	os.WriteFile(p, []byte("Name:\tx\nSigPnd:\t0000000000000010\nShdPnd:\t0000000000000000\nSigIgn:\t0000000000000006\nSigCgt:\t0000000180000010\n"), 0o644)
	m, err := statusMasks(p)
	if err != nil {
		t.Fatal(err)
	}
	if m["SigPnd"] != SigtrapBit || m["SigIgn"] != 6 || m["SigCgt"] != 0x180000010 {
		t.Errorf("masks %v", m)
	}
	os.WriteFile(p, []byte("SigPnd:\tzz\n"), 0o644)
	if _, err := statusMasks(p); err == nil {
		t.Error("bad mask accepted")
	}
}

// TestSigframeXState: the AMX tile data goes into a signal frame only when
// the task uses it (its XSAVE buffer holds it only then); the size and the
// features in the frame's software bytes say so.
func TestSigframeXState(t *testing.T) {
	xs := make([]byte, 11008)
	binary.LittleEndian.PutUint64(xs[xsaveSwReservedOffset:], 0x600e7)
	binary.LittleEndian.PutUint64(xs[xstateBvOffset:], 0xa7)
	if n, f := sigframeXState(xs); n != 11008-8192 || f != 0x200e7 {
		t.Errorf("tiles unused: size %d features %#x, want %d %#x", n, f, 11008-8192, 0x200e7)
	}
	binary.LittleEndian.PutUint64(xs[xstateBvOffset:], 0x400a7)
	if n, f := sigframeXState(xs); n != 11008 || f != 0x600e7 {
		t.Errorf("tiles in use: size %d features %#x", n, f)
	}
	small := make([]byte, 2432)
	binary.LittleEndian.PutUint64(small[xsaveSwReservedOffset:], 0xe7)
	if n, f := sigframeXState(small); n != 2432 || f != 0xe7 {
		t.Errorf("no AMX: size %d features %#x", n, f)
	}
	fr := buildFrame(0x10000, Regs{}, 5, small)
	fp := fr[frameFpOff:]
	le := binary.LittleEndian
	if le.Uint32(fp[464:]) != fpMagic1 || le.Uint32(fp[468:]) != 2436 || le.Uint64(fp[472:]) != 0xe7 || le.Uint32(fp[480:]) != 2432 || le.Uint32(fp[2432:]) != fpMagic2 {
		t.Errorf("software bytes / magic2 wrong")
	}
	if le.Uint64(fr[frameSigmask:]) != 5 || le.Uint64(fr[frameMctx+184:]) != 0x10000+frameFpOff {
		t.Errorf("mask / fpstate pointer wrong")
	}
}
