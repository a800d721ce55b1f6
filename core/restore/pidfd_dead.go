package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// deadPidfd makes a pidfd (flags: PIDFD_NONBLOCK, PIDFD_THREAD) of a
// process that has exited and been reaped, as a pidfd of a dumped process
// that was gone at dump time: a stand-in stub is started, its pidfd
// opened, then it exits with the dumped wait status (exit code, or death
// by a signal; known false: exit 0) and is reaped. Like the original, the
// pidfd then polls readable, pidfd_send_signal fails with ESRCH, fdinfo
// shows "Pid: -1", and PIDFD_GET_INFO reports that status. It runs on the
// restore's tracer thread (the stand-in is traced while it lives).
func deadPidfd(flags int, status int32, known bool) (int, error) {
	c, regs, err := startHelper(nil)
	if err != nil {
		return -1, fmt.Errorf("pidfd of an exited process: %w", err)
	}
	pid := c.Process.Pid
	defer c.Process.Release() // reaped below (or killed and reaped on failure)
	fail := func(err error) (int, error) {
		unix.Kill(pid, unix.SIGKILL)
		ptrace.Wait(pid)
		return -1, fmt.Errorf("pidfd of an exited process: stand-in %d: %w", pid, err)
	}
	pfd, err := unix.PidfdOpen(pid, flags)
	if err != nil {
		return fail(fmt.Errorf("pidfd_open: %w", err))
	}
	ws := unix.WaitStatus(status)
	if !known {
		ws = 0
	}
	if ws.Signaled() {
		err = dieOfSignal(pid, ws.Signal())
	} else {
		err = exitTask(pid, regs, regs.Rip, ws.ExitStatus())
	}
	if err != nil {
		unix.Close(pfd)
		return fail(err)
	}
	return pfd, nil
}

// dieOfSignal lets the traced stand-in pid, at its exec stop, die of sig
// (its default action: no handler is installed in it); no core is dumped
// (RLIMIT_CORE 0). The death is collected.
func dieOfSignal(pid int, sig unix.Signal) error {
	if err := unix.Prlimit(pid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil); err != nil {
		return fmt.Errorf("RLIMIT_CORE: %w", err)
	}
	if err := ptrace.SetSigmask(pid, 0); err != nil {
		return err
	}
	if err := unix.Kill(pid, sig); err != nil {
		return err
	}
	fwd := 0
	for i := 0; i < 8; i++ {
		if err := ptrace.Cont(pid, fwd); err != nil {
			return err
		}
		w, err := ptrace.Wait(pid)
		if err != nil {
			return err
		}
		switch {
		case w.Signaled() && w.Signal() == sig:
			return nil
		case w.Stopped() && w.StopSignal() == sig:
			fwd = int(sig) // its signal-delivery stop: let it be delivered
		case w.Stopped():
			fwd = 0
		default:
			return fmt.Errorf("signal %d: %s", sig, ptrace.Describe(w))
		}
	}
	return fmt.Errorf("signal %d: still alive", sig)
}
