package ptrace

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Gadget is the code the injector executes: `syscall; int3; int3`.
var Gadget = []byte{0x0f, 0x05, 0xcc, 0xcc}

// Injector runs system calls inside a ptrace-stopped thread: it points rip at
// a `syscall` instruction (the gadget) and single-steps over it. The thread's
// signals must be blocked (PTRACE_SETSIGMASK) so that no signal delivery can
// hijack the step; orig_rax is set to -1 so that the kernel applies no
// syscall-restart fix-up to an injected call when the thread resumes.
type Injector struct {
	Tid   int
	Addr  uint64 // address of the gadget in the tracee
	Base  Regs   // register template; rip/rax/args are overwritten per call
	Count int    // calls made, for statistics
	// Quiet runs calls with PTRACE_SYSCALL stops instead of a single
	// step: no SIGTRAP is forced on the thread (see quiet.go).
	Quiet bool
}

// Errno turns a raw syscall return value into an error (nil when >= 0 or not
// in the errno range).
func Errno(ret int64) error {
	if ret < 0 && ret > -4096 {
		return unix.Errno(-ret)
	}
	return nil
}

// Raw injects one syscall and returns the raw rax value.
func (in *Injector) Raw(nr uint64, args ...uint64) (int64, error) {
	r := in.Base
	var a [6]uint64
	copy(a[:], args)
	r.Rip = in.Addr
	r.Rax = nr
	r.Orig_rax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if in.Quiet {
		v, err := in.rawQuiet(r, nr)
		if err == nil {
			in.Count++
		}
		return v, err
	}
	if err := SetRegs(in.Tid, &r); err != nil {
		return 0, err
	}
	var ws unix.WaitStatus
	for retry := 0; ; retry++ {
		if err := Raw(unix.PTRACE_SINGLESTEP, in.Tid, 0, 0); err != nil {
			return 0, fmt.Errorf("singlestep tid %d: %w", in.Tid, err)
		}
		var err error
		if ws, err = Wait(in.Tid); err != nil {
			return 0, err
		}
		// A pending job-control notification (e.g. the SIGCONT that ended
		// a group stop) traps before the step: step again.
		if ws.Stopped() && int(ws)>>16 == EventStop && retry < 8 {
			continue
		}
		break
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return 0, fmt.Errorf("injected syscall %d in tid %d: %s", nr, in.Tid, Describe(ws))
	}
	out, err := GetRegs(in.Tid)
	if err != nil {
		return 0, err
	}
	if out.Rip != in.Addr+2 {
		return 0, fmt.Errorf("injected syscall %d in tid %d: stopped at rip %#x, want %#x", nr, in.Tid, out.Rip, in.Addr+2)
	}
	in.Count++
	if traceInject {
		fmt.Fprintf(os.Stderr, "inject tid %d: syscall %d(%#x) = %d\n", in.Tid, nr, a, int64(out.Rax))
	}
	return int64(out.Rax), nil
}

// Call injects one syscall and converts an errno return to an error naming
// what the call was for.
func (in *Injector) Call(what string, nr uint64, args ...uint64) (uint64, error) {
	r, err := in.Raw(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if e := Errno(r); e != nil {
		return 0, fmt.Errorf("%s: %w", what, e)
	}
	return uint64(r), nil
}

// traceInject prints every injected syscall to stderr (debugging aid, set
// CTRCR_TRACE_INJECT=1).
var traceInject = os.Getenv("CTRCR_TRACE_INJECT") != ""
