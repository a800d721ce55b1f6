package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// Scheduling constants (uapi/linux/sched.h, ioprio.h, membarrier.h).
const (
	schedDeadline           = 6
	ioprioWhoProcess        = 1
	membarrierGetRegs       = 1 << 9
	membarrierKnownRegs     = 1<<2 | 1<<4 | 1<<6 | 1<<8 // the REGISTER_* commands
	mclFuture, mclOnfault   = 2, 4
	membarrierNotBuiltErrno = unix.ENOSYS
)

// collectSched reads thread tid's scheduling state from the dumper:
// sched_getattr (policy, flags, rt priority, utilization clamps), the nice
// value by getpriority (kept under a real-time policy too, where
// sched_getattr does not report it) and the I/O priority. SCHED_DEADLINE
// is refused: its bandwidth reservation is admission-controlled per root
// domain and cannot be promised back.
func collectSched(tid int) (*imagepb.TaskSchedState, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return nil, fmt.Errorf("sched_getattr: %w", err)
	}
	if a.Policy == schedDeadline {
		return nil, errors.New("scheduling policy SCHED_DEADLINE: not supported")
	}
	// raw getpriority returns 20 - nice
	prio, _, e := unix.Syscall(unix.SYS_GETPRIORITY, unix.PRIO_PROCESS, uintptr(tid), 0)
	if e != 0 {
		return nil, fmt.Errorf("getpriority: %w", e)
	}
	io, _, e := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if e != 0 {
		return nil, fmt.Errorf("ioprio_get: %w", e)
	}
	return &imagepb.TaskSchedState{
		Policy: a.Policy, Flags: a.Flags, Nice: 20 - int32(prio), RtPriority: a.Priority,
		UtilMin: a.Util_min, UtilMax: a.Util_max, Ioprio: int32(io),
	}, nil
}

// collectProcAttrs reads the per-process attributes kept outside the
// task's own syscalls: oom_score_adj, the audit loginuid and session id
// (from /proc) and the membarrier registrations, from membarrierRaw, the
// raw result of an injected membarrier(GET_REGISTRATIONS) (collectTask's
// batch). (The mlockall flags are collectCore's: probeMlockFuture.)
func collectProcAttrs(r *ptrace.Remote, pid int, c *imagepb.TaskCore, membarrierRaw int64) error {
	v, err := readProcInt(pid, "oom_score_adj")
	if err != nil {
		return err
	}
	oom := int32(v)
	c.OomScoreAdj = &oom
	// sessionid exists only with CONFIG_AUDIT
	if s, err := readProcInt(pid, "sessionid"); err == nil {
		c.Sessionid = uint32(s)
	}
	if ag, ok := procfs.ReadAutogroup(pid); ok && ag.Own {
		n := ag.Nice
		c.AutogroupNice = &n
	}
	regs := uint64(membarrierRaw)
	err = ptrace.Errno(membarrierRaw)
	switch {
	case errors.Is(err, membarrierNotBuiltErrno):
		regs = 0 // no membarrier in this kernel: nothing can be registered
	case errors.Is(err, unix.EINVAL):
		// before 6.3: probe the private commands, which fail with EPERM
		// unless registered (GLOBAL_EXPEDITED cannot be probed this way)
		if regs, err = probeMembarrier(r); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("membarrier(GET_REGISTRATIONS): %w", err)
	}
	if regs&^membarrierKnownRegs != 0 {
		return fmt.Errorf("membarrier registrations %#x: unknown command bits: not supported", regs)
	}
	c.MembarrierRegistrations = uint32(regs)
	return nil
}

// probeMlockFuture finds the mlockall flags in force for new mappings
// (mm->def_flags, not shown in /proc) from what the mapping of the
// injection area showed (ptrace.MapProbe): with MCL_FUTURE the area was
// accounted locked; without MCL_ONFAULT it was also populated at once. No
// mapping of its own: a crash in between would leave it behind.
func probeMlockFuture(r *ptrace.Remote, pid int) (uint32, error) {
	p := r.MapProbe
	if p.Err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, p.Err)
	}
	if p.LockedAfter == p.LockedBefore {
		return 0, nil
	}
	if p.Present {
		return mclFuture, nil
	}
	return mclFuture | mclOnfault, nil
}

// readProcInt reads a one-number /proc/PID/name file.
func readProcInt(pid int, name string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/%s: %w", pid, name, err)
	}
	return v, nil
}

// explainNoMapping names the state that makes a task unable to take even
// one more page: mlockall(MCL_FUTURE) with its RLIMIT_MEMLOCK reached (the
// dumper's injection area would be locked too, which the task may not).
func explainNoMapping(pid int, err error) error {
	if !errors.Is(err, unix.EAGAIN) {
		return err
	}
	lck, lerr := ptrace.VmLckKB(pid)
	if lerr != nil || lck == 0 {
		return err
	}
	return fmt.Errorf("%w (mlockall(MCL_FUTURE) in force with RLIMIT_MEMLOCK reached, %d kB locked: not supported)", err, lck)
}

// dropOwnSigcont takes the SIGCONT the dumper sent to end a group stop out
// of the task's queue when it was queued there (see endGroupStop), so that
// neither the image nor the released task holds a signal the task never
// got: rt_sigtimedwait with a zero timeout, injected, dequeues it.
func dropOwnSigcont(t *task) error {
	if !t.contQueued {
		return nil
	}
	t.contQueued = false
	st, err := procfs.ReadStatus(t.pid)
	if err != nil || st.ShdPnd&sigcontBit == 0 {
		return err
	}
	r := t.remote
	set := make([]byte, 24) // sigset at scratch, timespec{0, 0} at +8
	binary.LittleEndian.PutUint64(set, sigcontBit)
	if err := r.Mem.WriteAt(set, r.Scratch); err != nil {
		return err
	}
	_, err = r.Call(0, "rt_sigtimedwait(SIGCONT)", unix.SYS_RT_SIGTIMEDWAIT, r.Scratch, 0, r.Scratch+8, 8)
	return err
}

// probeMembarrier finds the private expedited registrations on kernels
// without MEMBARRIER_CMD_GET_REGISTRATIONS by running each command once
// (a barrier among the task's own, stopped, threads): it fails with EPERM
// unless registered.
func probeMembarrier(r *ptrace.Remote) (uint64, error) {
	var regs uint64
	for _, cmd := range []uint64{1 << 3, 1 << 5, 1 << 7} { // PRIVATE_EXPEDITED, _SYNC_CORE, _RSEQ
		v, err := r.RawCall(0, unix.SYS_MEMBARRIER, cmd, 0, 0)
		if err != nil {
			return 0, err
		}
		if v == 0 {
			regs |= cmd << 1 // the matching REGISTER_ command
		}
	}
	return regs, nil
}

// dropOwnSigchld takes out of parent t's queue the SIGCHLD (CLD_CONTINUED)
// that the dumper's SIGCONT to a stopped child made the kernel queue (see
// endGroupStop): the one queued SIGCHLD, when its siginfo is that report.
func (d *dumper) dropOwnSigchld(t *task) error {
	child := 0
	for _, c := range d.tasks {
		if c.ppid == t.pid && c.chldQueued {
			child = c.pid
			break
		}
	}
	if child == 0 {
		return nil
	}
	q, err := ptrace.PeekSiginfo(t.pid, true)
	if err != nil {
		return err
	}
	ours := false
	for _, si := range q {
		// siginfo: signo at 0, code at 8, pid at 16
		if len(si) >= 20 && binary.LittleEndian.Uint32(si) == uint32(unix.SIGCHLD) &&
			int32(binary.LittleEndian.Uint32(si[8:])) == cldContinued {
			ours = true
		}
	}
	if !ours {
		return nil
	}
	r := t.remote
	set := make([]byte, 24) // sigset at scratch, timespec{0, 0} at +8
	binary.LittleEndian.PutUint64(set, sigchldBit)
	if err := r.Mem.WriteAt(set, r.Scratch); err != nil {
		return err
	}
	_, err = r.Call(0, "rt_sigtimedwait(SIGCHLD)", unix.SYS_RT_SIGTIMEDWAIT, r.Scratch, 0, r.Scratch+8, 8)
	return err
}

const cldContinued = 6 // CLD_CONTINUED

// stopReportPending asks parent, by an injected waitid(P_PID, child,
// WSTOPPED|WNOHANG|WNOWAIT), whether the child's stop report is still to
// be collected (the parent's own wait state; WNOWAIT leaves it as it is).
// The parent gets a short-lived injection set-up of its own.
func stopReportPending(parent, child *task, childStatus *procfs.Status) (bool, error) {
	nsPid := child.pid
	if n := len(childStatus.NSpid); n > 0 {
		nsPid = childStatus.NSpid[n-1]
	}
	var pending bool
	var err error
	parent.tr.Do(func() {
		var r *ptrace.Remote
		if r, err = ptrace.NewRemote(parent.p); err != nil {
			return
		}
		defer func() {
			if cerr := r.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		if err = r.Mem.WriteAt(make([]byte, 128), r.Scratch); err != nil {
			return
		}
		if _, err = r.Call(0, "waitid(WSTOPPED|WNOHANG|WNOWAIT)", unix.SYS_WAITID, unix.P_PID, uint64(nsPid), r.Scratch, unix.WSTOPPED|unix.WNOHANG|unix.WNOWAIT, 0); err != nil {
			return
		}
		si := make([]byte, 20)
		if err = r.Mem.ReadAt(si, r.Scratch); err != nil {
			return
		}
		pending = binary.LittleEndian.Uint32(si[16:]) != 0 // si_pid
	})
	return pending, err
}

// settleStoppedChildren runs on a released tree for seized parent t once
// its stopped children are back in their group stops: the stops told t
// again (a stop report, a SIGCHLD). With a short-lived injection set-up it
// waits for each report, collects it again when t had collected it before
// the dump, and takes the SIGCHLD out of t's queue when t had none
// pending before.
func (d *dumper) settleStoppedChildren(t *task) error {
	var kids []*task
	for _, c := range d.tasks {
		if c.ppid == t.pid && c.p != nil && c != t && c.groupStopped {
			kids = append(kids, c)
		}
	}
	if len(kids) == 0 || t.p == nil {
		return nil
	}
	var err error
	t.tr.Do(func() {
		var r *ptrace.Remote
		if r, err = ptrace.NewRemote(t.p); err != nil {
			return
		}
		defer func() {
			if cerr := r.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		for _, c := range kids {
			if err = settleChild(r, c); err != nil {
				return
			}
		}
		if !t.sigchldWasPending {
			set := make([]byte, 24) // sigset, then timespec{0, 0}
			binary.LittleEndian.PutUint64(set, sigchldBit)
			if err = r.Mem.WriteAt(set, r.Scratch); err != nil {
				return
			}
			// EAGAIN when no SIGCHLD came (SA_NOCLDSTOP, ignored)
			r.RawCall(0, unix.SYS_RT_SIGTIMEDWAIT, r.Scratch, 0, r.Scratch+8, 8)
		}
	})
	return err
}

// settleChild waits (injected waitid WNOWAIT in the parent) for child c's
// stop report and collects it when the parent had collected it.
func settleChild(r *ptrace.Remote, c *task) error {
	nsPid := c.pid
	if c.status != nil && len(c.status.NSpid) > 0 {
		nsPid = c.status.NSpid[len(c.status.NSpid)-1]
	}
	waitid := func(opts uint64) (bool, error) {
		if err := r.Mem.WriteAt(make([]byte, 128), r.Scratch); err != nil {
			return false, err
		}
		if _, err := r.Call(0, "waitid(stopped child)", unix.SYS_WAITID, unix.P_PID, uint64(nsPid), r.Scratch, opts, 0); err != nil {
			return false, err
		}
		si := make([]byte, 20)
		if err := r.Mem.ReadAt(si, r.Scratch); err != nil {
			return false, err
		}
		return binary.LittleEndian.Uint32(si[16:]) != 0, nil
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := waitid(unix.WSTOPPED | unix.WNOHANG | unix.WNOWAIT)
		if err != nil {
			return err
		}
		if got {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("child %d: no stop report after 2 s", c.pid)
		}
		time.Sleep(time.Millisecond)
	}
	if c.stopReportTaken {
		_, err := waitid(unix.WSTOPPED | unix.WNOHANG)
		return err
	}
	return nil
}
