package ptrace

import (
	"encoding/binary"
	"fmt"
)

// sigactionsRet is the offset of the sigaction loop's return values in
// the scratch page (the actions are at sig*32).
const sigactionsRet = 0xa00

// Sigaction is one signal's struct kernel_sigaction as rt_sigaction
// returns it.
type Sigaction struct {
	Handler, Flags, Restorer, Mask uint64
}

// Sigactions returns the actions of signals 1..64 of the process (thread
// 0), indexed by signal number; ok[sig] is false where rt_sigaction failed.
// The loop runs from the injection area and counts as one injected call.
func (r *Remote) Sigactions() (acts [65]Sigaction, ok [65]bool, err error) {
	if err := r.runArea(0, codeSigacts, r.Scratch, 1); err != nil {
		return acts, ok, fmt.Errorf("tid %d: sigaction loop: %w", r.P.Threads[0].Tid, err)
	}
	return r.readSigactions()
}

// readSigactions decodes the sigaction loop's output in the scratch page.
func (r *Remote) readSigactions() (acts [65]Sigaction, ok [65]bool, err error) {
	buf := make([]byte, sigactionsRet+65*8)
	if err := r.Mem.ReadAt(buf, r.Scratch); err != nil {
		return acts, ok, err
	}
	le := binary.LittleEndian
	for sig := 1; sig <= 64; sig++ {
		if int64(le.Uint64(buf[sigactionsRet+sig*8:])) != 0 {
			continue
		}
		b := buf[sig*32:]
		acts[sig] = Sigaction{le.Uint64(b), le.Uint64(b[8:]), le.Uint64(b[16:]), le.Uint64(b[24:])}
		ok[sig] = true
	}
	return acts, ok, nil
}

// RunCode executes the code at addr (size bytes, ending with int3) in the
// stopped thread tid, from the register template base with rbx and r12
// set, until the int3. The thread's signals must be blocked, as for
// injected syscalls.
func RunCode(tid int, base Regs, addr uint64, size int, rbx, r12 uint64) error {
	if err := StartCode(tid, base, addr, rbx, r12); err != nil {
		return err
	}
	return WaitCode(tid, addr, size)
}

// StartCode is the first half of RunCode: it points the thread at the code
// and resumes it, without waiting. WaitCode must follow (the thread runs,
// then stops on the int3); meanwhile the tracer may use its other tracees.
func StartCode(tid int, base Regs, addr uint64, rbx, r12 uint64) error {
	regs := base
	regs.Rip = addr
	regs.Orig_rax = ^uint64(0)
	regs.Rbx = rbx
	regs.R12 = r12
	if err := SetRegs(tid, &regs); err != nil {
		return err
	}
	if err := Cont(tid, 0); err != nil {
		return fmt.Errorf("run code in tid %d: %w", tid, err)
	}
	return nil
}

// WaitCode is the second half of RunCode: it waits for the thread started
// by StartCode to stop on the int3 that ends the code of size bytes at
// addr.
func WaitCode(tid int, addr uint64, size int) error {
	for retry := 0; ; retry++ {
		ws, err := Wait(tid)
		if err != nil {
			return err
		}
		// a pending job-control notification traps first: go on
		if ws.Stopped() && int(ws)>>16 == EventStop && retry < 8 {
			if err := Cont(tid, 0); err != nil {
				return fmt.Errorf("run code in tid %d: %w", tid, err)
			}
			continue
		}
		if !ws.Stopped() || ws.StopSignal() != 5 /* SIGTRAP */ {
			return fmt.Errorf("code run in tid %d: %s", tid, Describe(ws))
		}
		break
	}
	out, err := GetRegs(tid)
	if err != nil {
		return err
	}
	if out.Rip != addr+uint64(size) {
		return fmt.Errorf("code run in tid %d: stopped at rip %#x, want %#x", tid, out.Rip, addr+uint64(size))
	}
	return nil
}

// SetSigactionsCode installs signal actions in one run inside the tracee:
// with rbx = a table of r12 entries of 40 bytes (the signal number, then
// its struct kernel_sigaction), it calls rt_sigaction(sig, &act, NULL, 8)
// for each entry and stores the return value over the signal number, then
// stops on int3.
var SetSigactionsCode = []byte{
	// loop:
	0x4d, 0x85, 0xe4, // test r12, r12
	0x74, 0x22, // jz done
	0x48, 0x8b, 0x3b, // mov rdi, [rbx]
	0x48, 0x8d, 0x73, 0x08, // lea rsi, [rbx+8]
	0x31, 0xd2, // xor edx, edx
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8
	0xb8, 0x0d, 0x00, 0x00, 0x00, // mov eax, SYS_rt_sigaction
	0x0f, 0x05, // syscall
	0x48, 0x89, 0x03, // mov [rbx], rax
	0x48, 0x83, 0xc3, 0x28, // add rbx, 40
	0x49, 0xff, 0xcc, // dec r12
	0xeb, 0xd9, // jmp loop
	// done:
	0xcc, // int3
}
