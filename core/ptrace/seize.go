package ptrace

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Thread is one seized thread of a process, stopped in a ptrace trap.
type Thread struct {
	Tid     int
	Regs    Regs   // registers at the stop, as they must be put back
	Sigmask uint64 // blocked mask at the stop
	// Stolen holds siginfos of signals the kernel dequeued for delivery while
	// we were stopping the thread (a signal-delivery stop came before the
	// interrupt stop). They belong to the thread's pending queue: they are
	// dumped with it, and re-queued if the process is released.
	Stolen [][]byte
	// Stopped is true when the thread sat in a group stop (SIGSTOP) when it
	// was seized; StopSig is the signal that stopped it (SIGSTOP, SIGTSTP,
	// SIGTTIN or SIGTTOU), which the parent's wait reports.
	Stopped bool
	StopSig int
	// quietStop: the thread's last stop is a syscall-exit stop (of the
	// injector's boot calls), so Release applies the restart fix-up itself.
	quietStop bool
	waited    bool   // its seize stop was waited for (SeizeFrozen's threads)
	xstate    []byte // see XState
}

// Process is a seized process: every thread stopped and its signals blocked,
// nothing else changed. Release puts it back exactly as it was.
type Process struct {
	Pid     int
	Threads []*Thread // leader first
}

// SeizeOptions are the ptrace options the dumper uses. No EXITKILL: if the
// dumper dies, the target must survive. SUSPEND_SECCOMP lets injected calls
// pass the target's filters.
const SeizeOptions = unix.PTRACE_O_TRACESYSGOOD | OptSuspendSeccomp

// SeizeProcess seizes and stops every thread of pid. It re-lists
// /proc/PID/task until no new thread appears, so threads created during the
// seize are caught too. On error every thread seized so far is released.
func SeizeProcess(pid int) (*Process, error) {
	p := &Process{Pid: pid}
	seen := map[int]bool{}
	for {
		tids, err := listTasks(pid)
		if err != nil {
			p.Release()
			return nil, err
		}
		grew := false
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			grew = true
			t, err := seizeThread(tid)
			if err != nil {
				if errors.Is(err, unix.ESRCH) && tid != pid {
					continue // the thread exited meanwhile
				}
				p.Release()
				return nil, err
			}
			p.Threads = append(p.Threads, t)
		}
		if !grew {
			break
		}
	}
	sort.Slice(p.Threads, func(i, j int) bool {
		if p.Threads[i].Tid == pid {
			return true
		}
		if p.Threads[j].Tid == pid {
			return false
		}
		return p.Threads[i].Tid < p.Threads[j].Tid
	})
	if len(p.Threads) == 0 || p.Threads[0].Tid != pid {
		p.Release()
		return nil, fmt.Errorf("seize pid %d: thread group leader not found", pid)
	}
	return p, nil
}

func listTasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("list threads of pid %d: %w", pid, err)
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// seizeThread seizes tid and waits for its interrupt stop. A signal-delivery
// stop that comes first is recorded and suppressed (see Thread.Stolen).
func seizeThread(tid int) (*Thread, error) {
	if err := Seize(tid, SeizeOptions); err != nil {
		return nil, err
	}
	if err := Interrupt(tid); err != nil {
		Detach(tid, 0)
		return nil, err
	}
	t := &Thread{Tid: tid}
	if err := waitSeized(t); err != nil {
		return nil, err
	}
	return t, nil
}

// waitSeized waits for the interrupt stop of a seized and interrupted
// thread and reads its registers and signal mask.
func waitSeized(t *Thread) error {
	tid := t.Tid
	for {
		ws, err := Wait(tid)
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return fmt.Errorf("seize tid %d: %s: %w", tid, Describe(ws), unix.ESRCH)
		}
		if !ws.Stopped() {
			continue
		}
		if int(ws)>>16 == EventStop {
			// Interrupt stop, or a group stop when the stop signal is a
			// job-control one.
			sig := ws.StopSignal()
			t.Stopped = IsStopSignal(int(sig))
			if t.Stopped {
				t.StopSig = int(sig)
			}
			break
		}
		// Signal-delivery stop: keep the signal, suppress its delivery now.
		si := make([]byte, SiginfoSize)
		if err := Raw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&si[0]))); err != nil {
			return fmt.Errorf("getsiginfo tid %d: %w", tid, err)
		}
		t.Stolen = append(t.Stolen, si)
		if err := Cont(tid, 0); err != nil {
			return err
		}
	}
	var err error
	if t.Regs, err = GetRegs(tid); err != nil {
		Detach(tid, 0)
		return err
	}
	if t.Sigmask, err = GetSigmask(tid); err != nil {
		Detach(tid, 0)
		return err
	}
	t.waited = true
	return nil
}

// SeizeFrozen seizes every thread of pid and queues an interrupt, without
// waiting for the stops: for a process whose cgroup is frozen, whose
// threads can neither stop nor create threads until it is thawed. Once it
// is thawed, WaitStops completes the seize. A seized thread can be
// detached only once it has stopped: on error the partly seized process is
// returned too, for Abandon after the thaw. The calling thread is the
// tracer.
func SeizeFrozen(pid int) (*Process, error) {
	p := &Process{Pid: pid}
	tids, err := listTasks(pid)
	if err != nil {
		return p, err
	}
	for _, tid := range tids {
		if err := Seize(tid, SeizeOptions); err != nil {
			return p, err
		}
		p.Threads = append(p.Threads, &Thread{Tid: tid})
		if err := Interrupt(tid); err != nil {
			return p, err
		}
	}
	sort.Slice(p.Threads, func(i, j int) bool {
		if p.Threads[i].Tid == pid {
			return true
		}
		if p.Threads[j].Tid == pid {
			return false
		}
		return p.Threads[i].Tid < p.Threads[j].Tid
	})
	if len(p.Threads) == 0 || p.Threads[0].Tid != pid {
		return p, fmt.Errorf("seize pid %d: thread group leader not found", pid)
	}
	return p, nil
}

// WaitStops waits, after the thaw, for the stop of every thread SeizeFrozen
// seized. On error the process is let go (Abandon).
func (p *Process) WaitStops() error {
	for _, t := range p.Threads {
		if err := waitSeized(t); err != nil {
			p.Abandon()
			return err
		}
	}
	return nil
}

// Abandon lets go of a process seized by SeizeFrozen, after the thaw:
// each thread not yet waited for is waited for (its interrupt stop) and
// detached; nothing of theirs was changed.
func (p *Process) Abandon() {
	for _, t := range p.Threads {
		if !t.waited {
			waitSeized(t)
		}
		Detach(t.Tid, 0)
	}
	p.Threads = nil
}

// Release puts registers and signal masks back and detaches every thread, so
// the process runs on as if never seized. Stolen signals must have been
// re-queued by the caller (RequeueStolen) before. Errors are joined; release
// goes on past them.
func (p *Process) Release() error {
	var errs []error
	stopSig := 0
	var tids []int
	var masks []uint64
	for _, t := range p.Threads {
		regs := t.Regs
		if t.quietStop {
			regs = RestartFixup(regs)
		}
		if err := SetRegs(t.Tid, &regs); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
		if err := SetSigmask(t.Tid, t.Sigmask); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
		if t.Stopped && stopSig == 0 {
			stopSig = t.StopSig
		}
		tids, masks = append(tids, t.Tid), append(masks, t.Sigmask)
	}
	if stopSig != 0 {
		// back into the group stop it was in, by the same signal
		if err := DetachIntoStop(p.Pid, tids, masks, stopSig); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	} else {
		for _, tid := range tids {
			if err := Detach(tid, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
		}
	}
	p.Threads = nil
	return errors.Join(errs...)
}

// Kill sends SIGKILL to the process and collects the exit notifications of
// its traced threads so no ptrace state lingers.
func (p *Process) Kill() error {
	if err := unix.Kill(p.Pid, unix.SIGKILL); err != nil {
		return fmt.Errorf("kill pid %d: %w", p.Pid, err)
	}
	// Collect every thread's exit in whatever order they come: a traced
	// leader is reported only after its traced threads are reaped, and the
	// last thread of a pid namespace's init waits (zap_pid_ns_processes)
	// until the other threads' zombies, ours to reap, are gone.
	pending := map[int]bool{}
	for _, t := range p.Threads {
		pending[t.Tid] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(pending) > 0 {
		progressed := false
		for tid := range pending {
			var ws unix.WaitStatus
			r, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			switch {
			case err == unix.EINTR:
			case err != nil: // not ours any more (ECHILD)
				delete(pending, tid)
				progressed = true
			case r == tid && (ws.Exited() || ws.Signaled()):
				delete(pending, tid)
				progressed = true
			case r == tid && ws.Stopped():
				Cont(tid, 0) // an event stop on the way out
				progressed = true
			}
		}
		if !progressed {
			if time.Now().After(deadline) {
				p.Threads = nil
				return fmt.Errorf("kill pid %d: %d thread(s) not reaped after 30s", p.Pid, len(pending))
			}
			time.Sleep(time.Millisecond)
		}
	}
	p.Threads = nil
	return nil
}
