package ptrace

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/internal/fault"
)

// Crash safety of injection. The dumper may die (kill -9, OOM, a panic) at
// any instant; the kernel then detaches every tracee and lets it run from
// the state it is in. So a seized thread must never be in a state that
// kills or changes it when simply resumed:
//
//   - the program's code is not modified: injected code lives in an area
//     of our own mapped into the target (runArea); only while that area is
//     mapped and unmapped are nine bytes at the ELF entry point (_start,
//     which a program never runs again) borrowed (bootCall);
//   - a thread runs injected code with its signals blocked and rsp pointing
//     at an rt_sigreturn frame that holds its original registers, signal
//     mask and FPU state; the code's last steps are a stop for the tracer
//     and rt_sigreturn. The stop is a signal-delivery stop of a signal the
//     process ignores (tkill to itself; a dead tracer leaves the signal to
//     be discarded), or, when the process ignores none (Go programs), a
//     park: rt_sigtimedwait for parkTimeout, which the tracer interrupts
//     (PTRACE_INTERRUPT). If the tracer is gone, the thread finishes the
//     calls, (waits out the park,) and returns by rt_sigreturn exactly
//     where it was, with its own mask;
//   - no single step and no int3: both leave a SIGTRAP (or the trap flag)
//     behind that kills a thread the tracer abandoned;
//   - a thread is in injected code (with all but the stop signal blocked)
//     only from its first run until the tracer moves on to another thread
//     or closes the area (unpark); every other thread, and that one
//     before and after, has its original registers and signal mask;
//   - registers are set before the mask is blocked, and the mask put back
//     before the registers: never the original registers with the signals
//     blocked.
//
// What a crash can leave: the area (an anonymous mapping of AreaSize bytes,
// never used by the program), a modified private copy of the nine bytes at
// the entry point, and thread 0's boot frame in memory the program does
// not use: at the bottom of the main stack, or below thread 0's red zone
// (see bootframe.go; never below a goroutine's rsp). A thread interrupted in
// a sleep with a restart block (clock_nanosleep, ...) that was the one being
// injected into sees EINTR, as after a signal handler (rt_sigreturn cancels
// the restart block). Injected calls that run after the crash run under
// the target's seccomp filter (the suspension ends with the tracer).

// Layout of the area: code, then scratch, control and a stack whose top
// holds the rt_sigreturn frame of the thread being injected into.
const (
	areaCodeOff    = 0
	areaScratchOff = 0x1000
	areaCtlOff     = 0x2000
	areaProbeOff   = 0x3000 // a page no one touches (see MapProbe)
	areaFrameOff   = 0x6000 // the frame; 12 KiB of stack below it
	areaFrameMax   = 0x5000
	// AreaSize is the size of the mapping the injector adds to a target.
	AreaSize = areaFrameOff + areaFrameMax
)

// Entry points into areaCode.
const (
	codeTail     = 0x00 // publish r14 at [r13]; then the park or the signal
	codeParkFrom = 0x04 // the poll park starts after the store
	codeParkTo   = 0x20 // after its rt_sigtimedwait syscall
	codeSigStop  = 0x3c // after the tkill of the signal stop
	codeBatch    = 0x80 // the batch loop (see BatchCode), then the tail
	codeSigacts  = 0xc0 // the sigaction loop (see Sigactions), then the tail
)

// areaCode is the injector's code (assembled from the listing below).
// Registers: rbx = table or scratch, r12 = count or first signal, r13 =
// control block (seq at 0, an empty signal set at 8, the park's timeout at
// 16), r14 = the run's sequence number, r15 = the stop signal (0: park),
// rsp = the thread's rt_sigreturn frame + 8.
//
//	00 tail:    mov [r13], r14; test r15, r15; jnz sigtail
//	            rt_sigtimedwait(r13+8 (empty set), NULL, r13+16, 8)
//	20          rt_sigreturn; ud2
//	29 sigtail: tkill(gettid(), r15d)
//	3c          rt_sigreturn; ud2
//	80 batch:   while r12: load nr and args from [rbx], syscall,
//	            [rbx+56] = rax, to tail on error; rbx += 64, r12--
//	            to tail
//	c0 sigacts: for r12 = 1..64: rt_sigaction(r12, NULL, rbx+r12*32, 8),
//	            [rbx+0xa00+r12*8] = rax; to tail
var areaCode = []byte{
	0x4d, 0x89, 0x75, 0x00, 0x4d, 0x85, 0xff, 0x75, 0x20, 0xb8, 0x80, 0x00, 0x00, 0x00, 0x49, 0x8d,
	0x7d, 0x08, 0x31, 0xf6, 0x49, 0x8d, 0x55, 0x10, 0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0x0f, 0x05,
	0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x0f, 0x0b, 0xb8, 0xba, 0x00, 0x00, 0x00, 0x0f, 0x05,
	0x89, 0xc7, 0x44, 0x89, 0xfe, 0xb8, 0xc8, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x0f, 0x00, 0x00,
	0x00, 0x0f, 0x05, 0x0f, 0x0b, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x66, 0x66, 0x2e, 0x0f, 0x1f,
	0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x1f, 0x40, 0x00,
	0x4d, 0x85, 0xe4, 0x0f, 0x84, 0x77, 0xff, 0xff, 0xff, 0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08,
	0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28,
	0x4c, 0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff,
	0x0f, 0x83, 0x4a, 0xff, 0xff, 0xff, 0x48, 0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc, 0xeb, 0xc1, 0x90,
	0x44, 0x89, 0xe7, 0x31, 0xf6, 0x4c, 0x89, 0xe2, 0x48, 0xc1, 0xe2, 0x05, 0x48, 0x01, 0xda, 0x41,
	0xba, 0x08, 0x00, 0x00, 0x00, 0xb8, 0x0d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x4a, 0x89, 0x84, 0xe3,
	0x00, 0x0a, 0x00, 0x00, 0x49, 0xff, 0xc4, 0x49, 0x83, 0xfc, 0x41, 0x75, 0xd3, 0xe9, 0x0e, 0xff,
	0xff, 0xff,
}

// parkTimeout is how long a thread whose tracer died waits in the park
// before it returns; the tracer must interrupt it within that time (it
// polls for the park as the thread runs, so it is late only when it is
// not scheduled for that long).
const parkTimeout = 500 * time.Millisecond

// sigreturn frame (struct rt_sigframe, x86-64) offsets.
const (
	frameUcFlags  = 8
	frameSsFlags  = 32
	frameMctx     = 48
	frameSigmask  = 304
	frameFpOff    = 512 // the XSAVE area, 64-byte aligned
	fpMagic1      = 0x46505853
	fpMagic2      = 0x46505845
	ucFlagsXstate = 1 | 2 | 4 // UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
	// an alternate-stack mode rt_sigreturn refuses (EINVAL, ignored): the
	// thread's sigaltstack is left as it is
	ssFlagsKeep = 4
)

// xfeatureTileData is the AMX tile data component: the one XSAVE feature
// the kernel gives a task only on use (after arch_prctl permission), the
// last of the standard layout and 8 KiB long.
const (
	xfeatureTileData     = 1 << 18
	xfeatureTileDataSize = 8192
	xstateBvOffset       = 512
)

// sigframeXState returns how much of the XSAVE area xs (GETREGSET's, as
// long as the largest the CPU has) goes into a signal frame, and the
// features it holds: rt_sigreturn falls back to the legacy FXSAVE part
// (and resets the AVX state) when the size is larger than the task's own
// buffer, which holds the tile data only once the task has used it.
func sigframeXState(xs []byte) (size int, features uint64) {
	features, _, _ = XStateFeatures(xs)
	size = len(xs)
	if features&xfeatureTileData != 0 && len(xs) >= xstateBvOffset+8 &&
		binary.LittleEndian.Uint64(xs[xstateBvOffset:])&xfeatureTileData == 0 && size > xfeatureTileDataSize {
		size -= xfeatureTileDataSize
		features &^= xfeatureTileData
	}
	return size, features
}

// frameSize is the size of the frame buildFrame makes for XSAVE area xs.
func frameSize(xs []byte) int {
	n, _ := sigframeXState(xs)
	return frameFpOff + n + 4
}

// buildFrame encodes the rt_sigreturn frame, to live at addr, that puts
// the thread back to regs, mask and its XSAVE state xs (as read by
// GetXState).
func buildFrame(addr uint64, regs Regs, mask uint64, xs []byte) []byte {
	n, features := sigframeXState(xs)
	b := make([]byte, frameFpOff+n+4)
	le := binary.LittleEndian
	le.PutUint64(b[frameUcFlags:], ucFlagsXstate)
	le.PutUint32(b[frameSsFlags:], ssFlagsKeep)
	mc := b[frameMctx:]
	for i, v := range []uint64{regs.R8, regs.R9, regs.R10, regs.R11, regs.R12, regs.R13, regs.R14, regs.R15,
		regs.Rdi, regs.Rsi, regs.Rbp, regs.Rbx, regs.Rdx, regs.Rax, regs.Rcx, regs.Rsp, regs.Rip, regs.Eflags} {
		le.PutUint64(mc[8*i:], v)
	}
	le.PutUint16(mc[144:], uint16(regs.Cs))
	le.PutUint16(mc[150:], uint16(regs.Ss))
	le.PutUint64(mc[168:], mask) // oldmask
	le.PutUint64(mc[184:], addr+frameFpOff)
	le.PutUint64(b[frameSigmask:], mask)
	fp := b[frameFpOff:]
	copy(fp[:n], xs)
	sw := fp[xsaveSwReservedOffset : xsaveSwReservedOffset+48]
	clear(sw)
	le.PutUint32(sw[0:], fpMagic1)
	le.PutUint32(sw[4:], uint32(n+4))
	le.PutUint64(sw[8:], features)
	le.PutUint32(sw[16:], uint32(n))
	le.PutUint32(fp[n:], fpMagic2)
	return b
}

// resumeRegs are the registers thread t resumes with when it leaves a
// stop of the given kind without the tracer: the original ones, with the
// kernel's restart fix-up applied when the stop is a syscall-exit stop.
func resumeRegs(t *Thread) Regs {
	if t.quietStop {
		return RestartFixup(t.Regs)
	}
	return t.Regs
}

// unpark puts the thread that ran injected code last back to its original
// mask and registers.
func (r *Remote) unpark() error {
	if r.framed < 0 || !r.parked {
		return nil
	}
	t := r.P.Threads[r.framed]
	r.parked = false
	if err := SetSigmask(t.Tid, t.Sigmask); err != nil {
		return err
	}
	regs := resumeRegs(t)
	return SetRegs(t.Tid, &regs)
}

// runArea runs the code at offset entry of the area in thread i with rbx
// and r12 set, until it parks, and leaves the thread parked (see the
// package comment on crash safety). Counts as one injected call.
func (r *Remote) runArea(i int, entry, rbx, r12 uint64) error {
	t := r.P.Threads[i]
	frame := r.area + areaFrameOff
	if r.framed != i {
		if err := r.unpark(); err != nil {
			return err
		}
		xs, err := t.XState()
		if err != nil {
			return err
		}
		if frameSize(xs) > areaFrameMax {
			return fmt.Errorf("tid %d: XSAVE area of %d bytes too large", t.Tid, len(xs))
		}
		if err := r.Mem.WriteAt(buildFrame(frame, RestartFixup(t.Regs), t.Sigmask, xs), frame); err != nil {
			return err
		}
		r.framed = i
	}
	r.seq++
	regs := RestartFixup(t.Regs)
	regs.Rip, regs.Orig_rax, regs.Rax, regs.Rsp = r.area+areaCodeOff+entry, ^uint64(0), 0, frame+8
	regs.Rbx, regs.R12, regs.R13, regs.R14, regs.R15 = rbx, r12, r.area+areaCtlOff, r.seq, uint64(r.stopSig)
	// registers first, then the mask: never the original registers with
	// every signal blocked
	if err := SetRegs(t.Tid, &regs); err != nil {
		return err
	}
	if !r.parked {
		mask := ^uint64(0)
		if r.stopSig != 0 {
			mask &^= 1 << (r.stopSig - 1)
		}
		if err := SetSigmask(t.Tid, mask); err != nil {
			return err
		}
		r.parked = true
	}
	t.quietStop = false // it will stop in an interrupt or signal stop
	fault.Step("inject")
	if err := Cont(t.Tid, 0); err != nil {
		return err
	}
	fault.Step("inject")
	var err error
	if r.stopSig != 0 {
		err = r.waitSignalStop(t)
	} else {
		err = r.waitParked(t)
	}
	if err != nil {
		return err
	}
	fault.Step("inject")
	r.calls++
	return nil
}

// pickStopSignal picks the signal that ends injected runs with a
// signal-delivery stop: one the process ignores (SIG_IGN, or SIG_DFL of a
// signal whose default is to ignore it) and that is not pending (in the
// shared queue or a thread's), so that a tracer that dies leaves it to be
// discarded. It must be blocked in no thread: a blocked signal is queued even when ignored, for sigwait or a
// signalfd to take, and one sent by someone else during a run would be
// lost. 0: none (Go programs catch every signal), the runs end in the
// park, which the tracer polls for.
func pickStopSignal(p *Process) int {
	m, err := statusMasks(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		return 0
	}
	ign, cgt, pnd := m["SigIgn"], m["SigCgt"], m["ShdPnd"]
	for _, t := range p.Threads {
		pnd |= t.Sigmask // blocked somewhere: not usable either
		// pending in a thread's own queue: the same as the shared one
		if tm, err := statusMasks(fmt.Sprintf("/proc/%d/task/%d/status", p.Pid, t.Tid)); err == nil {
			pnd |= tm["SigPnd"]
		}
	}
	usable := func(sig int) bool {
		bit := uint64(1) << (sig - 1)
		return pnd&bit == 0 && (ign&bit != 0 || cgt&bit == 0)
	}
	// default action: ignore
	for _, sig := range []int{int(unix.SIGURG), int(unix.SIGWINCH), int(unix.SIGCHLD)} {
		if usable(sig) {
			return sig
		}
	}
	for sig := 1; sig <= 64; sig++ {
		switch unix.Signal(sig) {
		case unix.SIGKILL, unix.SIGSTOP, unix.SIGCONT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
			continue // their generation has side effects even when ignored
		}
		if bit := uint64(1) << (sig - 1); ign&bit != 0 && pnd&bit == 0 {
			return sig
		}
	}
	return 0
}

// waitSignalStop waits for the signal stop that ends a run in thread t.
// Stops that come first are let go: job-control stops, and the stop
// signal when it is not ours (sent by someone else, or pending before:
// the process ignores it, so suppressing it changes nothing).
func (r *Remote) waitSignalStop(t *Thread) error {
	for stops := 0; ; stops++ {
		ws, err := Wait(t.Tid)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			r.parked = false
			return fmt.Errorf("injected code in tid %d: %s", t.Tid, Describe(ws))
		}
		if int(ws)>>16 == 0 && int(ws.StopSignal()) == r.stopSig {
			cur, err := GetRegs(t.Tid)
			if err != nil {
				return err
			}
			if cur.Rip == r.area+areaCodeOff+codeSigStop {
				return nil
			}
		}
		if stops > 16 || (int(ws)>>16 == 0 && int(ws.StopSignal()) != r.stopSig) {
			return fmt.Errorf("injected code in tid %d: %s", t.Tid, Describe(ws))
		}
		if err := Cont(t.Tid, 0); err != nil {
			return err
		}
	}
}

// waitParked waits until thread t has published this run's sequence
// number, interrupts it and checks that it stopped in the park. Stops that
// come first (a job-control stop, a stale interrupt) are let go.
func (r *Remote) waitParked(t *Thread) error {
	seqAddr := r.area + areaCtlOff
	buf := make([]byte, 8)
	local := []unix.Iovec{{Base: &buf[0], Len: 8}}
	remote := []unix.RemoteIovec{{Base: uintptr(seqAddr), Len: 8}}
	deadline := time.Now().Add(10 * time.Second) // then see where it is
	for n, stops := 0, 0; ; n++ {
		if _, err := unix.ProcessVMReadv(r.P.Pid, local, remote, 0); err != nil {
			return fmt.Errorf("read injection state of pid %d: %w", r.P.Pid, err)
		}
		if binary.LittleEndian.Uint64(buf) == r.seq || (n%64 == 63 && time.Now().After(deadline)) {
			break
		}
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(t.Tid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("wait tid %d: %w", t.Tid, err)
		}
		if wpid == t.Tid {
			if !ws.Stopped() {
				r.parked = false
				return fmt.Errorf("injected code in tid %d: %s", t.Tid, Describe(ws))
			}
			if int(ws)>>16 != EventStop || stops > 8 {
				return fmt.Errorf("injected code in tid %d: %s", t.Tid, Describe(ws))
			}
			stops++
			if err := Cont(t.Tid, 0); err != nil {
				return err
			}
			continue
		}
		// sleep rather than yield: a woken sleeper gets the CPU back at
		// once on a busy machine, a yielder waits behind everyone
		if n < 4 {
			unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		} else {
			ts := unix.Timespec{Nsec: 20000}
			unix.Nanosleep(&ts, nil)
		}
	}
	if err := Interrupt(t.Tid); err != nil {
		return err
	}
	ws, err := Wait(t.Tid)
	if err != nil {
		return err
	}
	if !ws.Stopped() {
		r.parked = false
		return fmt.Errorf("injected code in tid %d: %s", t.Tid, Describe(ws))
	}
	cur, err := GetRegs(t.Tid)
	if err != nil {
		return err
	}
	park := r.area + areaCodeOff
	if cur.Rip >= park+codeParkFrom && cur.Rip <= park+codeParkTo {
		if int(ws)>>16 != EventStop {
			// a signal stop (it will be suppressed when the thread is
			// resumed); the interrupt is still pending: take it now
			if err := Cont(t.Tid, 0); err != nil {
				return err
			}
			if _, err := Wait(t.Tid); err != nil {
				return err
			}
		}
		return nil
	}
	if cur.Rip < r.area || cur.Rip >= r.area+AreaSize {
		// the park timed out and the thread went back to its program
		r.parked = false
		t.Regs = cur
		if m, err := GetSigmask(t.Tid); err == nil {
			t.Sigmask = m
		}
		return fmt.Errorf("injected code in tid %d: the tracer was too slow (the thread returned after %v)", t.Tid, parkTimeout)
	}
	return fmt.Errorf("injected code in tid %d: %s at rip %#x, not in the park", t.Tid, Describe(ws), cur.Rip)
}

// XState returns the thread's NT_X86_XSTATE register set as at the seize
// (read once: the injector never changes it).
func (t *Thread) XState() ([]byte, error) {
	if t.xstate == nil {
		xs, err := GetXState(t.Tid)
		if err != nil {
			return nil, err
		}
		t.xstate = xs
	}
	return t.xstate, nil
}
