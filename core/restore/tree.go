package restore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/lazy"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
	"github.com/ctr-cr/ctr-cr/internal/fault"
)

// tree restores a process tree: the root stub is prepared once (control
// area mapped, everything else unmapped, fds closed but a parked pidfd),
// every other process is forked from its parent's stub by an injected
// clone3 with set_tid — before any memory is restored, so each child starts
// as the same empty shell — with sessions and groups set as the tasks are
// created; then each process is filled in, and the whole tree is let go at
// once, children first.
type tree struct {
	ctx    context.Context
	img    *image.Reader
	inv    *imagepb.Inventory
	procs  []*proc
	st     *Stats
	opener *files.Opener
	opts   Options
	pidns  bool // the root is pid 1 of a new pid namespace

	stub  *stub
	root  *restorer
	tasks []*restorer // procs order: parents first
	byPid map[int32]*restorer
	// warnings: what was not restored exactly (reported, not fatal).
	warnings []string
	// cow: each process's part in restoring the pages it shares with
	// its parent (cowfork.go), by pid; nil entries for the others.
	cow map[int32]*cowState
	// lazy serves the memory of a lazy restore (lazy.go), or nil.
	lazy *lazy.Session
}

// vpid is the pid a process gets in the namespace it is restored in.
func (t *tree) vpid(pe *imagepb.PstreeEntry) int32 {
	if t.pidns && len(pe.NsPid) > 0 {
		return pe.NsPid[len(pe.NsPid)-1]
	}
	return pe.Pid
}

// vtid is the tid a thread gets in the namespace it is restored in.
func (t *tree) vtid(tc *imagepb.ThreadCore) int32 {
	if t.pidns && tc.NsTid != 0 {
		return tc.NsTid
	}
	return tc.Tid
}

// pidOf maps a pid of the image to the process restored for it (in our
// pid namespace), while it exists: the opener's files.WithPids.
func (t *tree) pidOf(pid int32) (int, bool) {
	if t == nil {
		return 0, false // before the first try
	}
	r := t.byPid[pid]
	if r == nil || r.exited {
		return 0, false
	}
	return r.pid, true
}

func (t *tree) restore() error {
	t.pidns = t.inv.RootPidNs
	t.byPid = map[int32]*restorer{}
	rootPr := t.procs[0]
	if err := t.planCow(); err != nil {
		return err
	}
	if err := t.startLazy(); err != nil {
		return err
	}
	t1 := time.Now()
	var s *stub
	var err error
	if t.opts.Adopt != 0 {
		s, err = stubAdopt(t.opts.Adopt)
	} else {
		s, err = newStub(int(t.vpid(rootPr.pst)), int(rootPr.pst.Pid), t.opts.PidMethod, t.pidns, t.opts.MountNS != nil)
	}
	if err != nil {
		return fmt.Errorf("pid %d: create task: %w", rootPr.pst.Pid, err)
	}
	t.stub = s
	if t.opts.MountNS != nil && t.opts.Adopt == 0 {
		if err := t.opts.MountNS(s.pid); err != nil {
			return fmt.Errorf("pid %d: mount namespace: %w", rootPr.pst.Pid, err)
		}
		if err := t.opener.SetRoot(s.pid); err != nil {
			return fmt.Errorf("pid %d: %w", rootPr.pst.Pid, err)
		}
	}
	r := t.newRestorer(rootPr, s.pid, s.regs, s.gadget)
	t.root = r
	if r.mem, err = ptrace.OpenMem(r.pid); err != nil {
		return err
	}
	if err := r.checkCPU(); err != nil {
		return fmt.Errorf("pid %d: %w", rootPr.pst.Pid, err)
	}
	maxFd := uint64(2)
	for _, p := range t.procs {
		for _, f := range p.fds {
			maxFd = max(maxFd, uint64(f.Fd))
		}
	}
	if err := r.prepareStub(t.procs, s.pidfd, maxFd); err != nil {
		return fmt.Errorf("pid %d: prepare: %w", rootPr.pst.Pid, err)
	}
	if err := t.stageCow(r, nil, false); err != nil {
		return fmt.Errorf("pid %d: memory shared with its children: %w", rootPr.pst.Pid, err)
	}
	if err := t.setSession(r, nil); err != nil {
		return err
	}
	if err := t.createChildren(); err != nil {
		return err
	}
	if err := t.finishCowBases(); err != nil {
		return fmt.Errorf("memory shared by children: %w", err)
	}
	if err := t.setForeground(); err != nil {
		return err
	}
	t.st.ForkingMs = ms(time.Since(t1))
	tm := time.Now()
	if err := t.opener.OpenListeners(); err != nil {
		return fmt.Errorf("pid %d: %w", rootPr.pst.Pid, err)
	}
	if err := t.restoreTasks(); err != nil {
		return err
	}
	t.st.MemoryMs = ms(time.Since(tm))
	for _, r := range t.tasks {
		if err := r.restoreDeferredFds(); err != nil {
			return fmt.Errorf("pid %d: files: %w", r.pr.pst.Pid, err)
		}
	}
	if fault.Once("restore:pid-race") {
		// tests: as if another fork had taken a thread's pid, once
		return fmt.Errorf("pid %d: injected fault: %w", t.root.pr.pst.Pid, errPidRace)
	}
	if err := t.opener.TakeFileLocks(); err != nil {
		return fmt.Errorf("file locks: %w", err)
	}
	closed := map[uint32]bool{}
	for i := len(t.tasks) - 1; i >= 0; i-- {
		r := t.tasks[i]
		if r.pr.core == nil {
			continue
		}
		id := r.pr.pst.FilesId
		if err := r.finishTask(id == 0 || !closed[id]); err != nil {
			return fmt.Errorf("pid %d: %w", r.pr.pst.Pid, err)
		}
		closed[id] = true
		t.st.InjectedSyscalls += r.calls()
		t.st.Threads += len(r.threads)
		t.st.Processes++
	}
	if err := t.opener.ResumeConnections(); err != nil {
		return err
	}
	if err := t.unlockNetwork(); err != nil {
		return err
	}
	if err := t.opener.RestoreOwners(t.tidOf); err != nil {
		return err
	}
	if err := t.opener.SealObjects(); err != nil {
		return err
	}
	if err := t.opener.FinishGhosts(); err != nil {
		return err
	}
	t.opener.Finish()
	if s.helper != nil {
		// ns_last_pid method: the stub is the exec'd child itself; the
		// caller reaps it (Wait), os/exec must not.
		s.helper.Process.Release()
	}
	for i := len(t.tasks) - 1; i >= 0; i-- {
		r := t.tasks[i]
		if r.pr.core == nil {
			continue
		}
		if err := r.detach(); err != nil {
			return fmt.Errorf("pid %d: %w", r.pr.pst.Pid, err)
		}
	}
	if t.lazy != nil {
		t.lazy.Start()
	}
	t.st.RestoreMs = ms(time.Since(t1))
	return nil
}

func (t *tree) newRestorer(pr *proc, pid int, regs ptrace.Regs, gadget uint64) *restorer {
	r := &restorer{ctx: t.ctx, img: t.img, inv: t.inv, pr: pr, st: t.st, opener: t.opener, pid: pid, nsPid: int(t.vpid(pr.pst)), tree: t}
	core := (*imagepb.ThreadCore)(nil)
	if pr.core != nil {
		core = pr.core.Threads[0]
	}
	r.threads = []*thread{{tid: pid, nsTid: r.nsPid, core: core, in: &ptrace.Injector{Tid: pid, Addr: gadget, Base: regs}}}
	if t.root != nil {
		r.ctl, r.scratch, r.pidfd = t.root.ctl, t.root.scratch, t.root.pidfd
	}
	t.tasks = append(t.tasks, r)
	t.byPid[pr.pst.Pid] = r
	return r
}

// createChildren forks every process but the root from its parent, in
// pstree order, puts each in its session and group, and lets zombies die.
func (t *tree) createChildren() error {
	var deferred []*restorer
	for _, pr := range t.procs[1:] {
		parent := t.byPid[pr.pst.Ppid]
		if parent == nil || parent.pr.core == nil {
			return fmt.Errorf("pid %d: parent %d is not a live process of the image", pr.pst.Pid, pr.pst.Ppid)
		}
		var c *restorer
		var err error
		from := parent // whose memory c copied
		if pe := pr.pst; pe.Sid != parent.pr.pst.Sid && pe.Sid != pe.Pid && t.byPid[pe.Sid] == nil && !t.inImage(pe.Sid) {
			if m := t.sessionMember(pe.Sid, parent); m != nil {
				// the session exists already (its pid is held by it):
				// fork from a member that has the same parent
				if c, err = t.forkFrom(m, pr, unix.CLONE_PARENT, 0); err == nil {
					c.parent = parent
				}
				from = m
			} else {
				c, err = t.forkInSession(parent, pr)
			}
		} else {
			c, err = t.fork(parent, pr)
		}
		if err != nil {
			return fmt.Errorf("pid %d: create task: %w", pr.pst.Pid, err)
		}
		if err := t.stageCow(c, from, from == parent); err != nil {
			return fmt.Errorf("pid %d: memory shared with its parent: %w", pr.pst.Pid, err)
		}
		if err := t.setSession(c, parent); err != nil {
			return err
		}
		if c.pgidPending {
			deferred = append(deferred, c)
		}
	}
	groups := map[int32]bool{} // groups recreated through a helper
	for _, c := range deferred {
		pgid := c.pr.pst.Pgid
		leader := t.byPid[pgid]
		vpgid := pgid
		switch {
		case leader != nil:
			vpgid = int32(leader.nsPid)
		case groups[pgid]:
			if t.pidns && c.pr.pst.NsPgid > 0 {
				vpgid = c.pr.pst.NsPgid // recreated inside the namespace
			}
		default:
			// the group's leader is gone: a helper with its pid, in
			// the same session, makes the group again
			if err := t.groupHelper(c, pgid); err != nil {
				return fmt.Errorf("pid %d: process group %d: %w", c.pr.pst.Pid, pgid, err)
			}
			groups[pgid] = true
			continue
		}
		if _, err := c.call(0, "setpgid", unix.SYS_SETPGID, 0, uint64(vpgid)); err != nil {
			return fmt.Errorf("pid %d: join group %d: %w", c.pr.pst.Pid, pgid, err)
		}
	}
	for _, r := range t.tasks {
		if r.pr.pst.Zombie {
			if err := t.makeZombie(r); err != nil {
				return fmt.Errorf("pid %d: zombie: %w", r.pr.pst.Pid, err)
			}
		}
	}
	for _, r := range t.tasks {
		if r.pr.core != nil && r.hadChildExit {
			if err := r.drainSigchld(); err != nil {
				return fmt.Errorf("pid %d: %w", r.pr.pst.Pid, err)
			}
		}
	}
	return nil
}

// fork creates the process pr by a clone3 with set_tid injected into parent.
func (t *tree) fork(parent *restorer, pr *proc) (*restorer, error) {
	flags := uint64(0)
	if pr.pst.FilesId != 0 && pr.pst.FilesId == parent.pr.pst.FilesId {
		flags |= unix.CLONE_FILES
	}
	if pr.pst.FsId != 0 && pr.pst.FsId == parent.pr.pst.FsId {
		flags |= unix.CLONE_FS
	}
	exitSig := uint64(unix.SIGCHLD)
	if pr.core != nil && pr.core.ExitSignal > 0 && pr.core.ExitSignal < 65 {
		exitSig = uint64(pr.core.ExitSignal)
	}
	return t.forkFrom(parent, pr, flags, exitSig)
}

func (t *tree) forkFrom(parent *restorer, pr *proc, flags, exitSig uint64) (*restorer, error) {
	child, regs, err := t.spawn(parent, t.ids(pr.pst.Pid, t.vpid(pr.pst)), flags, exitSig)
	if err != nil {
		return nil, err
	}
	c := t.newRestorer(pr, child, regs, parent.ctl)
	c.parent = parent
	if c.mem, err = ptrace.OpenMem(child); err != nil {
		return nil, err
	}
	return c, nil
}

// ids is the set_tid array for a task: its pid, or with a restored pid
// namespace [pid inside, pid in ours].
func (t *tree) ids(outer, inner int32) []int32 {
	if t.opts.Adopt != 0 {
		return []int32{inner} // the namespace exists: its pids only
	}
	if t.pidns {
		return []int32{inner, outer}
	}
	return []int32{outer}
}

// spawn injects clone3(flags, set_tid=ids) into parent's leader and returns
// the new task, stopped and traced.
func (t *tree) spawn(parent *restorer, ids []int32, flags, exitSig uint64) (int, ptrace.Regs, error) {
	var regs ptrace.Regs
	vpid := ids[0]
	args := cloneArgs(flags, exitSig, parent.scratch+128, len(ids))
	if _, err := parent.put(0, args); err != nil {
		return 0, regs, err
	}
	if _, err := parent.put(128, setTids(ids)); err != nil {
		return 0, regs, err
	}
	lead := parent.threads[0]
	child, err := t.clonePid(lead, parent.scratch, int(vpid))
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return 0, regs, fmt.Errorf("pid %d is taken", vpid)
		}
		return 0, regs, err
	}
	ws, err := ptrace.Wait(child)
	if err != nil {
		return 0, regs, err
	}
	if !ws.Stopped() {
		return 0, regs, fmt.Errorf("new task %d: %s", child, ptrace.Describe(ws))
	}
	regs, err = ptrace.GetRegs(child)
	return child, regs, err
}

// forkInSession creates pr, whose session leader (pid pr.Sid) is gone, as
// CRIU does: a helper task with the leader's pid is forked from the parent,
// starts the session, forks pr on the parent's behalf (CLONE_PARENT), and
// exits; the parent reaps it at once.
func (t *tree) forkInSession(parent *restorer, pr *proc) (*restorer, error) {
	sid := pr.pst.Sid
	ids := []int32{sid}
	if t.pidns {
		if pr.pst.NsSid <= 0 {
			return nil, fmt.Errorf("session %d led by a process outside the image, in a pid namespace, its id there not recorded: unsupported", sid)
		}
		ids = t.ids(sid, pr.pst.NsSid)
	}
	var c *restorer
	err := t.helperTask(parent, ids, "session", func(h *restorer) error {
		if _, err := h.call(0, "setsid", unix.SYS_SETSID); err != nil {
			return err
		}
		var err error
		if c, err = t.forkFrom(h, pr, unix.CLONE_PARENT, 0); err != nil {
			return err
		}
		c.parent = parent
		return nil
	})
	return c, err
}

// helperTask forks a temporary task with ids (set_tid: its pid, with a
// restored pid namespace [inside, ours]) from parent (a kernel-faithful
// tree needs them for sessions and groups whose leader is gone), runs setup
// in it, then makes it exit and has the parent reap it at once.
func (t *tree) helperTask(parent *restorer, ids []int32, what string, setup func(h *restorer) error) error {
	pid := ids[0] // in the namespace it is created in
	hpid, hregs, err := t.spawn(parent, ids, 0, uint64(unix.SIGCHLD))
	if err != nil {
		return fmt.Errorf("helper for %s %d: %w", what, pid, err)
	}
	h := &restorer{ctx: t.ctx, st: t.st, pid: hpid, nsPid: int(pid), tree: t, ctl: parent.ctl, scratch: parent.scratch, pidfd: parent.pidfd}
	h.threads = []*thread{{tid: hpid, nsTid: int(pid), in: &ptrace.Injector{Tid: hpid, Addr: parent.ctl, Base: hregs}}}
	if h.mem, err = ptrace.OpenMem(hpid); err == nil {
		err = setup(h)
		h.mem.Close()
	}
	if err == nil {
		err = exitTask(hpid, hregs, parent.ctl, 0)
	}
	if err != nil {
		unix.Kill(hpid, unix.SIGKILL)
		reap(hpid)
		return fmt.Errorf("helper for %s %d: %w", what, pid, err)
	}
	if _, err := parent.call(0, "wait4(helper)", unix.SYS_WAIT4, uint64(pid), 0, unix.WALL, 0); err != nil {
		return err
	}
	parent.hadChildExit = true
	return nil
}

// exitTask makes a stopped stub task exit with code (exit_group at the
// control area's gadget) and collects the exit.
func exitTask(tid int, regs ptrace.Regs, gadget uint64, code int) error {
	regs.Rip, regs.Rax, regs.Orig_rax, regs.Rdi = gadget, unix.SYS_EXIT_GROUP, ^uint64(0), uint64(code)
	if err := ptrace.SetRegs(tid, &regs); err != nil {
		return err
	}
	if err := ptrace.Cont(tid, 0); err != nil {
		return err
	}
	w, err := ptrace.Wait(tid)
	if err != nil {
		return err
	}
	if !w.Exited() {
		return fmt.Errorf("exit_group: %s", ptrace.Describe(w))
	}
	return nil
}

// setSession puts a just-created task into its dumped session and group,
// as far as they can be made from its own position: its own new session,
// its own group, or a group that already exists; a group led by a task
// created later is joined in a second pass (pgidPending).
func (t *tree) setSession(r *restorer, parent *restorer) error {
	pe := r.pr.pst
	helped := parent != nil && t.sessionHelped(r)
	switch {
	case pe.Sid == pe.Pid:
		if _, err := r.call(0, "setsid", unix.SYS_SETSID); err != nil {
			// an adopted init may lead its session already
			sid, serr := r.call(0, "getsid", unix.SYS_GETSID, 0)
			if !(parent == nil && t.opts.Adopt != 0 && serr == nil && sid == uint64(r.nsPid)) {
				return fmt.Errorf("pid %d: %w", pe.Pid, err)
			}
		}
		return t.acquireCtty(r)
	case parent == nil:
		// the root in a session led outside the image: it stays in ours
	case pe.Sid != parent.pr.pst.Sid && !helped:
		return fmt.Errorf("pid %d: its session %d is led by another process of the image that is not its parent: unsupported", pe.Pid, pe.Sid)
	}
	switch {
	case pe.Pgid == pe.Pid:
		if _, err := r.call(0, "setpgid", unix.SYS_SETPGID, 0, 0); err != nil {
			return fmt.Errorf("pid %d: %w", pe.Pid, err)
		}
	case helped && pe.Pgid == pe.Sid:
		// inherited from the session helper
	case !helped && parent != nil && pe.Pgid == parent.pr.pst.Pgid:
		// inherited
	case parent == nil:
		// the root in a group led outside the image: stays in ours
	default:
		if leader := t.byPid[pe.Pgid]; leader != nil {
			if _, err := r.call(0, "setpgid", unix.SYS_SETPGID, 0, uint64(leader.nsPid)); err != nil {
				return fmt.Errorf("pid %d: join group %d: %w", pe.Pid, pe.Pgid, err)
			}
		} else {
			r.pgidPending = true
		}
	}
	return nil
}

// makeZombie makes r exit the way the dumped zombie did; its parent (still
// stopped) will reap it after the restore.
func (t *tree) makeZombie(r *restorer) error {
	ws := unix.WaitStatus(r.pr.pst.ExitStatus)
	lead := r.threads[0]
	if ws.Signaled() {
		sig := ws.Signal()
		// no core file: the process is only being recreated
		lim := make([]byte, 16)
		if _, err := r.put(0, lim); err != nil {
			return err
		}
		if _, err := r.call(0, "prlimit64(CORE, 0)", unix.SYS_PRLIMIT64, 0, unix.RLIMIT_CORE, r.scratch, 0); err != nil {
			return err
		}
		if err := ptrace.SetSigmask(lead.tid, 0); err != nil {
			return err
		}
		if err := unix.Tgkill(r.pid, lead.tid, sig); err != nil {
			return fmt.Errorf("tgkill %v: %w", sig, err)
		}
		if err := ptrace.Cont(lead.tid, 0); err != nil {
			return err
		}
		for {
			w, err := ptrace.Wait(lead.tid)
			if err != nil {
				return err
			}
			if w.Exited() || w.Signaled() {
				break
			}
			if w.Stopped() {
				// the signal-delivery stop: let the signal through
				if err := ptrace.Cont(lead.tid, int(w.StopSignal())); err != nil {
					return err
				}
			}
		}
	} else if err := exitTask(lead.tid, lead.in.Base, r.ctl, ws.ExitStatus()); err != nil {
		return err
	}
	r.mem.Close()
	r.mem = nil
	r.exited = true
	if r.parent != nil {
		r.parent.hadChildExit = true
	}
	return nil
}

// drainSigchld removes the SIGCHLD the recreation of zombies queued on r:
// the original parent had already received it for those.
func (r *restorer) drainSigchld() error {
	set := make([]byte, 8)
	binary.LittleEndian.PutUint64(set, 1<<(unix.SIGCHLD-1))
	addr, err := r.put(0, set)
	if err != nil {
		return err
	}
	ts, err := r.put(64, make([]byte, 16))
	if err != nil {
		return err
	}
	for i := 0; i < 64; i++ {
		ret, err := r.threads[0].in.Raw(unix.SYS_RT_SIGTIMEDWAIT, addr, 0, ts, 8)
		if err != nil {
			return err
		}
		if ret < 0 {
			return nil // EAGAIN: none left
		}
	}
	return nil
}

// abort kills every task created so far and releases what the restore holds.
func (t *tree) abort() {
	for _, r := range t.tasks {
		if r.mem != nil {
			r.mem.Close()
		}
		if !r.exited {
			unix.Kill(r.pid, unix.SIGKILL)
		}
	}
	t.abortLazy()
	// The ns_last_pid stub is our child through os/exec: kill it, but
	// collect it with the rest (reapAll waits with __WALL). Its exit is
	// reported only once its traced threads are reaped, so waiting for it
	// alone first (exec.Cmd.Wait) would never return.
	if t.stub != nil && t.stub.helper != nil && t.stub.helper.Process != nil {
		t.stub.helper.Process.Kill()
	}
	reapAll(2 * time.Second)
	if t.stub != nil && t.stub.helper != nil && t.stub.helper.Process != nil {
		t.stub.helper.Process.Release()
	}
	t.opener.Finish()
}

// unlockNetwork removes the dump's network lock once the connections are
// back (Restore removes it after a failure too).
func (t *tree) unlockNetwork() error {
	if t.inv.NetLock == "" {
		return nil
	}
	if err := netlock.Unlock(t.inv.NetLock); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// reapAll collects every exit reported to us, tracer or parent, until none
// is left (a traced leader is reported only after all its traced threads,
// including any created by a clone that went wrong), for at most d.
func reapAll(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // ECHILD: nothing left
		}
		if pid == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// inImage reports whether pid is a process of the image.
func (t *tree) inImage(pid int32) bool {
	for _, p := range t.procs {
		if p.pst.Pid == pid {
			return true
		}
	}
	return false
}

// sessionHelped reports whether r was created in its session by a helper.
func (t *tree) sessionHelped(r *restorer) bool {
	pe := r.pr.pst
	return pe.Sid != pe.Pid && !t.inImage(pe.Sid)
}

// sessionMember finds a task already created in session sid whose parent is
// parent, to fork another member of that session from.
func (t *tree) sessionMember(sid int32, parent *restorer) *restorer {
	for _, r := range t.tasks {
		if r.pr.pst.Sid == sid && r.parent == parent && r.pr.core != nil && !r.exited {
			return r
		}
	}
	return nil
}

// clonePid injects the clone3 whose clone_args are at args (set_tid
// pointing at want) into thread th. With --pid-method ns_last_pid, set_tid
// is not used: the cursor is rewound around a clone3 without it.
func (t *tree) clonePid(th *thread, args uint64, want int) (int, error) {
	if t.opts.PidMethod != PidNsLastPid || t.pidns {
		return injectClone(th.tid, th.in, args, 88)
	}
	m, err := ptrace.OpenMem(th.tid)
	if err != nil {
		return 0, err
	}
	zero := make([]byte, 16) // set_tid = NULL, set_tid_size = 0
	err = m.WriteAt(zero, args+64)
	m.Close()
	if err != nil {
		return 0, err
	}
	thread := false
	if fl, err := readU64(th.tid, args); err == nil {
		thread = fl&unix.CLONE_THREAD != 0
	}
	for attempt := 0; ; attempt++ {
		var got int
		var cerr error
		err = withLastPid(want, func(putBack func()) {
			got, cerr = injectClone(th.tid, th.in, args, 88)
			putBack()
		})
		if err == nil {
			err = cerr
		}
		if err != nil {
			return 0, err
		}
		if got == want {
			return got, nil
		}
		// Another fork on the host took the pid first. A wrong process
		// is killed and reaped by its parent, then we try again; a wrong
		// thread cannot be undone alone.
		if thread || attempt == 4 {
			return got, fmt.Errorf("ns_last_pid: got %d instead of %d: %w", got, want, errPidRace)
		}
		unix.Kill(got, unix.SIGKILL)
		reap(got)
		if _, err := th.in.Call("wait4(stray child)", unix.SYS_WAIT4, uint64(got), 0, unix.WALL, 0); err != nil {
			return 0, err
		}
		if !waitPidFree(want, time.Second) {
			return 0, fmt.Errorf("pid %d was taken by another task during the restore", want)
		}
	}
}

// readU64 reads a u64 from a tracee's memory.
func readU64(tid int, addr uint64) (uint64, error) {
	m, err := ptrace.OpenMem(tid)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	b := make([]byte, 8)
	if err := m.ReadAt(b, addr); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// groupHelper recreates process group pgid, whose leader is gone, for c: a
// helper task with the leader's pid is forked from c's parent (same
// session), starts the group, c joins it, and the helper exits and is
// reaped by the parent. The group lives on as long as c is in it.
func (t *tree) groupHelper(c *restorer, pgid int32) error {
	parent := c.parent
	if parent == nil || parent.pr.pst.Sid != c.pr.pst.Sid {
		return errors.New("its leader is gone and it cannot be recreated from the parent's session: unsupported")
	}
	ids, join := []int32{pgid}, pgid
	if t.pidns {
		// recreated with its id inside the namespace (and ours)
		if c.pr.pst.NsPgid <= 0 {
			return errors.New("its leader is gone and its id in the pid namespace is not recorded: unsupported")
		}
		ids, join = t.ids(pgid, c.pr.pst.NsPgid), c.pr.pst.NsPgid
	}
	return t.helperTask(parent, ids, "group", func(h *restorer) error {
		if _, err := h.call(0, "setpgid", unix.SYS_SETPGID, 0, 0); err != nil {
			return err
		}
		if _, err := c.call(0, "setpgid", unix.SYS_SETPGID, 0, uint64(join)); err != nil {
			return fmt.Errorf("join: %w", err)
		}
		return nil
	})
}
