// Package ptrace wraps the ptrace(2) requests the engine uses: seizing and
// interrupting tasks, register sets, signal masks and queues, rseq and seccomp
// introspection, plus syscall injection (inject.go) and /proc/PID/mem access
// (mem.go).
//
// Every request must come from the OS thread that attached to the tracee:
// callers run the whole dump or restore on one goroutine locked with
// runtime.LockOSThread, which must outlive the tracees (a tracer thread that
// exits detaches, or with PTRACE_O_EXITKILL kills, every tracee).
package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Requests and constants missing from x/sys/unix.
const (
	reqGetSigmask         = 0x420a
	reqSetSigmask         = 0x420b
	reqSeccompGetFilter   = 0x420c
	reqGetRseqConfig      = 0x420f
	reqPeekSiginfo        = 0x4209
	peekSiginfoShared     = 1
	EventStop             = 128 // PTRACE_EVENT_STOP
	OptSuspendSeccomp     = 1 << 21
	NTX86XState           = 0x202
	SiginfoSize           = 128
	ErestartSys           = 512
	ErestartNoIntr        = 513
	ErestartNoHand        = 514
	ErestartRestartBlock  = 516
	sizeofUserRegs        = 27 * 8
	xsaveSwReservedOffset = 464
	xsaveMaxBuffer        = 16 * 1024
)

// Raw issues ptrace(req, pid, addr, data) and retries on EINTR.
//
// addr and data are often pointers to the caller's locals converted to
// uintptr (a register set, a siginfo, a mask the kernel reads or writes).
// Go keeps such a conversion valid only in the call expression of the
// syscall itself: through a Go function like this one, the local could
// live on the goroutine's stack, which is moved when it grows (in this
// function's prologue, say), and the kernel would then read or write the
// old copy: the caller saw zeros for registers and siginfos (a syscall
// stop of "kind 0"; a signal stop taken for one elsewhere, whose thread
// was let go). uintptrescapes puts every such object on the heap, where
// it does not move, and keeps it alive for the call.
//
//go:uintptrescapes
func Raw(req, pid int, addr, data uintptr) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// Seize attaches to tid with the given PTRACE_O_* options without stopping it.
func Seize(tid, opts int) error {
	if err := Raw(unix.PTRACE_SEIZE, tid, 0, uintptr(opts)); err != nil {
		return fmt.Errorf("ptrace seize tid %d: %w", tid, err)
	}
	return nil
}

// Interrupt asks a seized task to enter a group-stop-like trap.
func Interrupt(tid int) error {
	if err := Raw(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return fmt.Errorf("ptrace interrupt tid %d: %w", tid, err)
	}
	return nil
}

// Detach lets the task run again, delivering sig (0 for none).
func Detach(tid int, sig int) error {
	if err := Raw(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace detach tid %d: %w", tid, err)
	}
	return nil
}

// Cont resumes a stopped tracee, delivering sig (0 for none).
func Cont(tid, sig int) error {
	if err := Raw(unix.PTRACE_CONT, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace cont tid %d: %w", tid, err)
	}
	return nil
}

// SetOptions sets PTRACE_O_* options.
func SetOptions(tid, opts int) error {
	if err := Raw(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(opts)); err != nil {
		return fmt.Errorf("ptrace setoptions tid %d: %w", tid, err)
	}
	return nil
}

// Wait waits for a state change of tid (any child or tracee with __WALL),
// retrying on EINTR.
func Wait(tid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait tid %d: %w", tid, err)
		}
		return ws, nil
	}
}

// Describe renders a wait status for error messages.
func Describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v", ws.Signal())
	case ws.Stopped():
		return fmt.Sprintf("stopped by %v (event %d)", ws.StopSignal(), ws.TrapCause())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// Regs is struct user_regs_struct on x86-64.
type Regs = unix.PtraceRegs

// GetRegs reads the general registers (fs_base/gs_base included).
func GetRegs(tid int) (Regs, error) {
	var r Regs
	if err := Raw(unix.PTRACE_GETREGS, tid, 0, uintptr(unsafe.Pointer(&r))); err != nil {
		return r, fmt.Errorf("getregs tid %d: %w", tid, err)
	}
	return r, nil
}

// SetRegs writes the general registers.
func SetRegs(tid int, r *Regs) error {
	if err := Raw(unix.PTRACE_SETREGS, tid, 0, uintptr(unsafe.Pointer(r))); err != nil {
		return fmt.Errorf("setregs tid %d: %w", tid, err)
	}
	return nil
}

// RegsBytes encodes registers for the image (27 little-endian u64).
func RegsBytes(r *Regs) []byte {
	b := make([]byte, sizeofUserRegs)
	src := unsafe.Slice((*byte)(unsafe.Pointer(r)), sizeofUserRegs)
	copy(b, src)
	return b
}

// RegsFromBytes decodes registers stored by RegsBytes.
func RegsFromBytes(b []byte) (Regs, error) {
	var r Regs
	if len(b) != sizeofUserRegs {
		return r, fmt.Errorf("registers: %d bytes, want %d", len(b), sizeofUserRegs)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&r)), sizeofUserRegs), b)
	return r, nil
}

// GetXState returns the NT_X86_XSTATE register set (the full XSAVE area).
func GetXState(tid int) ([]byte, error) {
	buf := make([]byte, xsaveMaxBuffer)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := Raw(unix.PTRACE_GETREGSET, tid, NTX86XState, uintptr(unsafe.Pointer(&iov))); err != nil {
		return nil, fmt.Errorf("getregset xstate tid %d: %w", tid, err)
	}
	return append([]byte(nil), buf[:iov.Len]...), nil
}

// SetXState writes the NT_X86_XSTATE register set.
func SetXState(tid int, b []byte) error {
	if len(b) == 0 {
		return errors.New("empty xstate")
	}
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	if err := Raw(unix.PTRACE_SETREGSET, tid, NTX86XState, uintptr(unsafe.Pointer(&iov))); err != nil {
		return fmt.Errorf("setregset xstate tid %d: %w", tid, err)
	}
	return nil
}

// XStateFeatures returns the XCR0 feature mask the kernel records in word 0
// of the software-reserved bytes of an NT_X86_XSTATE buffer (the ptrace
// layout, asm/user.h USER_XSTATE_XCR0_WORD), and the buffer size.
func XStateFeatures(x []byte) (features uint64, size uint32, ok bool) {
	if len(x) < xsaveSwReservedOffset+8 {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(x[xsaveSwReservedOffset:]), uint32(len(x)), true
}

// GetSigmask returns the blocked-signal mask of tid.
func GetSigmask(tid int) (uint64, error) {
	var m uint64
	if err := Raw(reqGetSigmask, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return 0, fmt.Errorf("getsigmask tid %d: %w", tid, err)
	}
	return m, nil
}

// SetSigmask sets the blocked-signal mask of tid.
func SetSigmask(tid int, m uint64) error {
	if err := Raw(reqSetSigmask, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return fmt.Errorf("setsigmask tid %d: %w", tid, err)
	}
	return nil
}

// PeekSiginfo returns the queued siginfos of tid: the thread-private queue, or
// with shared the process-wide queue. Signals stay queued.
func PeekSiginfo(tid int, shared bool) ([][]byte, error) {
	type peekArgs struct {
		Off   uint64
		Flags uint32
		Nr    int32
	}
	var out [][]byte
	buf := make([]byte, 32*SiginfoSize)
	for {
		a := peekArgs{Off: uint64(len(out)), Nr: 32}
		if shared {
			a.Flags = peekSiginfoShared
		}
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, reqPeekSiginfo, uintptr(tid), uintptr(unsafe.Pointer(&a)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return nil, fmt.Errorf("peeksiginfo tid %d: %w", tid, e)
		}
		if n == 0 {
			return out, nil
		}
		for i := 0; i < int(n); i++ {
			out = append(out, append([]byte(nil), buf[i*SiginfoSize:(i+1)*SiginfoSize]...))
		}
	}
}

// RseqConfig is what PTRACE_GET_RSEQ_CONFIGURATION reports.
type RseqConfig struct {
	Ptr   uint64
	Len   uint32
	Sig   uint32
	Flags uint32
}

// GetRseq returns the rseq registration of tid (Ptr 0 when none).
func GetRseq(tid int) (RseqConfig, error) {
	var b [32]byte
	n, _, e := unix.Syscall6(unix.SYS_PTRACE, reqGetRseqConfig, uintptr(tid), uintptr(len(b)), uintptr(unsafe.Pointer(&b[0])), 0, 0)
	if e != 0 {
		return RseqConfig{}, fmt.Errorf("get rseq configuration tid %d: %w", tid, e)
	}
	_ = n
	return RseqConfig{
		Ptr:   binary.LittleEndian.Uint64(b[0:]),
		Len:   binary.LittleEndian.Uint32(b[8:]),
		Sig:   binary.LittleEndian.Uint32(b[12:]),
		Flags: binary.LittleEndian.Uint32(b[16:]),
	}, nil
}

// SeccompFilters returns the cBPF programs attached to tid in the order
// PTRACE_SECCOMP_GET_FILTER numbers them: the first installed (the
// outermost) is index 0, the most recent last.
func SeccompFilters(tid int) ([][]byte, error) {
	var out [][]byte
	for i := 0; ; i++ {
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, reqSeccompGetFilter, uintptr(tid), uintptr(i), 0, 0, 0)
		if e == unix.ENOENT {
			return out, nil
		}
		if e == unix.EINVAL && i == 0 {
			return nil, nil // no filter (mode is not SECCOMP_MODE_FILTER)
		}
		if e != 0 {
			return nil, fmt.Errorf("seccomp get filter %d tid %d: %w", i, tid, e)
		}
		buf := make([]byte, n*8)
		if n > 0 {
			if _, _, e := unix.Syscall6(unix.SYS_PTRACE, reqSeccompGetFilter, uintptr(tid), uintptr(i), uintptr(unsafe.Pointer(&buf[0])), 0, 0); e != 0 {
				return nil, fmt.Errorf("seccomp get filter %d tid %d: %w", i, tid, e)
			}
		}
		out = append(out, buf)
	}
}

// GetEventMsg returns PTRACE_GETEVENTMSG (e.g. the new tid at a clone event).
func GetEventMsg(tid int) (uint64, error) {
	var m uint64
	if err := Raw(unix.PTRACE_GETEVENTMSG, tid, 0, uintptr(unsafe.Pointer(&m))); err != nil {
		return 0, fmt.Errorf("geteventmsg tid %d: %w", tid, err)
	}
	return m, nil
}
