package dump

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// prctl options used by the dumper (uapi/linux/prctl.h).
const (
	prGetPdeathsig      = 2
	prGetDumpable       = 3
	prGetSecurebits     = 27
	prGetChildSubreaper = 37
	prGetTidAddress     = 40
	prGetThpDisable     = 42
	restartBlockSyscall = ptrace.ErestartRestartBlock
)

// collectTask fills the per-process part of the core by injected syscalls:
// the state only the task itself can report. The signal actions come from
// one run of the sigaction loop, the rest from one batch of calls whose
// outputs go to the first half of the scratch page.
func collectTask(r *ptrace.Remote, c *imagepb.TaskCore) error {
	sc := r.Scratch
	acts, ok, err := r.Sigactions()
	if err != nil {
		return fmt.Errorf("sigactions: %w", err)
	}
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) || !ok[sig] {
			continue // !ok: 32/33 may be reserved by the kernel on some setups
		}
		a := &imagepb.SigAction{Sig: uint32(sig), Handler: acts[sig].Handler, Flags: acts[sig].Flags, Restorer: acts[sig].Restorer, Mask: acts[sig].Mask}
		if a.Handler != 0 || a.Flags != 0 || a.Mask != 0 {
			c.Sigactions = append(c.Sigactions, a)
		}
	}
	// outputs: itimers at 0, 32, 64; pdeath signal at 96; subreaper at 100
	var b ptrace.Batch
	for which := uint64(0); which < 3; which++ {
		b.Add(fmt.Sprintf("getitimer(%d)", which), unix.SYS_GETITIMER, which, sc+32*which)
	}
	b.Add("prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, prGetDumpable)
	b.Add("prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL, prGetPdeathsig, sc+96)
	b.Add("prctl(PR_GET_CHILD_SUBREAPER)", unix.SYS_PRCTL, prGetChildSubreaper, sc+100)
	b.Add("prctl(PR_GET_THP_DISABLE)", unix.SYS_PRCTL, prGetThpDisable)
	res, err := r.Batch(0, &b)
	if err != nil {
		return err
	}
	out := make([]byte, 104)
	if err := r.Mem.ReadAt(out, sc); err != nil {
		return err
	}
	for which := 0; which < 3; which++ {
		t := out[32*which:]
		it := &imagepb.Itimer{Which: uint32(which), IntervalUs: int64(le(t, 0))*1e6 + int64(le(t, 8)), ValueUs: int64(le(t, 16))*1e6 + int64(le(t, 24))}
		if it.IntervalUs != 0 || it.ValueUs != 0 {
			c.Itimers = append(c.Itimers, it)
		}
	}
	c.Dumpable = int32(res[3])
	c.PdeathSig = int32(binary.LittleEndian.Uint32(out[96:]))
	c.ChildSubreaper = binary.LittleEndian.Uint32(out[100:]) != 0
	c.ThpDisable = int32(res[6])
	return nil
}

// collectTimers reads the POSIX timers listed in /proc/PID/timers, their
// armed values by injected timer_gettime.
func collectTimers(r *ptrace.Remote, pid int, c *imagepb.TaskCore) error {
	timers, err := procfs.ReadTimers(pid)
	if err != nil {
		return err
	}
	for _, t := range timers {
		if _, err := r.Call(0, fmt.Sprintf("timer_gettime(%d)", t.ID), unix.SYS_TIMER_GETTIME, uint64(t.ID), r.Scratch); err != nil {
			return err
		}
		b := make([]byte, 32)
		if err := r.Mem.ReadAt(b, r.Scratch); err != nil {
			return err
		}
		ov, err := r.Call(0, "timer_getoverrun", unix.SYS_TIMER_GETOVERRUN, uint64(t.ID))
		if err != nil {
			return err
		}
		c.PosixTimers = append(c.PosixTimers, &imagepb.PosixTimer{
			Id: int32(t.ID), Clock: int32(t.ClockID), Notify: int32(t.SigevNotify()), Signo: int32(t.Signo),
			SigevValue: t.SigevValue, NotifyTid: int32(t.NotifyTid),
			IntervalNs: int64(le(b, 0))*1e9 + int64(le(b, 8)), ValueNs: int64(le(b, 16))*1e9 + int64(le(b, 24)),
			Overrun: int32(ov),
		})
	}
	return nil
}

// collectThread fills the per-thread core of thread i.
func collectThread(r *ptrace.Remote, pid, i int, th *ptrace.Thread) (*imagepb.ThreadCore, error) {
	tc := &imagepb.ThreadCore{Tid: int32(th.Tid), Sigmask: th.Sigmask}
	regs := th.Regs
	if int64(regs.Orig_rax) >= 0 && int64(regs.Rax) == -restartBlockSyscall {
		// The restart block (e.g. of clock_nanosleep) lives in the kernel
		// and is not carried over: the thread sees EINTR instead, as after
		// a signal with a handler.
		regs.Rax = minusEINTR
	}
	tc.Regs = ptrace.RegsBytes(&regs)
	var err error
	if tc.Sched, err = collectSched(th.Tid); err != nil {
		return nil, err
	}
	// the audit loginuid is per thread (only with CONFIG_AUDIT)
	if v, err := readProcInt(pid, fmt.Sprintf("task/%d/loginuid", th.Tid)); err == nil {
		lu := uint32(v)
		tc.Loginuid = &lu
	}
	if tc.Xsave, err = th.XState(); err != nil {
		return nil, err
	}
	q, err := ptrace.PeekSiginfo(th.Tid, false)
	if err != nil {
		return nil, err
	}
	for _, s := range append(th.Stolen, q...) {
		tc.Pending = append(tc.Pending, &imagepb.Siginfo{Raw: s})
	}
	if rs, err := ptrace.GetRseq(th.Tid); err == nil && rs.Ptr != 0 {
		tc.Rseq = &imagepb.Rseq{Ptr: rs.Ptr, Len: rs.Len, Sig: rs.Sig}
	}
	var head, hlen uint64
	if _, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(th.Tid), uintptrOf(&head), uintptrOf(&hlen)); e != 0 {
		return nil, fmt.Errorf("get_robust_list tid %d: %w", th.Tid, e)
	}
	tc.RobustHead, tc.RobustLen = head, hlen
	// one batch: tid address out at scratch+0, the alternate stack at +64
	var bt ptrace.Batch
	bt.Add("prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL, prGetTidAddress, r.Scratch)
	bt.Add("sigaltstack", unix.SYS_SIGALTSTACK, 0, r.Scratch+64)
	bt.Add("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, prGetSecurebits)
	bt.Add("prctl(PR_GET_TIMERSLACK)", unix.SYS_PRCTL, prGetTimerslack)
	res, err := r.Batch(i, &bt)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 96)
	if err := r.Mem.ReadAt(b, r.Scratch); err != nil {
		return nil, err
	}
	tc.ClearTidAddr = le(b, 0)
	tc.Altstack = &imagepb.Altstack{Sp: le(b, 64), Flags: uint32(le(b, 72)), Size: le(b, 80)}
	sb := res[2]
	tc.TimerSlackNs = res[3]
	st, err := procfs.ReadTaskStatus(pid, th.Tid)
	if err != nil {
		return nil, err
	}
	if len(st.NSpid) > 0 {
		tc.NsTid = int32(st.NSpid[len(st.NSpid)-1])
	} else {
		tc.NsTid = int32(th.Tid)
	}
	tc.Comm = st.Name
	tc.Creds = &imagepb.Creds{
		Uids: st.Uid[:], Gids: st.Gid[:], Groups: st.Groups,
		CapInh: st.CapInh, CapPrm: st.CapPrm, CapEff: st.CapEff, CapBnd: st.CapBnd, CapAmb: st.CapAmb,
		Securebits: uint32(sb), NoNewPrivs: st.NoNewPrivs,
	}
	if st.Seccomp == 2 {
		filters, err := ptrace.SeccompFilters(th.Tid)
		if err != nil {
			return nil, err
		}
		// the kernel numbers filters from the first installed (index 0,
		// the outermost) on: store them in that, their install, order
		for k := range filters {
			fl, err := ptrace.SeccompFilterFlags(th.Tid, k)
			if err != nil {
				return nil, err
			}
			tc.Seccomp = append(tc.Seccomp, &imagepb.SeccompFilter{Bpf: filters[k], Flags: fl})
		}
	} else if st.Seccomp == 1 {
		tc.SeccompStrict = true
	}
	if comm, err := procfs.Comm(pid, th.Tid); err == nil {
		tc.Comm = comm
	}
	return tc, nil
}

const minusEINTR = ^uint64(3) // -EINTR as a register value

func le(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

const prGetTimerslack = 30 // PR_GET_TIMERSLACK
