package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// restoreProcessState sets the per-process state that does not depend on
// credentials: cwd and root, rlimits, personality, umask, subreaper, THP,
// itimers and POSIX timers (after the threads, which timers may target).
func (r *restorer) restoreProcessState() error {
	c := r.pr.core
	root, cwd, err := r.fsPaths(c)
	if err != nil {
		return err
	}
	b := r.batch(0)
	// the paths are both from the dumper's root: cwd first, then root
	// (a chroot'ed task's cwd may even lie outside its root)
	if cwd != "" {
		b.add("chdir "+cwd, unix.SYS_CHDIR, b.arg(cstr(cwd)))
	}
	if root != "" && root != "/" {
		b.add("chroot "+root, unix.SYS_CHROOT, b.arg(cstr(root)))
	}
	for _, l := range c.Rlimits {
		if l.Resource > 15 {
			return fmt.Errorf("rlimit: unknown resource %d", l.Resource)
		}
		lim := make([]byte, 16)
		u64(lim, 0, l.Cur)
		u64(lim, 8, l.Max)
		b.add(fmt.Sprintf("prlimit64(resource %d, %d/%d)", l.Resource, l.Cur, l.Max), unix.SYS_PRLIMIT64, 0, uint64(l.Resource), b.arg(lim), 0)
	}
	b.add("personality", unix.SYS_PERSONALITY, uint64(c.Personality))
	b.add("umask", unix.SYS_UMASK, uint64(c.Umask))
	if c.ChildSubreaper {
		b.add("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, prSetChildSubreaper, 1)
	}
	if c.ThpDisable != 0 {
		b.add("prctl(PR_SET_THP_DISABLE)", unix.SYS_PRCTL, prSetThpDisable, 1, 0, 0, 0)
	}
	for _, it := range c.Itimers {
		if it.Which > 2 {
			return fmt.Errorf("itimer %d", it.Which)
		}
		tv := make([]byte, 32)
		u64(tv, 0, uint64(it.IntervalUs/1e6))
		u64(tv, 8, uint64(it.IntervalUs%1e6))
		v := itimerValueUs(it.Which, it.ValueUs)
		u64(tv, 16, uint64(v/1e6))
		u64(tv, 24, uint64(v%1e6))
		b.add("setitimer", unix.SYS_SETITIMER, uint64(it.Which), b.arg(tv), 0)
	}
	if _, err := b.run(); err != nil {
		if errors.Is(err, unix.EPERM) && strings.Contains(err.Error(), "prlimit64") {
			return fmt.Errorf("%w (raising a hard limit needs CAP_SYS_RESOURCE)", err)
		}
		return err
	}
	return r.restorePosixTimers()
}

// restorePosixTimers recreates POSIX timers with their ids: the kernel takes
// the wanted id from the timer_t argument once PR_TIMER_CREATE_RESTORE_IDS
// is on (6.17+); before that, ids are allocated in order, so timers are
// created (and gaps deleted) until ids match.
func (r *restorer) restorePosixTimers() error {
	timers := r.pr.core.PosixTimers
	if len(timers) == 0 {
		return nil
	}
	restoreIds := true
	if _, err := r.call(0, "prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)", unix.SYS_PRCTL, prTimerCreateRestoreIds, 1); err != nil {
		restoreIds = false
	}
	for _, t := range timers {
		sev := make([]byte, 64)
		u64(sev, 0, t.SigevValue)
		binary.LittleEndian.PutUint32(sev[8:], uint32(t.Signo))
		binary.LittleEndian.PutUint32(sev[12:], uint32(t.Notify))
		binary.LittleEndian.PutUint32(sev[16:], uint32(r.notifyTid(t.NotifyTid)))
		sevAddr, err := r.put(0, sev)
		if err != nil {
			return err
		}
		idAddr := r.scratch + 256
		for {
			id := make([]byte, 4)
			binary.LittleEndian.PutUint32(id, uint32(t.Id))
			if _, err := r.put(256, id); err != nil {
				return err
			}
			if _, err := r.call(0, fmt.Sprintf("timer_create(id %d)", t.Id), unix.SYS_TIMER_CREATE, uint64(t.Clock), sevAddr, idAddr); err != nil {
				return err
			}
			got := make([]byte, 4)
			if err := r.mem.ReadAt(got, idAddr); err != nil {
				return err
			}
			gid := int32(binary.LittleEndian.Uint32(got))
			if gid == t.Id {
				break
			}
			if restoreIds || gid > t.Id {
				return fmt.Errorf("timer_create: got id %d, want %d", gid, t.Id)
			}
			// leave the placeholder until all are created? No: ids are
			// not reused before wrap-around, so delete it now.
			if _, err := r.call(0, "timer_delete", unix.SYS_TIMER_DELETE, uint64(gid)); err != nil {
				return err
			}
		}
		its := make([]byte, 32)
		u64(its, 0, uint64(t.IntervalNs/1e9))
		u64(its, 8, uint64(t.IntervalNs%1e9))
		u64(its, 16, uint64(t.ValueNs/1e9))
		u64(its, 24, uint64(t.ValueNs%1e9))
		if t.ValueNs != 0 || t.IntervalNs != 0 {
			if t.ValueNs == 0 {
				u64(its, 24, 1)
			}
			addr, err := r.put(512, its)
			if err != nil {
				return err
			}
			if _, err := r.call(0, "timer_settime", unix.SYS_TIMER_SETTIME, uint64(t.Id), 0, addr, 0); err != nil {
				return err
			}
		}
	}
	if restoreIds {
		if _, err := r.call(0, "prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)", unix.SYS_PRCTL, prTimerCreateRestoreIds, 0); err != nil {
			return err
		}
	}
	return nil
}

// queueSignals puts the pending signals back: the process-wide queue through
// the leader, each thread's own queue through that thread (a task may queue
// any siginfo to itself).
func (r *restorer) queueSignals() error {
	pid := uint64(r.nsPid)
	for _, s := range r.pr.core.SharedPending {
		if isSigtrap(s) {
			continue // queued last (restoreSigtrap)
		}
		if len(s.Raw) != 128 {
			return fmt.Errorf("siginfo of %d bytes", len(s.Raw))
		}
		addr, err := r.put(0, s.Raw)
		if err != nil {
			return err
		}
		sig := uint64(binary.LittleEndian.Uint32(s.Raw))
		if _, err := r.call(0, fmt.Sprintf("rt_sigqueueinfo(%d)", sig), unix.SYS_RT_SIGQUEUEINFO, pid, sig, addr); err != nil {
			return err
		}
	}
	for i, t := range r.threads {
		for _, s := range t.core.Pending {
			if isSigtrap(s) {
				continue // queued last (restoreSigtrap)
			}
			if len(s.Raw) != 128 {
				return fmt.Errorf("siginfo of %d bytes", len(s.Raw))
			}
			addr, err := r.put(0, s.Raw)
			if err != nil {
				return err
			}
			sig := uint64(binary.LittleEndian.Uint32(s.Raw))
			if _, err := r.call(i, fmt.Sprintf("rt_tgsigqueueinfo(%d)", sig), unix.SYS_RT_TGSIGQUEUEINFO, pid, uint64(t.nsTid), sig, addr); err != nil {
				return err
			}
		}
	}
	return nil
}

// addCreds queues the calls that give thread i its credentials.
func (r *restorer) addCreds(b *callBatch, i int) error {
	tc := r.threads[i].core
	cr := tc.Creds
	if cr == nil {
		return errors.New("creds: none in the image") // load refuses such an image first
	}
	if len(cr.Uids) != 4 || len(cr.Gids) != 4 {
		return fmt.Errorf("creds: %d uids, %d gids", len(cr.Uids), len(cr.Gids))
	}
	if len(cr.Groups) > 65536 {
		return fmt.Errorf("creds: %d groups", len(cr.Groups))
	}
	last := lastCap()
	if last < 0 {
		return fmt.Errorf("creds: /proc/sys/kernel/cap_last_cap unreadable: the bounding set cannot be restored")
	}
	g := make([]byte, 4*len(cr.Groups)+4)
	for k, v := range cr.Groups {
		binary.LittleEndian.PutUint32(g[4*k:], v)
	}
	b.add("setgroups", unix.SYS_SETGROUPS, uint64(len(cr.Groups)), b.arg(g))
	// bounding set while CAP_SETPCAP is still ours (capabilities beyond
	// this kernel's last are not there to drop)
	for c := uint64(0); c <= uint64(last); c++ {
		if cr.CapBnd&(1<<c) == 0 {
			b.add(fmt.Sprintf("prctl(PR_CAPBSET_DROP, %d)", c), unix.SYS_PRCTL, prCapbsetDrop, c)
		}
	}
	b.add("prctl(PR_SET_SECUREBITS)", unix.SYS_PRCTL, prSetSecurebits, uint64(cr.Securebits|secbitKeepCaps))
	b.add("setresgid", unix.SYS_SETRESGID, uint64(cr.Gids[0]), uint64(cr.Gids[1]), uint64(cr.Gids[2]))
	b.add("setfsgid", unix.SYS_SETFSGID, uint64(cr.Gids[3]))
	b.add("setresuid", unix.SYS_SETRESUID, uint64(cr.Uids[0]), uint64(cr.Uids[1]), uint64(cr.Uids[2]))
	b.add("setfsuid", unix.SYS_SETFSUID, uint64(cr.Uids[3]))
	// capset: header {version 3, pid 0}, data[2] {eff, prm, inh}
	cb := make([]byte, 8+24)
	binary.LittleEndian.PutUint32(cb[0:], 0x20080522)
	binary.LittleEndian.PutUint32(cb[8:], uint32(cr.CapEff))
	binary.LittleEndian.PutUint32(cb[12:], uint32(cr.CapPrm))
	binary.LittleEndian.PutUint32(cb[16:], uint32(cr.CapInh))
	binary.LittleEndian.PutUint32(cb[20:], uint32(cr.CapEff>>32))
	binary.LittleEndian.PutUint32(cb[24:], uint32(cr.CapPrm>>32))
	binary.LittleEndian.PutUint32(cb[28:], uint32(cr.CapInh>>32))
	addr := b.arg(cb)
	b.add("capset", unix.SYS_CAPSET, addr, addr+8)
	for c := uint64(0); c < 64; c++ {
		if cr.CapAmb&(1<<c) != 0 {
			b.add(fmt.Sprintf("prctl(PR_CAP_AMBIENT_RAISE, %d)", c), unix.SYS_PRCTL, prCapAmbient, prCapAmbientRaise, c, 0, 0)
		}
	}
	if cr.Securebits&secbitKeepCaps == 0 {
		b.add("prctl(PR_SET_KEEPCAPS, 0)", unix.SYS_PRCTL, prSetKeepcaps, 0)
	}
	if cr.NoNewPrivs {
		b.add("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, prSetNoNewPrivs, 1, 0, 0, 0)
	}
	return nil
}

// restoreThreadCreds gives thread i what it owns (addThreadState) and then
// its credentials (addCreds), in one batch: one round trip a thread
// instead of two. The thread state has no part in the steps between them
// that it used to precede (pending signals, memory locks, seccomp): the
// injected calls are not filtered (PTRACE_O_SUSPEND_SECCOMP).
//
// The leader goes last, its batch ending with addDumpable, which must
// follow every thread's credential change: one round trip less a task.
func (r *restorer) restoreThreadCreds(i int) error {
	b := r.batch(i)
	r.addThreadState(b, i)
	if err := r.addCreds(b, i); err != nil {
		return err
	}
	if i == 0 {
		r.addDumpable(b)
	}
	_, err := b.run()
	return err
}

// restoreAllThreadCreds runs restoreThreadCreds for every thread, the
// leader last.
func (r *restorer) restoreAllThreadCreds() error {
	for k := range r.threads {
		i := (k + 1) % len(r.threads) // 1, 2, ..., 0
		if err := r.restoreThreadCreds(i); err != nil {
			return fmt.Errorf("tid %d: state and creds: %w", r.threads[i].tid, err)
		}
	}
	return nil
}

// addDumpable queues the calls that set the dumpable flag and parent-death signal, which any
// thread's credential change resets: after all threads have their creds.
func (r *restorer) addDumpable(b *callBatch) {
	c := r.pr.core
	b.add("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, prSetDumpable, uint64(c.Dumpable))
	if c.PdeathSig != 0 && r.parent == nil && r.tree.opts.Detach && !r.tree.opts.Sibling {
		// The root's parent is now ctr-cr, which exits at once with -d:
		// the signal would fire right away.
		r.tree.warnings = append(r.tree.warnings, fmt.Sprintf("pid %d: parent-death signal %d not restored (its parent is gone with a detached restore)", r.pr.pst.Pid, c.PdeathSig))
	} else if c.PdeathSig != 0 {
		b.add("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, prSetPdeathsig, uint64(c.PdeathSig))
	}
}

// notifyTid maps a thread id of the dump to the restored namespace.
func (r *restorer) notifyTid(tid int32) int32 {
	for _, th := range r.pr.core.Threads {
		if th.Tid == tid {
			return r.tree.vtid(th)
		}
	}
	return tid
}
