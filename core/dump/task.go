package dump

import (
	"encoding/binary"
	"fmt"
	"unsafe"

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

// taskAnswers are the answers of collectTask's batch that go elsewhere
// than the core's fields it fills.
type taskAnswers struct {
	brk        uint64 // brk(0): the program break
	membarrier int64  // membarrier(GET_REGISTRATIONS), raw: a negative errno before 6.3 or without membarrier
	thread0    threadAnswers
}

// threadAnswers are the per-thread values only the thread itself can
// report, read by one batch of calls in it (threadCalls).
type threadAnswers struct {
	clearTidAddr           uint64
	altstack               *imagepb.Altstack
	securebits, timerslack uint64
}

// threadCallsOut is the size of the outputs threadCalls writes at its
// offset of the scratch page.
const threadCallsOut = 96

// threadCalls queues the per-thread calls; their outputs go to
// scratch+off: the tid address at +0, the alternate stack at +64.
func threadCalls(b *ptrace.Batch, scratch, off uint64) {
	b.Add("prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL, prGetTidAddress, scratch+off)
	b.Add("sigaltstack", unix.SYS_SIGALTSTACK, 0, scratch+off+64)
	b.Add("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, prGetSecurebits)
	b.Add("prctl(PR_GET_TIMERSLACK)", unix.SYS_PRCTL, prGetTimerslack)
}

// threadAnswersFrom reads threadCalls' answers: res, their four results;
// out, the threadCallsOut bytes at their offset.
func threadAnswersFrom(res []uint64, out []byte) threadAnswers {
	return threadAnswers{
		clearTidAddr: le(out, 0),
		altstack:     &imagepb.Altstack{Sp: le(out, 64), Flags: uint32(le(out, 72)), Size: le(out, 80)},
		securebits:   res[2],
		timerslack:   res[3],
	}
}

// collectTask fills the per-process part of the core by injected syscalls:
// the state only the task itself can report. The signal actions come from
// one run of the sigaction loop, the rest from one batch of calls whose
// outputs go to the first half of the scratch page (brk, the membarrier
// registrations and the leader thread's threadCalls included: each
// injection round trip wakes the task, which on a busy machine waits for a
// CPU).
func collectTask(r *ptrace.Remote, c *imagepb.TaskCore) (taskAnswers, error) {
	var ans taskAnswers
	sc := r.Scratch
	acts, ok, err := r.Sigactions()
	if err != nil {
		return ans, fmt.Errorf("sigactions: %w", err)
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
	b.Add("brk(0)", unix.SYS_BRK, 0)
	const thread0Off = 128 // the leader's threadCalls outputs, after the ones above
	threadCalls(&b, sc, thread0Off)
	// last: it may fail (EINVAL before 6.3, ENOSYS without membarrier)
	b.AddMayFail("membarrier(GET_REGISTRATIONS)", unix.SYS_MEMBARRIER, membarrierGetRegs, 0, 0)
	res, err := r.Batch(0, &b)
	if err != nil {
		return ans, err
	}
	out := make([]byte, thread0Off+threadCallsOut)
	if err := r.Mem.ReadAt(out, sc); err != nil {
		return ans, err
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
	ans.brk = res[7]
	ans.thread0 = threadAnswersFrom(res[8:12], out[thread0Off:])
	ans.membarrier = int64(res[12])
	return ans, nil
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

// collectThread fills the per-thread core of thread i. pre, when not
// nil, holds thread i's threadCalls answers already read (the leader's,
// from collectTask's batch); otherwise they are read by a batch here.
func collectThread(r *ptrace.Remote, pid, i int, th *ptrace.Thread, pre *threadAnswers) (*imagepb.ThreadCore, error) {
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
	if _, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(th.Tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&hlen))); e != 0 {
		return nil, fmt.Errorf("get_robust_list tid %d: %w", th.Tid, e)
	}
	tc.RobustHead, tc.RobustLen = head, hlen
	ta := pre
	if ta == nil {
		var bt ptrace.Batch
		threadCalls(&bt, r.Scratch, 0)
		res, err := r.Batch(i, &bt)
		if err != nil {
			return nil, err
		}
		out := make([]byte, threadCallsOut)
		if err := r.Mem.ReadAt(out, r.Scratch); err != nil {
			return nil, err
		}
		a := threadAnswersFrom(res, out)
		ta = &a
	}
	tc.ClearTidAddr = ta.clearTidAddr
	tc.Altstack = ta.altstack
	sb := ta.securebits
	tc.TimerSlackNs = ta.timerslack
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
