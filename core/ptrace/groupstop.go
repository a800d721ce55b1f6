package ptrace

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IsStopSignal reports whether sig is one of the job-control stop signals
// that put a thread group in a group stop.
func IsStopSignal(sig int) bool {
	switch unix.Signal(sig) {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// DetachIntoStop detaches the threads tids (of one process, each in a
// signal-delivery stop with its signal mask already set, masks[i] for
// tids[i]) so that the process ends in a group stop by sig, as the
// parent's wait and the stop signal then report.
//
// The signal is delivered by one thread that does not block it (a blocked
// one would be queued pending instead); once that thread has stopped the
// group stop is in effect, and every other thread detached without a
// signal joins it before it returns to user space (the kernel re-arms the
// group stop on a thread leaving ptrace). A job-control signal other than
// SIGSTOP is discarded by the kernel in an orphaned process group: that
// case is an error, the process then runs.
func DetachIntoStop(pid int, tids []int, masks []uint64, sig int) error {
	if !IsStopSignal(sig) {
		return fmt.Errorf("pid %d: signal %d is not a stop signal", pid, sig)
	}
	first := -1
	for i := range tids {
		if masks[i]&(1<<(uint(sig)-1)) == 0 || sig == int(unix.SIGSTOP) {
			first = i
			break
		}
	}
	if first < 0 {
		return fmt.Errorf("pid %d: every thread blocks stop signal %d: cannot re-enter the group stop", pid, sig)
	}
	if inEventStop(tids[first]) {
		// a PTRACE_EVENT_STOP (a thread never injected into) drops the
		// signal given at detach: queue it to the thread instead
		if err := unix.Tgkill(pid, tids[first], unix.Signal(sig)); err != nil {
			return fmt.Errorf("pid %d: tgkill %d: %w", pid, sig, err)
		}
		sig = 0
	}
	if err := Detach(tids[first], sig); err != nil {
		return err
	}
	if err := waitThreadStopped(pid, tids[first]); err != nil {
		return fmt.Errorf("pid %d: stop signal %d: %w", pid, sig, err)
	}
	for i, tid := range tids {
		if i == first {
			continue
		}
		if err := Detach(tid, 0); err != nil {
			return err
		}
	}
	return nil
}

// waitThreadStopped waits (up to 2 s) for /proc/PID/task/TID/stat to show
// state T.
func waitThreadStopped(pid, tid int) error {
	path := fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid)
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && s[i+2] == 'T' {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tid %d did not stop (state %q; an orphaned process group discards SIGTSTP/SIGTTIN/SIGTTOU)", tid, s[strings.LastIndexByte(s, ')')+2:][:1])
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// inEventStop reports whether tid sits in a PTRACE_EVENT_STOP (its stop
// siginfo's code carries the event in its high byte).
func inEventStop(tid int) bool {
	si := make([]byte, SiginfoSize)
	if err := Raw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&si[0]))); err != nil {
		return false
	}
	return int32(binary.LittleEndian.Uint32(si[8:]))>>8 == EventStop
}

// FlushNotifications makes the stopped tracee tid go once through its
// signal checks without returning to user space: pending job-control
// notifications to its parent (the CLD_CONTINUED a SIGCONT leaves) are
// sent now, and the thread is back in a PTRACE_EVENT_STOP with its
// registers untouched. (A trap requested while it is stopped is taken in
// the same pass, before any return to user space.) Signals dequeued for
// delivery on the way are suppressed and returned (siginfos), for the
// caller to keep or drop.
func FlushNotifications(tid int) ([][]byte, error) {
	if err := Raw(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return nil, fmt.Errorf("interrupt tid %d: %w", tid, err)
	}
	if err := Cont(tid, 0); err != nil {
		return nil, err
	}
	var taken [][]byte
	for {
		ws, err := Wait(tid)
		if err != nil {
			return taken, err
		}
		if ws.Exited() || ws.Signaled() {
			return taken, fmt.Errorf("tid %d: %s: %w", tid, Describe(ws), unix.ESRCH)
		}
		if !ws.Stopped() {
			continue
		}
		if int(ws)>>16 == EventStop {
			return taken, nil
		}
		si := make([]byte, SiginfoSize)
		if err := Raw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&si[0]))); err != nil {
			return taken, fmt.Errorf("getsiginfo tid %d: %w", tid, err)
		}
		taken = append(taken, si)
		if err := Cont(tid, 0); err != nil {
			return taken, err
		}
	}
}
