package ptrace

import "testing"

func TestBottomBytesFree(t *testing.T) {
	zero := make([]byte, 8192)
	if !bottomBytesFree(zero) {
		t.Fatal("zeros: not free")
	}
	left := make([]byte, 8192)
	fb := buildFrame(0x1000, Regs{Rip: 0x401000, Rsp: 0x7ffd0000}, 0, make([]byte, 2688))
	markBootFrame(fb)
	copy(left, fb)
	if !bottomBytesFree(left) {
		t.Fatal("a marked boot frame: not free")
	}
	left[len(fb)+10] = 1
	if bottomBytesFree(left) {
		t.Fatal("a byte past the boot frame: free")
	}
	used := make([]byte, 8192)
	used[4000] = 0x42
	if bottomBytesFree(used) {
		t.Fatal("a non-zero byte: free")
	}
	unmarked := make([]byte, 8192)
	copy(unmarked, buildFrame(0x1000, Regs{Rip: 0x401000}, 0, make([]byte, 2688)))
	if bottomBytesFree(unmarked) {
		t.Fatal("an unmarked frame: free")
	}
}
