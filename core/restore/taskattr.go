package restore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// Constants of sched_setattr(2), ioprio_set(2), membarrier(2), mlock2(2).
const (
	schedFlagResetFork  = 0x01
	schedFlagKeepAll    = 0x08 | 0x10 // KEEP_POLICY | KEEP_PARAMS
	schedFlagUtilClamps = 0x20 | 0x40 // UTIL_CLAMP_MIN | UTIL_CLAMP_MAX
	schedDeadline       = 6
	ioprioWhoProcess    = 1
	membarrierKnownRegs = 1<<2 | 1<<4 | 1<<6 | 1<<8
	mlockOnfault        = 1
	mclFuture           = 2
	mclOnfault          = 4
)

// restoreSched gives every thread its nice value, scheduling policy, rt
// priority, reset-on-fork flag, utilization clamps and I/O priority, from
// ctr-cr (root) on the stopped threads. It runs after the task's last
// clone, so SCHED_RESET_ON_FORK cannot touch the restore's own forks, and
// while the threads are stopped, so a real-time policy cannot starve the
// restore.
func (r *restorer) restoreSched() error {
	for _, t := range r.threads {
		s := t.core.Sched
		if s == nil {
			continue // image without it: the stub's (ctr-cr's) values
		}
		if err := setThreadSched(t.tid, s); err != nil {
			return fmt.Errorf("tid %d: %w", t.tid, err)
		}
	}
	return nil
}

func setThreadSched(tid int, s *imagepb.TaskSchedState) error {
	if s.Policy == schedDeadline || s.Policy > 7 {
		return fmt.Errorf("scheduling policy %d: not supported", s.Policy)
	}
	if s.Nice < -20 || s.Nice > 19 {
		return fmt.Errorf("nice %d out of range", s.Nice)
	}
	// the nice value first: a real-time policy keeps it for later
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, int(s.Nice)); err != nil {
		return fmt.Errorf("setpriority(nice %d): %w", s.Nice, err)
	}
	a := unix.SchedAttr{Policy: s.Policy, Flags: s.Flags & schedFlagResetFork, Nice: s.Nice, Priority: s.RtPriority}
	if err := unix.SchedSetAttr(tid, &a, 0); err != nil {
		return fmt.Errorf("sched_setattr(policy %d, rt priority %d, flags %#x): %w", s.Policy, s.RtPriority, a.Flags, err)
	}
	got, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return fmt.Errorf("sched_getattr: %w", err)
	}
	if got.Util_min != s.UtilMin || got.Util_max != s.UtilMax {
		c := unix.SchedAttr{Flags: schedFlagKeepAll | schedFlagUtilClamps, Util_min: s.UtilMin, Util_max: s.UtilMax}
		if err := unix.SchedSetAttr(tid, &c, 0); err != nil {
			return fmt.Errorf("sched_setattr(util clamp %d-%d): %w", s.UtilMin, s.UtilMax, err)
		}
	}
	cur, _, e := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if e != 0 {
		return fmt.Errorf("ioprio_get: %w", e)
	}
	if int32(cur) != s.Ioprio {
		if _, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(uint32(s.Ioprio))); e != 0 {
			return fmt.Errorf("ioprio_set(%#x): %w", s.Ioprio, e)
		}
	}
	return nil
}

// restoreOomScoreAdj writes the task's oom_score_adj when the stub's
// (inherited from ctr-cr) differs. Going below ctr-cr's own minimum needs
// CAP_SYS_RESOURCE.
func (r *restorer) restoreOomScoreAdj() error {
	want := r.pr.core.OomScoreAdj
	if want == nil {
		return nil
	}
	path := fmt.Sprintf("/proc/%d/oom_score_adj", r.pid)
	if cur, err := readInt(path); err == nil && cur == int64(*want) {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(int(*want))), 0); err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("oom_score_adj %d: %w (lowering it needs CAP_SYS_RESOURCE)", *want, err)
		}
		return fmt.Errorf("oom_score_adj %d: %w", *want, err)
	}
	return nil
}

// restoreLoginuids sets each thread's audit loginuid where the one it got
// (inherited from ctr-cr) differs: the kernel only lets a task write its
// own, so it is injected in the thread (open/write/close of
// /proc/thread-self/loginuid, before any chroot). The audit session id
// cannot be chosen: the kernel gives a new one with every loginuid write;
// a difference is reported as a warning.
func (r *restorer) restoreLoginuids() error {
	for i, t := range r.threads {
		if err := r.restoreLoginuid(i, t); err != nil {
			return fmt.Errorf("tid %d: %w", t.tid, err)
		}
	}
	r.checkSessionid()
	return nil
}

func (r *restorer) restoreLoginuid(i int, t *thread) error {
	want := t.core.Loginuid
	if want == nil {
		return nil
	}
	if cur, err := readInt(fmt.Sprintf("/proc/%d/task/%d/loginuid", r.pid, t.tid)); err == nil && cur == int64(*want) {
		return nil
	}
	val := []byte(strconv.FormatUint(uint64(*want), 10))
	pathAddr, err := r.put(0, cstr("/proc/thread-self/loginuid"))
	if err != nil {
		return err
	}
	valAddr, err := r.put(64, val)
	if err != nil {
		return err
	}
	fd, err := r.call(i, "open /proc/thread-self/loginuid", unix.SYS_OPEN, pathAddr, unix.O_WRONLY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("loginuid %d: %w", *want, err)
	}
	_, werr := r.call(i, fmt.Sprintf("write loginuid %d", *want), unix.SYS_WRITE, fd, valAddr, uint64(len(val)))
	if _, err := r.call(i, "close loginuid fd", unix.SYS_CLOSE, fd); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("loginuid %d: %w", *want, werr)
	}
	return nil
}

// checkSessionid warns when the audit session id differs from the dump.
func (r *restorer) checkSessionid() {
	want := r.pr.core.Sessionid
	if want == 0 {
		return
	}
	cur, err := readInt(fmt.Sprintf("/proc/%d/sessionid", r.pid))
	if err == nil && cur != int64(want) {
		r.tree.warnings = append(r.tree.warnings, fmt.Sprintf("pid %d: audit session id %d instead of %d (the kernel assigns it)", r.pr.pst.Pid, cur, want))
	}
}

// restoreMembarrier re-registers the task's membarrier commands (the
// registration lives in the mm, which is new).
func (r *restorer) restoreMembarrier() error {
	regs := r.pr.core.MembarrierRegistrations
	if regs == 0 {
		return nil
	}
	if regs&^membarrierKnownRegs != 0 {
		return fmt.Errorf("membarrier registrations %#x: unknown command bits", regs)
	}
	b := r.batch(0)
	for bit := uint32(1); bit != 0 && bit <= regs; bit <<= 1 {
		if regs&bit != 0 {
			b.add(fmt.Sprintf("membarrier(register %#x)", bit), unix.SYS_MEMBARRIER, uint64(bit), 0, 0)
		}
	}
	_, err := b.run()
	return err
}

// restoreMlock locks the VMAs that were locked (smaps "lo", "lf" for
// lock-on-fault) and puts back the mlockall flags for new mappings. It
// runs before the credentials change, while the task may lock without
// RLIMIT_MEMLOCK (CAP_IPC_LOCK), and after the last mapping is made.
func (r *restorer) restoreMlock() error {
	b := r.batch(0)
	for _, v := range r.pr.mm.Vmas {
		if memory.Special(v.Kind) {
			continue
		}
		fl := " " + v.VmFlags + " "
		if !strings.Contains(fl, " lo ") {
			continue
		}
		mode := uint64(0)
		if strings.Contains(fl, " lf ") {
			mode = mlockOnfault
		}
		b.add(fmt.Sprintf("vma %#x-%#x: mlock2(%d)", v.Start, v.End, mode), unix.SYS_MLOCK2, v.Start, v.End-v.Start, mode)
	}
	if f := r.pr.core.MlockFuture; f != 0 {
		if f&^(mclFuture|mclOnfault) != 0 || f&mclFuture == 0 {
			return fmt.Errorf("mlockall flags %#x: invalid", f)
		}
		b.add(fmt.Sprintf("mlockall(%#x)", f), unix.SYS_MLOCKALL, uint64(f))
	}
	_, err := b.run()
	return err
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// restoreAutogroupNice gives the task's session autogroup its nice value
// when it differs. The autogroup belongs to the session: it is written only
// when the session is one the restore made (not ctr-cr's own, shared with
// its caller); otherwise a difference is a warning.
func (r *restorer) restoreAutogroupNice() error {
	want := r.pr.core.AutogroupNice
	if want == nil {
		return nil
	}
	ag, ok := procfs.ReadAutogroup(r.pid)
	switch {
	case !ok:
		return nil // no autogroups here: nothing to give back
	case ag.Nice == *want:
		return nil // the default autogroup runs as nice 0
	case !ag.Own:
		r.tree.warnings = append(r.tree.warnings, fmt.Sprintf("pid %d: autogroup nice 0 instead of %d (the task is in the default autogroup, init's: its session, ctr-cr's own, never called setsid)", r.pr.pst.Pid, *want))
		return nil
	}
	sid, err := unix.Getsid(r.pid)
	if err != nil {
		return err
	}
	if own, _ := unix.Getsid(0); sid == own {
		r.tree.warnings = append(r.tree.warnings, fmt.Sprintf("pid %d: autogroup nice %d instead of %d (the session is ctr-cr's own)", r.pr.pst.Pid, ag.Nice, *want))
		return nil
	}
	path := procfs.PidPath(r.pid, "autogroup")
	if err := os.WriteFile(path, []byte(strconv.Itoa(int(*want))), 0); err != nil {
		return fmt.Errorf("autogroup nice %d: %w", *want, err)
	}
	return nil
}
