package kernel

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ptrace requests and constants missing from x/sys/unix.
const (
	ptraceGetSigmask        = 0x420a
	ptraceSetSigmask        = 0x420b
	ptracePeekSiginfo       = 0x4209
	ptraceSeccompFilter     = 0x420c
	ptraceGetRseqConfig     = 0x420f
	ptraceEventStop         = 128 // PTRACE_EVENT_STOP
	peekSiginfoShared       = 1
	ntX86XState             = 0x202
	xstateXCR0Offset        = 464 // ptrace: sw_reserved word 0 holds XCR0
	xstateBufferSize        = 32 << 10
	kcmpFile                = 0
	childStopTimeout        = 2 * time.Second
	ptraceOptionsBase       = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_EXITKILL
	ptraceOptSuspendSeccomp = unix.PTRACE_O_SUSPEND_SECCOMP
)

// childFeatures are the features probed against the child.
var childFeatures = []string{fSeize, fSuspendSeccomp, fXState, fSigmask, fPeekSiginfo, fRseq,
	fSeccompFilter, fVMReadv, fMemWrite, fPidfdGetfd, fKcmp}

// ptraceStopped are the features that need the child seized and stopped.
var ptraceStopped = []string{fXState, fSigmask, fPeekSiginfo, fRseq, fSeccompFilter}

// sleepBinary finds a sleep executable for the probe child.
func sleepBinary() (string, error) {
	for _, p := range []string{"/bin/sleep", "/usr/bin/sleep"} {
		if unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return exec.LookPath("sleep")
}

// probeChild starts `sleep 5`, runs the probes that need a target task, then
// kills and reaps it. All ptrace requests, and the reaping, happen on this
// goroutine's locked OS thread (the tracer thread).
func probeChild(p *prober) {
	path, err := sleepBinary()
	if err != nil {
		p.setAll(childFeatures, "no probe child: %v", err)
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(path, "5")
	if err := cmd.Start(); err != nil {
		p.setAll(childFeatures, "no probe child: %v", err)
		return
	}
	pid := cmd.Process.Pid
	defer reap(cmd) // before UnlockOSThread: deferred calls run last-in first-out

	if probeSeize(p, pid) {
		probeXState(p, pid)
		probeSigmask(p, pid)
		probePeekSiginfo(p, pid)
		probeRseq(p, pid)
		probeSeccompFilter(p, pid)
	} else {
		p.setAll(ptraceStopped, "not probed: needs %s", fSeize)
	}
	maps, err := childMaps(pid)
	if err != nil {
		p.setAll([]string{fVMReadv, fMemWrite}, "read /proc/%d/maps: %v", pid, err)
	} else {
		probeVMReadv(p, pid, maps)
		probeMemWrite(p, pid, maps)
	}
	probePidfd(p, pid)
}

// reap kills the child by pid and waits for it (also consuming any pending
// ptrace stop), then releases the os.Process handle.
func reap(cmd *exec.Cmd) {
	pid := cmd.Process.Pid
	_ = unix.Kill(pid, unix.SIGKILL)
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			break
		}
	}
	_ = cmd.Process.Release()
}

// ptraceInt issues a ptrace request whose addr and data are plain integers.
func ptraceInt(req, pid int, addr, data uintptr) (uintptr, error) {
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

// probeSeize seizes pid (with PTRACE_O_SUSPEND_SECCOMP when accepted),
// interrupts it and waits for the PTRACE_EVENT_STOP. It reports whether the
// child is now stopped under our control.
func probeSeize(p *prober, pid int) bool {
	_, err := ptraceInt(unix.PTRACE_SEIZE, pid, 0, ptraceOptionsBase|ptraceOptSuspendSeccomp)
	if err == nil {
		p.set(fSuspendSeccomp, true, "accepted in PTRACE_SEIZE options")
	} else {
		p.set(fSuspendSeccomp, false, "PTRACE_SEIZE with PTRACE_O_SUSPEND_SECCOMP: %s", errno(err))
		_, err = ptraceInt(unix.PTRACE_SEIZE, pid, 0, ptraceOptionsBase)
	}
	if err != nil {
		p.set(fSeize, false, "PTRACE_SEIZE: %s", errno(err))
		return false
	}
	start := time.Now()
	if _, err := ptraceInt(unix.PTRACE_INTERRUPT, pid, 0, 0); err != nil {
		p.set(fSeize, false, "PTRACE_INTERRUPT: %s", errno(err))
		return false
	}
	ws, err := waitStop(pid, childStopTimeout)
	if err != nil {
		p.set(fSeize, false, "wait for interrupt stop: %v", err)
		return false
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP || ws.TrapCause() != ptraceEventStop {
		p.set(fSeize, false, "unexpected wait status %#x after PTRACE_INTERRUPT", uint32(ws))
		return false
	}
	p.set(fSeize, true, "seize+interrupt: PTRACE_EVENT_STOP after %v", time.Since(start).Round(time.Microsecond))
	return true
}

// waitStop polls wait4(pid, WALL|WNOHANG) until pid reports a stop, exits or
// timeout passes.
func waitStop(pid int, timeout time.Duration) (unix.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case wpid == pid && (ws.Exited() || ws.Signaled()):
			return ws, fmt.Errorf("child ended (status %#x)", uint32(ws))
		case wpid == pid:
			return ws, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no stop within %v", timeout)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// xfeatureNames names the user XSAVE feature bits (XCR0).
var xfeatureNames = map[int]string{0: "x87", 1: "sse", 2: "avx", 3: "mpx-bndregs", 4: "mpx-bndcsr",
	5: "avx512-opmask", 6: "avx512-zmm-hi256", 7: "avx512-hi16-zmm", 9: "pkru",
	17: "amx-tilecfg", 18: "amx-tiledata", 19: "apx"}

// probeXState reads NT_X86_XSTATE and reports its size and XCR0.
func probeXState(p *prober, pid int) {
	buf := make([]byte, xstateBufferSize)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(pid), ntX86XState, uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		p.set(fXState, false, "PTRACE_GETREGSET NT_X86_XSTATE: %s", errno(e))
		return
	}
	n := int(iov.Len)
	if n < xstateXCR0Offset+8 {
		p.set(fXState, false, "xsave area of %d bytes is too short", n)
		return
	}
	xcr0 := binary.LittleEndian.Uint64(buf[xstateXCR0Offset:])
	var names []string
	for bit := 0; bit < 64; bit++ {
		if xcr0&(1<<bit) != 0 {
			name, ok := xfeatureNames[bit]
			if !ok {
				name = "bit" + strconv.Itoa(bit)
			}
			names = append(names, name)
		}
	}
	p.set(fXState, true, "xsave %d bytes, XCR0 %#x (%s)", n, xcr0, strings.Join(names, " "))
}

// probeSigmask reads the child's blocked mask and writes it back unchanged.
func probeSigmask(p *prober, pid int) {
	var mask uint64
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceGetSigmask, uintptr(pid), 8, uintptr(unsafe.Pointer(&mask)), 0, 0); e != 0 {
		p.set(fSigmask, false, "PTRACE_GETSIGMASK: %s", errno(e))
		return
	}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSetSigmask, uintptr(pid), 8, uintptr(unsafe.Pointer(&mask)), 0, 0); e != 0 {
		p.set(fSigmask, false, "PTRACE_SETSIGMASK: %s", errno(e))
		return
	}
	p.set(fSigmask, true, "get+set: blocked %#x", mask)
}

// peekSiginfoArgs is struct ptrace_peeksiginfo_args.
type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// probePeekSiginfo peeks the private and shared signal queues (signals stay
// queued).
func probePeekSiginfo(p *prober, pid int) {
	var counts [2]uintptr
	for i, flags := range []uint32{0, peekSiginfoShared} {
		args := peekSiginfoArgs{Flags: flags, Nr: 1}
		var si [128]byte
		r, _, e := unix.Syscall6(unix.SYS_PTRACE, ptracePeekSiginfo, uintptr(pid), uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&si)), 0, 0)
		if e != 0 {
			p.set(fPeekSiginfo, false, "PTRACE_PEEKSIGINFO (flags %d): %s", flags, errno(e))
			return
		}
		counts[i] = r
	}
	p.set(fPeekSiginfo, true, "queued: %d private, %d shared", counts[0], counts[1])
}

// rseqConfig is struct ptrace_rseq_configuration.
type rseqConfig struct {
	Ptr   uint64
	Size  uint32
	Sig   uint32
	Flags uint32
	Pad   uint32
}

// probeRseq reads the child's rseq registration.
func probeRseq(p *prober, pid int) {
	var c rseqConfig
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceGetRseqConfig, uintptr(pid), unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c)), 0, 0)
	if e != 0 {
		p.set(fRseq, false, "PTRACE_GET_RSEQ_CONFIGURATION: %s", errno(e))
		return
	}
	if c.Ptr == 0 {
		p.set(fRseq, true, "%d-byte config; child has no rseq registered (yet: it may still be starting)", r)
		return
	}
	p.set(fRseq, true, "%d-byte config; child rseq at %#x, %d bytes, sig %#x", r, c.Ptr, c.Size, c.Sig)
}

// probeSeccompFilter asks for filter 0 of the unfiltered child: EINVAL means
// the request exists (no filter there), EIO that it is unknown.
func probeSeccompFilter(p *prober, pid int) {
	r, err := ptraceInt(ptraceSeccompFilter, pid, 0, 0)
	switch {
	case err == nil:
		p.set(fSeccompFilter, true, "child filter 0 has %d instructions", r)
	case isErrno(err, unix.EINVAL):
		p.set(fSeccompFilter, true, "EINVAL on the unfiltered child: request known")
	case isErrno(err, unix.EACCES):
		p.set(fSeccompFilter, false, "%s: needs CAP_SYS_ADMIN and an unfiltered tracer", errno(err))
	default:
		p.set(fSeccompFilter, false, "PTRACE_SECCOMP_GET_FILTER: %s", errno(err))
	}
}
