package ptrace

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SIGTRAP and injection into the restore stub (Injector; the dump's
// injection into a live process traps nowhere, see area.go). The single step and the int3 that ends
// a code run make the kernel force a SIGTRAP on the thread, which the
// tracer sees as a signal-delivery stop and suppresses. Forcing a signal
// that is blocked or ignored resets its action to SIG_DFL (and unblocks
// it), and a SIGTRAP already pending is taken instead of the trap's own.
// So:
//
//   - threads are held with InjectMask, every signal blocked but SIGTRAP:
//     a handler of SIGTRAP survives the traps;
//   - a process with a SIGTRAP pending (queued or taken while seizing) or
//     ignored is injected into "quietly": every call is run with
//     PTRACE_SYSCALL (a syscall-entry and a syscall-exit stop, no signal),
//     SIGTRAP stays blocked, and batches and code runs are done call by
//     call. Slower (two stops per call), but nothing of SIGTRAP is touched.
//
// A thread resumed from a syscall-exit stop does not get the kernel's
// syscall-restart fix-up for the registers it is given (that happens on
// the way out of a signal stop): RestartFixup applies it beforehand.

// SigtrapBit is SIGTRAP's bit in a signal mask.
const SigtrapBit = 1 << (unix.SIGTRAP - 1)

// InjectMask is the signal mask of a thread while syscalls are injected
// with traps: everything blocked but SIGTRAP.
const InjectMask = ^uint64(0) &^ SigtrapBit

// statusMasks reads the hexadecimal signal-mask lines of a status file.
func statusMasks(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch k {
		case "SigPnd", "ShdPnd", "SigIgn", "SigCgt", "SigBlk":
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, k, err)
			}
			out[k] = n
		}
	}
	return out, nil
}

// syscallStopKind tells a syscall stop's kind (1 entry, 2 exit) from its
// event message, or 0 when the stop is not a syscall stop (its siginfo
// code is SIGTRAP, or SIGTRAP|0x80 with PTRACE_O_TRACESYSGOOD).
func syscallStopKind(tid int) (uint64, error) {
	si := make([]byte, SiginfoSize)
	if err := Raw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&si[0]))); err != nil {
		return 0, fmt.Errorf("getsiginfo tid %d: %w", tid, err)
	}
	if code := int32(binary.LittleEndian.Uint32(si[8:])); code != int32(unix.SIGTRAP) && code != int32(unix.SIGTRAP)|0x80 {
		return 0, nil
	}
	var msg uint64
	if err := Raw(unix.PTRACE_GETEVENTMSG, tid, 0, uintptr(unsafe.Pointer(&msg))); err != nil {
		return 0, fmt.Errorf("geteventmsg tid %d: %w", tid, err)
	}
	return msg, nil
}

// rawQuiet injects one syscall with PTRACE_SYSCALL stops, no trap.
func (in *Injector) rawQuiet(r Regs, nr uint64) (int64, error) {
	if err := SetRegs(in.Tid, &r); err != nil {
		return 0, err
	}
	for _, want := range []uint64{1, 2} { // entry, then exit
		for retry := 0; ; retry++ {
			if err := Raw(unix.PTRACE_SYSCALL, in.Tid, 0, 0); err != nil {
				return 0, fmt.Errorf("ptrace syscall tid %d: %w", in.Tid, err)
			}
			ws, err := Wait(in.Tid)
			if err != nil {
				return 0, err
			}
			if ws.Stopped() && int(ws)>>16 == EventStop && retry < 8 {
				continue // a pending job-control notification
			}
			if !ws.Stopped() || ws.StopSignal()&0x7f != unix.SIGTRAP {
				return 0, fmt.Errorf("injected syscall %d in tid %d: %s", nr, in.Tid, Describe(ws))
			}
			break
		}
		op, err := syscallStopKind(in.Tid)
		if err != nil {
			return 0, err
		}
		if op != want {
			return 0, fmt.Errorf("injected syscall %d in tid %d: stop of kind %d, want %d", nr, in.Tid, op, want)
		}
	}
	out, err := GetRegs(in.Tid)
	if err != nil {
		return 0, err
	}
	if out.Rip != in.Addr+2 {
		return 0, fmt.Errorf("injected syscall %d in tid %d: stopped at rip %#x, want %#x", nr, in.Tid, out.Rip, in.Addr+2)
	}
	return int64(out.Rax), nil
}

// Kernel syscall-restart codes (include/linux/errno.h).
const (
	erestartSys       = 512
	erestartNoIntr    = 513
	erestartNoHand    = 514
	sysRestartSyscall = 219
)

// RestartFixup returns regs as the kernel leaves them when a thread
// interrupted in a syscall returns to user space without handling a
// signal: an -ERESTART* result re-executes the call (restart_syscall for
// -ERESTART_RESTARTBLOCK). Needed for a thread resumed from a
// syscall-exit stop, which skips that fix-up.
func RestartFixup(regs Regs) Regs {
	if int64(regs.Orig_rax) < 0 {
		return regs
	}
	switch -int64(regs.Rax) {
	case erestartSys, erestartNoIntr, erestartNoHand:
		regs.Rax = regs.Orig_rax
		regs.Rip -= 2
	case ErestartRestartBlock:
		regs.Rax = sysRestartSyscall
		regs.Rip -= 2
	}
	return regs
}

// describeStop renders a stop for error messages: the wait status, the
// stop's siginfo (signal, code, sender) and where the thread is.
func describeStop(tid int, ws unix.WaitStatus) string {
	s := fmt.Sprintf("wait status %#x, %s", uint32(ws), Describe(ws))
	si := make([]byte, SiginfoSize)
	if err := Raw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&si[0]))); err != nil {
		s += fmt.Sprintf(", siginfo: %v", err)
	} else {
		le := binary.LittleEndian
		s += fmt.Sprintf(", si_signo %d si_errno %d si_code %#x si_pid %d si_uid %d", int32(le.Uint32(si[0:])),
			int32(le.Uint32(si[4:])), int32(le.Uint32(si[8:])), int32(le.Uint32(si[16:])), le.Uint32(si[20:]))
	}
	if msg, err := GetEventMsg(tid); err == nil {
		s += fmt.Sprintf(", event msg %d", msg)
	}
	if regs, err := GetRegs(tid); err == nil {
		s += fmt.Sprintf(", rip %#x rax %#x orig_rax %#x eflags %#x", regs.Rip, regs.Rax, regs.Orig_rax, regs.Eflags)
	}
	if m, err := GetSigmask(tid); err == nil {
		s += fmt.Sprintf(", mask %#x", m)
	}
	return s
}
