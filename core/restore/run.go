package restore

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// Layout of the control area G mapped in the stub: one page holding the
// gadget, then scratch pages for arguments (large enough for a seccomp
// filter of the kernel's maximum 4096 instructions).
const (
	ctlScratchPages = 16
	ctlSize         = (1 + ctlScratchPages) * memory.PageSize
)

type thread struct {
	tid   int // in our pid namespace
	nsTid int // in the restored pid namespace
	core  *imagepb.ThreadCore
	in    *ptrace.Injector
}

// restorer restores one process of the tree. Every process is forked from
// the prepared root stub, so all share the control area address and the
// number of the parked pidfd.
type restorer struct {
	ctx           context.Context
	img           *image.Reader
	inv           *imagepb.Inventory
	pr            *proc
	st            *Stats
	opener        *files.Opener
	pid           int // in our pid namespace
	nsPid         int // in the restored pid namespace (== pid without one)
	parent        *restorer
	mem           *ptrace.Mem
	ctl           uint64 // control area G
	scratch       uint64
	threads       []*thread          // leader first
	pidfd         uint64             // in the task: a pidfd of ours, for pidfd_getfd
	ownsFds       bool               // first of the tasks sharing its fd table: installs the fds
	seccompShared int                // leading filters the leader installed before cloning the filtered threads
	deferredFds   []*imagepb.FdEntry // /proc files installed once every task and thread exists
	exited        bool               // a zombie made to exit, or otherwise gone
	detached      bool               // a stopped task already put back in its group stop
	tree          *tree
	// pgidPending: the group to join is led by a task created later.
	pgidPending bool
	// hadChildExit: a recreated zombie child queued a SIGCHLD here.
	hadChildExit bool
	// cow: its VMAs mapped and filled before its children were forked
	// (cowfork.go), nil if none.
	cow *cowState
}

func (r *restorer) calls() int {
	n := 0
	for _, t := range r.threads {
		n += t.in.Count
	}
	return n
}

// call injects a syscall into thread i.
func (r *restorer) call(i int, what string, nr uint64, args ...uint64) (uint64, error) {
	t := r.threads[i]
	v, err := t.in.Call(what, nr, args...)
	if err != nil {
		return 0, fmt.Errorf("tid %d: %w", t.tid, err)
	}
	return v, nil
}

// put writes b into the scratch area at off and returns its address there.
func (r *restorer) put(off uint64, b []byte) (uint64, error) {
	if off+uint64(len(b)) > ctlScratchPages*memory.PageSize {
		return 0, fmt.Errorf("scratch overflow: %d bytes at %d", len(b), off)
	}
	return r.scratch + off, r.mem.WriteAt(b, r.scratch+off)
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// restoreTask rebuilds everything of the process but its registers: memory,
// fds, mm fields, signal handlers, threads, per-process and per-thread
// state, pending signals, credentials and seccomp filters.
func (r *restorer) restoreTask() error {
	t := time.Now()
	if err := r.restoreMemory(); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	r.st.MemoryMs = ms(time.Since(t))
	return r.restoreAfterMemory()
}

// restoreAfterMemory is restoreTask after the memory.
func (r *restorer) restoreAfterMemory() error {
	if err := r.ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	if err := r.restoreFds(); err != nil {
		return fmt.Errorf("files: %w", err)
	}
	if err := r.restoreMm(); err != nil {
		return fmt.Errorf("mm: %w", err)
	}
	// after the last fd closed in the task (closing any fd of a file
	// drops the task's POSIX locks on it)
	if err := r.restoreLocks(); err != nil {
		return fmt.Errorf("file locks: %w", err)
	}
	if err := r.restoreSignals(); err != nil {
		return fmt.Errorf("signals: %w", err)
	}
	if err := r.createThreads(); err != nil {
		return fmt.Errorf("threads: %w", err)
	}
	if err := r.restoreLoginuids(); err != nil {
		return err
	}
	if err := r.restoreProcessState(); err != nil {
		return err
	}
	if err := r.restoreOomScoreAdj(); err != nil {
		return err
	}
	if err := r.restoreMembarrier(); err != nil {
		return err
	}
	if err := r.queueSignals(); err != nil {
		return fmt.Errorf("pending signals: %w", err)
	}
	if err := r.restoreMlock(); err != nil {
		return fmt.Errorf("memory locks: %w", err)
	}
	// Seccomp filters while the task is still root (CAP_SYS_ADMIN: no
	// no_new_privs needed; our own injected calls are not filtered, thanks
	// to PTRACE_O_SUSPEND_SECCOMP), then credentials, then what credential
	// changes reset.
	for i := range r.threads {
		if err := r.restoreSeccomp(i); err != nil {
			return fmt.Errorf("tid %d: seccomp: %w", r.threads[i].tid, err)
		}
	}
	if err := r.restoreAllThreadCreds(); err != nil {
		return err
	}
	return r.ctx.Err()
}

// checkCPU refuses an image whose register state this CPU cannot load.
func (r *restorer) checkCPU() error {
	x, err := ptrace.GetXState(r.pid)
	if err != nil {
		return err
	}
	hf, hsize, ok := ptrace.XStateFeatures(x)
	if !ok {
		return fmt.Errorf("cannot read this CPU's xsave features")
	}
	for _, t := range r.allThreadCores() {
		f, size, ok := ptrace.XStateFeatures(t.Xsave)
		if !ok {
			return fmt.Errorf("tid %d: image xsave area has no feature header", t.Tid)
		}
		if f&^hf != 0 {
			return fmt.Errorf("image needs CPU xsave features %#x, this CPU has %#x (missing %#x)", f, hf, f&^hf)
		}
		if size != hsize || len(t.Xsave) != len(x) {
			return fmt.Errorf("image xsave area is %d bytes, this CPU uses %d: not supported yet", len(t.Xsave), len(x))
		}
	}
	return nil
}

// prepareStub maps the control area at an address free in both layouts,
// moves injection there, unmaps the rest of the stub and empties its fd
// table, keeping a pidfd of ours for pidfd_getfd.
func (r *restorer) prepareStub(all []*proc, inheritedPidfd int, maxFd uint64) error {
	pid := r.pid
	cur, err := procfs.ReadMaps(pid)
	if err != nil {
		return err
	}
	busy := func(a, b uint64) bool {
		for _, v := range cur {
			if a < v.End && v.Start < b {
				return true
			}
		}
		for _, p := range all {
			if p.mm == nil {
				continue
			}
			for _, v := range p.mm.Vmas {
				if a < v.End && v.Start < b {
					return true
				}
			}
		}
		return false
	}
	g := uint64(0x10000000)
	for busy(g, g+ctlSize) {
		g += 1 << 30
		if g >= 1<<47 {
			return fmt.Errorf("no free address for the control area")
		}
	}
	if _, err := r.call(0, "mmap control area", unix.SYS_MMAP, g, ctlSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0); err != nil {
		return err
	}
	if err := r.mem.WriteAt(ptrace.Gadget, g); err != nil {
		return err
	}
	// the batch loop, for every task forked from this one too
	if err := r.mem.WriteAt(ptrace.BatchCode, g+batchCodeOff); err != nil {
		return err
	}
	if _, err := r.call(0, "mprotect control area", unix.SYS_MPROTECT, g, memory.PageSize, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return err
	}
	r.ctl, r.scratch = g, g+memory.PageSize
	r.threads[0].in.Addr = g
	for _, v := range cur {
		if v.Path == "[vsyscall]" {
			continue
		}
		if _, err := r.call(0, "munmap stub "+v.Path, unix.SYS_MUNMAP, v.Start, v.End-v.Start); err != nil {
			return err
		}
	}
	// Installing high fd numbers needs room: the soft RLIMIT_NOFILE goes to
	// the hard limit until the dumped limits are set.
	lim := make([]byte, 16)
	if _, err := r.call(0, "prlimit64(NOFILE) get", unix.SYS_PRLIMIT64, 0, unix.RLIMIT_NOFILE, 0, r.scratch); err != nil {
		return err
	}
	if err := r.mem.ReadAt(lim, r.scratch); err != nil {
		return err
	}
	copy(lim[0:8], lim[8:16])
	if err := r.mem.WriteAt(lim, r.scratch); err != nil {
		return err
	}
	if _, err := r.call(0, "prlimit64(NOFILE) raise", unix.SYS_PRLIMIT64, 0, unix.RLIMIT_NOFILE, r.scratch, 0); err != nil {
		return err
	}
	// park a pidfd of ours above every fd to install (the children forked
	// from this stub inherit it at the same number); inside a new pid
	// namespace our pid is not visible, so the pidfd was opened in the
	// helper and inherited.
	pfd := uint64(inheritedPidfd)
	if inheritedPidfd < 0 {
		if pfd, err = r.call(0, "pidfd_open(restorer)", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0); err != nil {
			return err
		}
	}
	r.pidfd = maxFd + 1
	if pfd != r.pidfd {
		if _, err = r.call(0, "dup3 pidfd", unix.SYS_DUP3, pfd, r.pidfd, unix.O_CLOEXEC); err != nil {
			return err
		}
	}
	if r.pidfd > 0 {
		if _, err := r.call(0, "close_range", unix.SYS_CLOSE_RANGE, 0, r.pidfd-1, 0); err != nil {
			return err
		}
	}
	_, err = r.call(0, "close_range", unix.SYS_CLOSE_RANGE, r.pidfd+1, ^uint64(0)>>32, 0)
	return err
}

// install moves our fd into the stub and returns its number there.
func (r *restorer) install(fd int) (uint64, error) {
	return r.call(0, "pidfd_getfd", unix.SYS_PIDFD_GETFD, r.pidfd, uint64(fd), 0)
}

// restoreMm sets the mm fields, auxv and exe link with one PR_SET_MM_MAP.
func (r *restorer) restoreMm() error {
	mm := r.pr.mm
	efd, err := r.opener.OpenForMap(mm.ExeFileId, false)
	if err != nil {
		return fmt.Errorf("exe: %w", err)
	}
	// the exe file goes in, PR_SET_MM_MAP names it and it goes again, in
	// one batch: its number is predicted (lowestFreeFd) and checked
	sfd, err := lowestFreeFd(r.pid)
	if err != nil {
		return err
	}
	if len(mm.Auxv) > 512 || len(mm.Auxv)%8 != 0 {
		return fmt.Errorf("auxv of %d bytes", len(mm.Auxv))
	}
	cb := r.batch(0)
	auxv := cb.arg(mm.Auxv)
	b := make([]byte, 104)
	for i, v := range []uint64{mm.StartCode, mm.EndCode, mm.StartData, mm.EndData, mm.StartBrk, mm.Brk, mm.StartStack, mm.ArgStart, mm.ArgEnd, mm.EnvStart, mm.EnvEnd} {
		binary.LittleEndian.PutUint64(b[i*8:], v)
	}
	binary.LittleEndian.PutUint64(b[88:], auxv)
	binary.LittleEndian.PutUint32(b[96:], uint32(len(mm.Auxv)))
	binary.LittleEndian.PutUint32(b[100:], uint32(sfd))
	addr := cb.arg(b)
	cb.add("pidfd_getfd (exe)", unix.SYS_PIDFD_GETFD, r.pidfd, uint64(efd), 0)
	cb.add("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, 104, 0)
	cb.add("close exe fd", unix.SYS_CLOSE, sfd)
	res, err := cb.run()
	if len(res) > 0 && res[0] != sfd {
		return fmt.Errorf("exe: pidfd_getfd installed the file as fd %d, not fd %d as the task's fd table said", res[0], sfd)
	}
	return err
}

// finish sets the FPU state and registers of every thread, removes the
// control area with the last injected syscall, and lets the threads run.
// finishTask sets the FPU state, registers and signal masks of every thread
// and removes the control area with the last injected syscall; the task
// stays stopped until the tree is detached. closePidfd is false when a task
// sharing the fd table already closed it.
func (r *restorer) finishTask(closePidfd bool) error {
	if closePidfd {
		if _, err := r.call(0, "close pidfd", unix.SYS_CLOSE, r.pidfd); err != nil {
			return err
		}
	}
	for i := len(r.threads) - 1; i >= 0; i-- {
		t := r.threads[i]
		if err := ptrace.SetXState(t.tid, t.core.Xsave); err != nil {
			return err
		}
	}
	if err := r.settleStoppedChildren(); err != nil {
		return err
	}
	if r.needsQuietFinish() {
		if err := r.restoreSigtrap(); err != nil {
			return fmt.Errorf("SIGTRAP state: %w", err)
		}
	}
	if _, err := r.call(0, "munmap control area", unix.SYS_MUNMAP, r.ctl, ctlSize); err != nil {
		return err
	}
	for _, t := range r.threads {
		regs, _ := ptrace.RegsFromBytes(t.core.Regs)
		if t.in.Quiet {
			regs = ptrace.RestartFixup(regs) // resumed from a syscall-exit stop
		}
		if err := ptrace.SetRegs(t.tid, &regs); err != nil {
			return err
		}
		if err := ptrace.SetSigmask(t.tid, t.core.Sigmask); err != nil {
			return err
		}
	}
	r.mem.Close()
	r.mem = nil
	if err := r.restoreAutogroupNice(); err != nil {
		return err
	}
	if err := r.restoreSched(); err != nil {
		return err
	}
	return r.stopEarly()
}

// detach lets every thread run; a task dumped in a group stop goes back
// into it, by the signal that stopped it (what the parent's wait reports).
func (r *restorer) detach() error {
	if r.detached {
		return nil
	}
	if r.pr.pst.Stopped {
		sig := int(r.pr.pst.StopSignal)
		if sig == 0 {
			sig = int(unix.SIGSTOP) // image of an older ctr-cr
		}
		tids := make([]int, len(r.threads))
		masks := make([]uint64, len(r.threads))
		for i, t := range r.threads {
			tids[i], masks[i] = t.tid, t.core.Sigmask
		}
		return ptrace.DetachIntoStop(r.pid, tids, masks, sig)
	}
	for i := len(r.threads) - 1; i >= 0; i-- {
		if err := ptrace.Detach(r.threads[i].tid, 0); err != nil {
			return err
		}
	}
	return nil
}

// allThreadCores lists the thread cores of this task (for the CPU check).
func (r *restorer) allThreadCores() []*imagepb.ThreadCore {
	if r.pr.core == nil {
		return nil
	}
	return r.pr.core.Threads
}
