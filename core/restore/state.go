package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// prctl options and other constants used by the restorer.
const (
	prSetPdeathsig          = 1
	prSetDumpable           = 4
	prSetName               = 15
	prSetSecurebits         = 28
	prSetNoNewPrivs         = 38
	prSetChildSubreaper     = 36
	prSetThpDisable         = 41
	prCapbsetDrop           = 24
	prCapAmbient            = 47
	prCapAmbientRaise       = 2
	prSetKeepcaps           = 8
	prTimerCreateRestoreIds = 77
	seccompSetModeFilter    = 1
	secbitKeepCaps          = 1 << 4
	ssOnstack               = 1
	ssDisable               = 2
)

func u64(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }

// restoreFds installs every fd at its number with its close-on-exec flag,
// then re-registers epoll targets (they name fd numbers of this task).
func (r *restorer) restoreFds() error {
	if !r.ownsFds {
		return nil // the fd table is shared with a task that installs it
	}
	var now []*imagepb.FdEntry
	for _, e := range r.pr.fds {
		if !r.deferProcFd(e) {
			now = append(now, e)
		}
	}
	if err := r.installFds(now); err != nil {
		return err
	}
	return r.restoreEpollTargets()
}

// installFd opens the file of entry e and installs it at its number with
// its close-on-exec flag.
func (r *restorer) installFd(e *imagepb.FdEntry) error {
	our, err := r.opener.Open(e.FileId)
	if err != nil {
		return fmt.Errorf("fd %d: %w", e.Fd, err)
	}
	tmp, err := r.install(our)
	if err != nil {
		return fmt.Errorf("fd %d: %w", e.Fd, err)
	}
	want := uint64(e.Fd)
	if tmp != want {
		fl := uint64(0)
		if e.Cloexec {
			fl = unix.O_CLOEXEC
		}
		if _, err := r.call(0, "dup3", unix.SYS_DUP3, tmp, want, fl); err != nil {
			return fmt.Errorf("fd %d: %w", e.Fd, err)
		}
		if _, err := r.call(0, "close", unix.SYS_CLOSE, tmp); err != nil {
			return err
		}
	} else if !e.Cloexec {
		if _, err := r.call(0, "fcntl(F_SETFD)", unix.SYS_FCNTL, want, unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("fd %d: %w", e.Fd, err)
		}
	}
	return nil
}

// restoreEpollTargets re-registers the targets of the task's epoll sets.
func (r *restorer) restoreEpollTargets() error {
	for _, e := range r.pr.fds {
		f, _ := r.opener.Entry(e.FileId)
		if f.Kind != imagepb.FileKind_FILE_EPOLL {
			continue
		}
		for _, t := range f.EpollTargets {
			ev := make([]byte, 12)
			binary.LittleEndian.PutUint32(ev[0:], t.Events)
			binary.LittleEndian.PutUint64(ev[4:], t.Data)
			addr, err := r.put(0, ev)
			if err != nil {
				return err
			}
			if err := r.epollAdd(e.Fd, t, addr); err != nil {
				if errno, ok := asErrno(err); ok && errno == unix.EEXIST {
					continue // a dup'd epoll fd: the same set, already filled
				}
				return fmt.Errorf("fd %d (epoll): %w", e.Fd, err)
			}
		}
	}
	return nil
}

// restoreSignals installs the signal handlers (shared by all threads): a
// table of them in the scratch area and one run of ptrace.SetSigactionsCode
// (written beside the gadget in the control page) instead of one injected
// rt_sigaction per handler.
func (r *restorer) restoreSignals() error {
	acts := r.pr.core.Sigactions
	if len(acts) == 0 {
		return nil
	}
	table := make([]byte, 40*len(acts))
	for i, a := range acts {
		if a.Sig == 0 || a.Sig > 64 || a.Sig == uint32(unix.SIGKILL) || a.Sig == uint32(unix.SIGSTOP) {
			return fmt.Errorf("sigaction for invalid signal %d", a.Sig)
		}
		e := table[40*i:]
		u64(e, 0, uint64(a.Sig))
		u64(e, 8, a.Handler)
		u64(e, 16, a.Flags)
		u64(e, 24, a.Restorer)
		u64(e, 32, a.Mask)
	}
	addr, err := r.put(0, table)
	if err != nil {
		return err
	}
	code := r.ctl + uint64(len(ptrace.Gadget))
	if err := r.mem.WriteAt(ptrace.SetSigactionsCode, code); err != nil {
		return fmt.Errorf("write the sigaction loop: %w", err)
	}
	t := r.threads[0]
	if err := ptrace.RunCode(t.tid, t.in.Base, code, len(ptrace.SetSigactionsCode), addr, uint64(len(acts))); err != nil {
		return fmt.Errorf("rt_sigaction loop: %w", err)
	}
	t.in.Count++
	if err := r.mem.ReadAt(table, addr); err != nil {
		return err
	}
	for i, a := range acts {
		if e := ptrace.Errno(int64(binary.LittleEndian.Uint64(table[40*i:]))); e != nil {
			return fmt.Errorf("rt_sigaction(%d): %w", a.Sig, e)
		}
	}
	return nil
}

// createThreads clones every other thread with its tid (clone3 set_tid
// injected into the leader); each starts stopped, auto-attached.
// Threads without seccomp filters are cloned first, then the leader gets
// the filters it shares with the others (see restoreSharedSeccomp), then
// the filtered threads are cloned and inherit them; r.threads ends in image
// order.
func (r *restorer) createThreads() error {
	var plain, filtered []*imagepb.ThreadCore
	for _, tc := range r.pr.core.Threads[1:] {
		if len(tc.Seccomp) == 0 {
			plain = append(plain, tc)
		} else {
			filtered = append(filtered, tc)
		}
	}
	if err := r.cloneThreads(plain); err != nil {
		return err
	}
	if err := r.restoreSharedSeccomp(); err != nil {
		return err
	}
	if err := r.cloneThreads(filtered); err != nil {
		return err
	}
	pos := map[*imagepb.ThreadCore]int{}
	for i, tc := range r.pr.core.Threads {
		pos[tc] = i
	}
	sort.SliceStable(r.threads, func(a, b int) bool { return pos[r.threads[a].core] < pos[r.threads[b].core] })
	return nil
}

// cloneThreads clones the threads tcs from the leader.
func (r *restorer) cloneThreads(tcs []*imagepb.ThreadCore) error {
	leader := r.threads[0]
	for _, tc := range tcs {
		vtid := r.tree.vtid(tc)
		ids := r.tree.ids(tc.Tid, vtid)
		args := cloneArgs(unix.CLONE_VM|unix.CLONE_FS|unix.CLONE_FILES|unix.CLONE_SIGHAND|unix.CLONE_THREAD|unix.CLONE_SYSVSEM, 0, r.scratch+128, len(ids))
		if _, err := r.put(0, args); err != nil {
			return err
		}
		if _, err := r.put(128, setTids(ids)); err != nil {
			return err
		}
		ntid, err := r.tree.clonePid(leader, r.scratch, int(vtid))
		if err != nil {
			return fmt.Errorf("clone3 thread %d: %w", tc.Tid, err)
		}
		t := &thread{tid: ntid, nsTid: int(vtid), core: tc}
		r.threads = append(r.threads, t)
		ws, err := ptrace.Wait(ntid)
		if err != nil {
			return err
		}
		if !ws.Stopped() {
			return fmt.Errorf("thread %d: %s", ntid, ptrace.Describe(ws))
		}
		if ntid != int(tc.Tid) && r.tree.opts.Adopt == 0 {
			return fmt.Errorf("thread got tid %d instead of %d", ntid, tc.Tid)
		}
		regs, err := ptrace.GetRegs(ntid)
		if err != nil {
			return err
		}
		t.in = &ptrace.Injector{Tid: ntid, Addr: r.ctl, Base: regs}
	}
	return nil
}

// addThreadState queues the calls that set what thread i owns: tid address, robust list,
// alternate stack, rseq area, name.
func (r *restorer) addThreadState(b *callBatch, i int) {
	tc := r.threads[i].core
	if tc.ClearTidAddr != 0 {
		b.add("set_tid_address", unix.SYS_SET_TID_ADDRESS, tc.ClearTidAddr)
	}
	if tc.RobustHead != 0 {
		b.add("set_robust_list", unix.SYS_SET_ROBUST_LIST, tc.RobustHead, tc.RobustLen)
	}
	if a := tc.Altstack; a != nil && a.Flags&ssDisable == 0 && a.Size != 0 {
		ss := make([]byte, 24)
		u64(ss, 0, a.Sp)
		u64(ss, 8, uint64(a.Flags&^ssOnstack))
		u64(ss, 16, a.Size)
		b.add("sigaltstack", unix.SYS_SIGALTSTACK, b.arg(ss), 0)
	}
	if rs := tc.Rseq; rs != nil && rs.Ptr != 0 {
		b.add("rseq", unix.SYS_RSEQ, rs.Ptr, uint64(rs.Len), 0, uint64(rs.Sig))
	}
	if tc.TimerSlackNs != 0 {
		b.add("prctl(PR_SET_TIMERSLACK)", unix.SYS_PRCTL, prSetTimerslack, tc.TimerSlackNs)
	}
	if tc.Comm != "" {
		name := []byte(tc.Comm)
		if len(name) > 15 {
			name = name[:15]
		}
		b.add("prctl(PR_SET_NAME)", unix.SYS_PRCTL, prSetName, b.arg(cstr(string(name))))
	}
}

func asErrno(err error) (unix.Errno, bool) {
	for e := err; e != nil; {
		if n, ok := e.(unix.Errno); ok {
			return n, true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return 0, false
		}
		e = u.Unwrap()
	}
	return 0, false
}

const prSetTimerslack = 29 // PR_SET_TIMERSLACK

// epollAdd registers target t in the epoll set at fd efd (event at addr in
// the task). The registration's key is (file, fd number): when the
// target's file is no longer at fd t.Tfd of this task (closed, or the
// number reused by another file after registration), the file is put at
// that number just for the epoll_ctl, and whatever was there is put back.
func (r *restorer) epollAdd(efd int32, t *imagepb.EpollTarget, addr uint64) error {
	add := func() error {
		_, err := r.call(0, fmt.Sprintf("epoll_ctl(%d, ADD, %d)", efd, t.Tfd), unix.SYS_EPOLL_CTL, uint64(efd), unix.EPOLL_CTL_ADD, uint64(t.Tfd), addr)
		return err
	}
	var cur *imagepb.FdEntry
	for _, e := range r.pr.fds {
		if e.Fd == t.Tfd {
			cur = e
		}
	}
	if t.FileId == 0 || (cur != nil && cur.FileId == t.FileId) {
		return add()
	}
	our, err := r.opener.Open(t.FileId)
	if err != nil {
		return fmt.Errorf("target fd %d: %w", t.Tfd, err)
	}
	x, err := r.install(our)
	if err != nil {
		return fmt.Errorf("target fd %d: %w", t.Tfd, err)
	}
	tfd := uint64(t.Tfd)
	saved := uint64(0)
	if cur != nil {
		// move the fd's current file out of the way (above every fd)
		if saved, err = r.call(0, "fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, tfd, unix.F_DUPFD_CLOEXEC, tfd+1); err != nil {
			return fmt.Errorf("target fd %d: %w", t.Tfd, err)
		}
	}
	if x != tfd {
		if _, err := r.call(0, "dup3", unix.SYS_DUP3, x, tfd, 0); err != nil {
			return fmt.Errorf("target fd %d: %w", t.Tfd, err)
		}
		if _, err := r.call(0, "close", unix.SYS_CLOSE, x); err != nil {
			return err
		}
	}
	aerr := add()
	if cur != nil {
		fl := uint64(0)
		if cur.Cloexec {
			fl = unix.O_CLOEXEC
		}
		if _, err := r.call(0, "dup3", unix.SYS_DUP3, saved, tfd, fl); err != nil {
			return fmt.Errorf("fd %d back: %w", t.Tfd, err)
		}
		if _, err := r.call(0, "close", unix.SYS_CLOSE, saved); err != nil {
			return err
		}
	} else if _, err := r.call(0, "close", unix.SYS_CLOSE, tfd); err != nil {
		return err
	}
	return aerr
}

// deferProcFd reports whether fd entry e is a /proc file that does not
// exist yet, e.g. of a thread of the tree not created yet, and keeps it
// for restoreDeferredFds, which runs once every task and thread exists.
func (r *restorer) deferProcFd(e *imagepb.FdEntry) bool {
	f, err := r.opener.Entry(e.FileId)
	if err != nil || f.Kind != imagepb.FileKind_FILE_REG || !files.IsProcPidPath(f.Path) {
		return false
	}
	if _, err := os.Lstat(f.Path); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	r.deferredFds = append(r.deferredFds, e)
	return true
}

// restoreDeferredFds installs the fds deferProcFd kept back.
func (r *restorer) restoreDeferredFds() error {
	for _, e := range r.deferredFds {
		if err := r.installFd(e); err != nil {
			return err
		}
	}
	r.deferredFds = nil
	return nil
}
