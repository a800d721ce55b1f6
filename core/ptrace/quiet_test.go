package ptrace

import (
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
