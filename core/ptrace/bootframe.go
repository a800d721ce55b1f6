package ptrace

import (
	"debug/buildinfo"
	"encoding/binary"
	"fmt"
)

// Where thread 0's boot frame goes (see bootSite). The frame must lie in
// memory that no code of the program uses while the frame is there, and,
// since a crash leaves it behind, afterwards:
//
//   - thread 0 runs on the main stack: below its red zone (where the
//     kernel puts a signal frame), at the bottom of the stack when that
//     lies below the red zone; nothing but thread 0 uses the main stack;
//   - thread 0 runs on another stack (a goroutine's, a coroutine's, an
//     alternate signal stack): the bottom of the main stack, when it holds
//     nothing but zeros (never touched, or put back by an earlier dump) or
//     a boot frame an earlier dump's crash left there. Not below the
//     thread's rsp: a Go program runs its signal handlers on their own
//     stack (SA_ONSTACK), so nothing guarantees room below a goroutine's
//     rsp: a frame there, left by a crash, overwrote the top of the
//     goroutine stack beneath it, and the garbage collector's next scan of
//     that goroutine died ("traceback did not unwind completely");
//   - else, for a program that is not Go, below that rsp's red zone (as
//     the kernel puts a signal frame for a handler without SA_ONSTACK);
//     a Go program's dump is refused.

// redZone is the x86-64 ABI's red zone below rsp.
const redZone = 128

// bootFrameMagic marks a boot frame: its first 8 bytes (the pretcode
// slot, which rt_sigreturn does not read) are "CRBF" and the frame's
// length, so that a frame a crash left at the bottom of the main stack is
// known as one by the next dump.
const bootFrameMagic = 0x46425243

// markBootFrame writes the mark into frame b.
func markBootFrame(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], bootFrameMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
}

// bootFrameSite returns where thread 0's boot frame of frameLen bytes
// goes, thread 0's rsp being rsp (see above).
func bootFrameSite(pid int, mem *Mem, vmas []vma, rsp uint64, frameLen int) (uint64, error) {
	need := uint64(frameLen+4095) &^ 4095
	stack := mainStack(vmas)
	if stack != nil && vmaOf(vmas, rsp-1) == stack {
		if stack.start+need+redZone <= rsp {
			return stack.start, nil
		}
		if f := (rsp - redZone - uint64(frameLen)) &^ 63; f >= stack.start && f < rsp {
			return f, nil
		}
		return 0, fmt.Errorf("no room for a signal frame on the stack of pid %d (rsp %#x)", pid, rsp)
	}
	if stack != nil && stack.end-stack.start >= need {
		free, err := stackBottomFree(mem, stack.start, need)
		if err != nil {
			return 0, err
		}
		if free {
			return stack.start, nil
		}
	}
	if isGoProgram(pid) {
		return 0, fmt.Errorf("no free memory for the injection's boot frame in pid %d: thread 0 runs on a goroutine's stack (rsp %#x) and the bottom of the main stack is in use", pid, rsp)
	}
	f := (rsp - redZone - uint64(frameLen)) &^ 63
	if v := vmaOf(vmas, rsp-1); v != nil && v.write && f >= v.start && f < rsp {
		return f, nil
	}
	return 0, fmt.Errorf("no room for a signal frame on the stack of pid %d (rsp %#x)", pid, rsp)
}

// mainStack returns the process's main stack ([stack], writable), or nil.
func mainStack(vmas []vma) *vma {
	for i := range vmas {
		if vmas[i].name == "[stack]" && vmas[i].write {
			return &vmas[i]
		}
	}
	return nil
}

// stackBottomFree reports whether the need bytes at addr (the bottom of
// the main stack) hold nothing of the program's: zeros only, but for a
// marked boot frame at addr (its length's worth). Reading maps a never
// touched page as the zero page, as the frame's save does anyway.
func stackBottomFree(mem *Mem, addr, need uint64) (bool, error) {
	buf := make([]byte, need)
	if err := mem.ReadAt(buf, addr); err != nil {
		return false, fmt.Errorf("read the bottom of the main stack: %w", err)
	}
	return bottomBytesFree(buf), nil
}

// bottomBytesFree is stackBottomFree's test of the bytes read.
func bottomBytesFree(buf []byte) bool {
	from := 0
	if len(buf) >= 8 && binary.LittleEndian.Uint32(buf) == bootFrameMagic {
		from = max(8, min(int(binary.LittleEndian.Uint32(buf[4:])), len(buf)))
	}
	for _, c := range buf[from:] {
		if c != 0 {
			return false
		}
	}
	return true
}

// isGoProgram reports whether pid's executable is a Go program (it has
// Go's build information).
func isGoProgram(pid int) bool {
	_, err := buildinfo.ReadFile(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil
}
