package procfs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFreeGapIn(t *testing.T) {
	vmas := []VMA{
		{Start: 0x10000, End: 0x20000, Path: "/bin/x"},
		{Start: 0x20000, End: 0x30000, Path: "[heap]"},
		{Start: 0x7000_0000, End: 0x7000_2000},
		{Start: 0x7000_5000, End: 0x7000_6000, Path: "/lib/a"},
		{Start: 0x7fff_0000, End: 0x7fff_8000, Path: "[stack]"},
		{Start: 0x7fff_9000, End: 0x7fff_a000, Path: "[vdso]"},
	}
	// 0x3000 between the anonymous one and the lib: too small for 0x2000
	// and two guard pages; the next gap down is under the anonymous one
	got, err := freeGapIn(vmas, 0x2000)
	if err != nil || got != 0x7000_0000-0x1000-0x2000 {
		t.Fatalf("got %#x, %v", got, err)
	}
	if got, err := freeGapIn(vmas, 0x1000); err != nil || got != 0x7000_5000-0x2000 {
		t.Fatalf("got %#x, %v", got, err)
	}
	if _, err := freeGapIn(vmas[:2], 0x1000); err == nil {
		t.Fatal("no gap: want an error")
	}
}

// TestFreeGapMaps maps at the address FreeGap gives with
// MAP_FIXED_NOREPLACE: it is free, and the mapping is a line of its own.
func TestFreeGapMaps(t *testing.T) {
	const size = 0x20000
	addr, err := FreeGap(os.Getpid(), size)
	if err != nil {
		t.Fatal(err)
	}
	got, _, errno := unix.Syscall6(unix.SYS_MMAP, uintptr(addr), size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
	if errno != 0 || uint64(got) != addr {
		t.Fatalf("mmap at %#x: %#x %v", addr, got, errno)
	}
	defer unix.Syscall(unix.SYS_MUNMAP, uintptr(addr), size, 0)
	vmas, err := ReadMaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vmas {
		if v.Start <= addr && addr < v.End && (v.Start != addr || v.End != addr+size) {
			t.Fatalf("mapping merged: %#x-%#x", v.Start, v.End)
		}
	}
}
