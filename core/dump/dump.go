// Package dump checkpoints a running process into an image directory: it
// seizes every thread, collects registers, signals, timers, credentials,
// memory and files, writes the image, and then either kills the process or
// lets it run on untouched. A failed dump leaves the process running exactly
// as before and removes the partial image.
package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/lifecycle"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
	"github.com/ctr-cr/ctr-cr/internal/fault"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
	"github.com/ctr-cr/ctr-cr/internal/timing"
	"github.com/ctr-cr/ctr-cr/internal/version"
)

// Options control a dump.
type Options struct {
	LeaveRunning bool
	GhostLimit   int64 // bytes of a deleted file saved at most; 0 means 1 MiB
	Jobs         int   // processes whose memory is dumped at once; 0: DefaultJobs
	// ShellJob accepts a tree with terminals (a job started from a shell):
	// the terminal is external and replaced on restore by the restorer's.
	ShellJob bool
	// Notify is told where the dump is (lifecycle.Notify: Seized,
	// Releasing); nil: nobody.
	Notify lifecycle.Notify
	// Frozen says the caller froze the tree before Dump (a cgroup
	// freezer): it is seized while frozen, and Notify.Seized, called once
	// every thread has a stop queued, must thaw it (see seizeTreeFrozen).
	Frozen bool
	// StayFrozen holds every task that would run in its ptrace stop as
	// the tree is released (with LeaveRunning, or after a failed dump)
	// until Notify.Releasing returns, so that the caller can freeze the
	// tree again and none runs in between. Every task is detached after.
	StayFrozen bool
	// TCPEstablished dumps TCP connections in repair mode behind a
	// network lock that restore removes (--tcp-established).
	TCPEstablished bool
	// ExtUnixSk accepts unix sockets connected to a peer outside the
	// dumped tree: restore connects them to the peer's name again.
	ExtUnixSk bool
	// ExternalConsole accepts an external console: a pty of the tree's
	// own devpts whose master is outside the dump, the controlling
	// terminal of the root's session; a restore opens the console of the
	// same index in the restored root's devpts in its place, which the
	// restorer's caller made (see files.Options.Console).
	ExternalConsole bool
	// WaitKilled makes Dump (without LeaveRunning) return only once every
	// killed task is gone, its memory freed (~1 ms per 10 MiB here), for
	// a caller that reuses what the tasks held next (removes their
	// cgroup). Otherwise Dump returns once SIGKILL is sent to every task
	// of the tree; the tasks never run again and the kernel frees them in
	// parallel, while ctr-cr exits (a restore waits for their pids).
	WaitKilled bool
	// OwnNamespaces says the caller carries the tree's namespaces (mount,
	// UTS, IPC, user, cgroup, time, pid) itself: a container checkpoint.
	// Without it a tree living in namespaces other than ctr-cr's is
	// refused (a process restore would move it into the restorer's).
	OwnNamespaces bool
	// CarryNamespaces, when set, lets a process dump carry the root's
	// namespaces of the kinds in CarriedKinds that differ from ctr-cr's
	// (a tree under `unshare --ipc`): it is called while the tree is
	// seized with the tree's pids (root first, zombies left out) and those
	// kinds and returns their
	// contents, which the image holds as NamespacesFile (its SHA-256 in the
	// inventory, with the kinds, so that a restore creates them again).
	// Without it such a tree is refused.
	CarryNamespaces func(pids []int, kinds []string) ([]byte, error)
	// NoExtPipes refuses pipes with an end held outside the tree instead
	// of recording them as external (a container checkpoint, whose
	// restore has no --inherit-fd).
	NoExtPipes bool
	// ExtPipes are pipes (by inode) recorded as external even with
	// NoExtPipes (files.Options.ExtPipes).
	ExtPipes map[uint64]bool
	// LayerFiles are files a layer above wrote into dir before the dump
	// (Layer kinds of core/image: a container's spec.dump, ctr-cr.json,
	// tmpfs-N.tar, ...): the inventory lists them with their checksums,
	// so that a restore's validation covers them like the image's own.
	LayerFiles []string
	// Commit, when set, is called once the image is completely written:
	// before the tree is killed, or (LeaveRunning) once it runs again. A
	// container checkpoint syncs its image and moves it into place there,
	// so that nothing is killed before the image is safe on disk. An error
	// fails the dump (the tree is released, running) and must leave the
	// image where it was written.
	Commit func() error
	// FileLocks dumps the file locks the tree holds (flock, POSIX, OFD;
	// --file-locks); without it a tree holding one is refused.
	FileLocks bool
	// SkipInFlight dumps TCP listeners without the connections waiting
	// to be accepted (--skip-in-flight): the restored listener's accept
	// queue is empty; without it such a listener is refused.
	SkipInFlight bool
	// TCPClose records TCP connections without their state, neither
	// locked nor put in repair mode (--tcp-close, which wins over
	// TCPEstablished); the image then needs restore --tcp-close, which
	// gives closed sockets in their place.
	TCPClose bool
	// ParentPath makes the dump the last round of a pre-copy chain: the
	// image of the round before, relative to dir (premig.go). Pages not
	// written since that round are left to it; the tracking ends.
	ParentPath string
	// Warn receives what makes a pre-copy round copy more than it needs.
	Warn func(format string, args ...any)
	// PagesSink, when set, takes the pages files (a page server's
	// streams, image.Writer.SetPagesSink); the parent chain's pages are
	// then elsewhere too. Commit should confirm them.
	PagesSink func(name string) (io.WriteCloser, error)
	// PagesDone, when set, is called (on a goroutine of its own) once the
	// pages are written, while the tree is still held: the page server
	// confirms them. The rest of the image is written and synced
	// meanwhile; the image is marked good (its inventory), and anything
	// destructive done to the tree, only once it returned nil, else the
	// dump fails and the tree runs on.
	PagesDone func() error
}

// Stats reports where a dump spent its time, for --print-stats.
type Stats struct {
	FreezingMs       float64 `json:"freezing_ms"`
	FrozenMs         float64 `json:"frozen_ms"`
	CollectMs        float64 `json:"collect_ms"`
	ProcMs           float64 `json:"proc_ms"` // fds, mappings, terminals, checks
	MemdumpMs        float64 `json:"memdump_ms"`
	WriteMs          float64 `json:"write_ms"`
	ReleaseMs        float64 `json:"release_ms"` // killing (and reaping) or releasing the tree
	TotalMs          float64 `json:"total_ms"`
	PagesScanned     uint64  `json:"pages_scanned"`
	PagesWritten     uint64  `json:"pages_written"`
	PagesZero        uint64  `json:"pages_zero"`
	PagesFromParent  uint64  `json:"pages_from_parent,omitempty"` // left to the parent image (pre-copy)
	PagesDirty       uint64  `json:"pages_dirty,omitempty"`       // tracked pages written since the parent round
	InjectedSyscalls int     `json:"injected_syscalls"`
	Threads          int     `json:"threads"`
	Processes        int     `json:"processes"`
}

// Dump checkpoints process pid and all its descendants into dir. The calling
// goroutine must be locked to its OS thread (ptrace requests come from the
// attaching thread). When ctx is cancelled (e.g. on SIGINT) before the image
// is complete, the dump stops, the processes are released untouched and the
// partial image removed.
func Dump(ctx context.Context, pid int, dir string, opts Options) (st *Stats, err error) {
	// The image schema registers with the protobuf runtime on first use
	// (~3 ms, internal/protolazy): do that on another CPU while the tree
	// is seized and read, not when the frozen tree's image is written.
	go imagepb.Init()
	if opts.GhostLimit == 0 {
		opts.GhostLimit = 1 << 20
	}
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultJobs()
	}
	st = &Stats{}
	t0 := time.Now()
	status, err := procfs.ReadStatus(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: no such process: %w", pid, err)
	}
	pm, err := openParent(dir, opts)
	if err != nil {
		return nil, err
	}
	defer pm.finish(&err)
	// the scans of the tracked mappings start as the tree is frozen
	// (premigspec.go): their guess is read now
	pm.speculate()
	tSeize := time.Now() // after the parent chain's validation
	if status.Tgid != pid {
		return nil, fmt.Errorf("pid %d is a thread of process %d: dump the process", pid, status.Tgid)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("pid %d is ctr-cr itself", pid)
	}
	// One tracer thread per job: processes are seized, questioned and
	// released by their tracer, in parallel with the others.
	tracers := make([]*ptrace.Tracer, opts.Jobs)
	for i := range tracers {
		tracers[i] = ptrace.NewTracer()
	}
	defer func() {
		for _, tr := range tracers {
			tr.Stop()
		}
	}()
	var tasks []*task
	ft := files.NewTable()
	// the /proc/locks read after the freeze is short when the kernel's
	// lock listing is warm (files.WarmLocks)
	ft.WarmLocks()
	defer ft.StopWarmLocks()
	notify := lifecycle.Or(opts.Notify)
	if opts.Frozen {
		// frozen by the caller already: its locks cannot change
		ft.PrefetchLocks()
		tasks, err = seizeTreeFrozen(pid, tracers, func() error { return notify.Seized(pid) })
	} else {
		tasks, err = seizeTree(pid, tracers)
	}
	if err != nil {
		return nil, fmt.Errorf("seize: %w", err)
	}
	fault.Point("dump:seized")
	tFrozen := time.Now()
	traceStart()
	st.FreezingMs = ms(tFrozen.Sub(tSeize))
	for _, t := range tasks {
		if t.p != nil {
			st.Threads += len(t.p.Threads)
			st.Processes++
		}
	}
	d := &dumper{ctx: ctx, root: pid, tasks: tasks, opts: opts, notify: notify, st: st, files: ft, pm: pm}
	if !opts.Frozen {
		// the tree holds still now: /proc/locks is read while the rest is
		ft.PrefetchLocks()
		if err := notify.Seized(pid); err != nil {
			return nil, errors.Join(fmt.Errorf("seize: %w", err), d.release())
		}
	}
	if err := d.checkNamespaces(); err != nil {
		d.release()
		return nil, err
	}
	trace("checkNamespaces")
	// Sockets are looked up (sock_diag) and locked in the tree's network
	// namespace, from this thread.
	back, err := threadns.EnterNetns(pid)
	if err != nil {
		d.release()
		return nil, err
	}
	defer func() {
		if berr := back(); berr != nil && err == nil {
			err = berr
		}
	}()
	w, err := image.Create(dir)
	if err != nil {
		d.release()
		return nil, err
	}
	d.w = w
	trace("netns, image.Create")
	if err := listLayerFiles(w, opts.LayerFiles); err != nil {
		w.Abort()
		d.release()
		return nil, err
	}
	if opts.PagesSink != nil {
		w.SetPagesSink(opts.PagesSink)
	}
	return conclude(d, opts, st, t0, tFrozen)
}

var ms = timing.Ms // the one definition: internal/timing

// listLayerFiles lists the layer files names in the image w writes
// (Options.LayerFiles).
func listLayerFiles(w *image.Writer, names []string) error {
	for _, n := range names {
		if err := w.ListLayerFile(n); err != nil {
			return err
		}
	}
	return nil
}

type dumper struct {
	mu    sync.Mutex // guards st across collecting goroutines
	ctx   context.Context
	root  int
	tasks []*task // parents before children; tasks[0] is the root
	w     *image.Writer
	opts  Options
	// notify is opts.Notify, or lifecycle.Base
	notify lifecycle.Notify
	st     *Stats
	files  *files.Table
	// netLock is the nftables table locking the dumped connections ("":
	// none).
	netLock string
	plan    *imagePlan // the pstree, planned while the tree is seized
	pm      *premig    // pre-copy chain (premig.go); nil without --parent-path
	// pagesDone is opts.PagesDone running (nil without it): waited for
	// before the image is marked good or anything destructive is done.
	pagesDone *confirm
	// namespaces are the root's namespaces the image carries
	// (CarryNamespaces).
	namespaces []string
	nsData     []byte
}

// release undoes the seize of every process: injection area,
// stolen signals, registers, masks; then detaches.
func (d *dumper) release() error {
	var errs []error
	var later []*task // with StayFrozen: detached once Releasing returns
	if err := d.files.EndRepair(); err != nil {
		errs = append(errs, err)
	}
	if err := d.files.PutBackPtys(); err != nil {
		errs = append(errs, err)
	}
	d.files.Close()
	if d.netLock != "" {
		if err := netlock.Unlock(d.netLock); err != nil {
			errs = append(errs, err)
		}
		d.netLock = ""
	}
	// children first: a stopped child is back in its group stop before its
	// parent, still seized, is settled (settleStoppedChildren)
	for i := len(d.tasks) - 1; i >= 0; i-- {
		t := d.tasks[i]
		if t.p == nil {
			continue
		}
		t.tr.Do(func() {
			if t.remote != nil {
				if err := t.remote.RequeueStolen(); err != nil {
					errs = append(errs, err)
				}
				if err := t.remote.Close(); err != nil {
					errs = append(errs, err)
				}
				t.remote = nil
			}
		})
		if err := d.settleStoppedChildren(t); err != nil {
			errs = append(errs, fmt.Errorf("pid %d: %w", t.pid, err))
		}
		if d.opts.StayFrozen && !t.groupStopped {
			// it would run once detached: after the freeze (a group
			// stopped one stays stopped; its parent's settling needs it
			// detached first)
			later = append(later, t)
			continue
		}
		t.tr.Do(func() {
			if err := t.p.Release(); err != nil {
				errs = append(errs, err)
			}
		})
	}
	if err := d.notify.Releasing(d.root); err != nil {
		errs = append(errs, err)
	}
	for _, t := range later {
		t.tr.Do(func() {
			if err := t.p.Release(); err != nil {
				errs = append(errs, err)
			}
		})
	}
	return errors.Join(errs...)
}

// kill ends every dumped process once the image is complete.
func (d *dumper) kill() error {
	var errs []error
	if err := d.files.RepairForKill(); err != nil {
		errs = append(errs, err)
	}
	d.files.Close()
	for _, t := range d.tasks {
		if t.p != nil {
			if err := unix.Kill(t.pid, unix.SIGKILL); err != nil {
				errs = append(errs, fmt.Errorf("kill pid %d: %w", t.pid, err))
			}
		}
	}
	if !d.opts.WaitKilled {
		// The tracer threads end when Dump returns, which detaches the
		// dying tasks for their parents to reap.
		return errors.Join(errs...)
	}
	// Collect the exits children first: a dying pid namespace init waits
	// until its (traced) children are gone.
	for i := len(d.tasks) - 1; i >= 0; i-- {
		t := d.tasks[i]
		if t.p != nil {
			t.tr.Do(func() {
				if err := t.p.Kill(); err != nil {
					errs = append(errs, err)
				}
			})
		}
	}
	return errors.Join(errs...)
}

func (d *dumper) run() error {
	if err := d.refuseSharedMm(); err != nil {
		return err
	}
	fopts := files.Options{GhostLimit: d.opts.GhostLimit, ShellJob: d.opts.ShellJob, ExtUnixSk: d.opts.ExtUnixSk, LeaveRunning: d.opts.LeaveRunning, Console: d.opts.ExternalConsole, NoExtPipes: d.opts.NoExtPipes, ExtPipes: d.opts.ExtPipes, FileLocks: d.opts.FileLocks, SkipInFlight: d.opts.SkipInFlight, TCPClose: d.opts.TCPClose}
	if d.opts.TCPEstablished && !d.opts.TCPClose {
		// the tree holds still (seized): its connections are locked
		// before anything is injected into it
		locked, err := d.lockConnections()
		if err != nil {
			return fmt.Errorf("network lock: %w", err)
		}
		fopts.TCPLocked = locked
		fault.Point("dump:netlocked")
	}
	tc := time.Now()
	// the fd tables and mappings are read as the processes are collected
	fdTables, err := d.collectAll(fopts)
	if err != nil {
		return err
	}
	if err := d.interrupted(); err != nil {
		return err
	}
	d.st.CollectMs = ms(time.Since(tc))
	trace("collectAll")
	// collectAll started each process's scans after its injections
	// (whose ptrace round trips a busy CPU delays), alongside its smaps
	// read; any left start now
	d.pm.startScans()
	tp := time.Now()
	if err := d.dumpPtys(fopts); err != nil {
		return err
	}
	if err := d.files.Check(fdTables); err != nil {
		return err
	}
	if err := d.files.ResolveEpoll(); err != nil {
		return err
	}
	if err := d.files.CheckSockets(fopts); err != nil {
		return err
	}
	if err := d.files.CheckPidfds(func(pid int32) bool {
		for _, t := range d.tasks {
			if int32(t.pid) == pid && !t.zombie {
				return true
			}
		}
		return false
	}); err != nil {
		return err
	}
	if err := d.files.CheckOwners(d.ownerInDump); err != nil {
		return err
	}
	tm := time.Now()
	d.st.ProcMs = ms(tm.Sub(tp))
	trace("fd checks")
	fault.Point("dump:fds") // TCP connections in repair mode
	if err := d.dumpPages(); err != nil {
		return err
	}
	// the page server's confirmation (its sync of the pages) is waited
	// for once nothing else is left but marking the image good, or before
	// anything destructive
	d.pagesDone = startConfirm(d.opts.PagesDone)
	fault.Point("dump:pages") // pages files written, the rest not
	trace("pages done (confirmation goes on)")
	d.st.MemdumpMs = ms(time.Since(tm))
	// after the pages: the /proc/locks read it needs (PrefetchLocks) has
	// had the page copy's time to come back
	if err := d.files.CheckLocks(func(pid int) bool {
		for _, t := range d.tasks {
			if t.pid == pid && !t.zombie {
				return true
			}
		}
		return false
	}, fopts); err != nil {
		return err
	}
	if err := d.interrupted(); err != nil {
		return err
	}
	if d.opts.LeaveRunning || d.files.HasUnixEmbryos() {
		if err := d.pagesDone.wait(); err != nil {
			return err
		}
	}
	if !d.opts.LeaveRunning {
		// Destructive (unaccepted connections are taken from the target
		// to read their data), so done last; the target is killed next.
		if err := d.files.CaptureUnixEmbryos(); err != nil {
			return err
		}
	}
	trace("CheckLocks, embryos")
	// what still needs the seized tree (kcmp of its fd tables and fs)
	d.plan = d.planImage()
	if d.opts.LeaveRunning {
		return nil // Dump writes the image once the tree runs again
	}
	return d.write()
}

// write writes the image planned by planImage, timed as the write phase.
func (d *dumper) write() error {
	tw := time.Now()
	err := d.writeImage(d.plan)
	d.st.WriteMs = ms(time.Since(tw))
	return err
}

// dumpPtys reads the state of the pseudo-terminal pairs of the dump and
// checks every controlling terminal: a pty of the dump, the terminal of
// the session it belongs to, or (--shell-job) the job's outside terminal.
func (d *dumper) dumpPtys(fopts files.Options) error {
	live := map[int]bool{}
	for _, t := range d.tasks {
		if !t.zombie {
			live[t.pid] = true
		}
	}
	if err := d.files.DumpPtys(fopts, func(pid int) bool { return live[pid] }); err != nil {
		return err
	}
	for _, t := range d.tasks {
		if t.zombie || t.stat.TtyNr == 0 {
			continue
		}
		if idx, ok := files.PtySlaveIndex(uint64(t.stat.TtyNr)); ok {
			if sid, in := d.files.PtySession(idx); in {
				if sid != int32(t.stat.Session) {
					return fmt.Errorf("pid %d: its controlling terminal /dev/pts/%d is the terminal of session %d, not of its session %d", t.pid, idx, sid, t.stat.Session)
				}
				continue
			}
			// a container's console (tty_nr does not tell the devpts
			// instance: the console is the one the dump has)
			if in, err := d.files.ConsoleSession(idx, int32(t.stat.Session), int32(max(t.stat.Tpgid, 0))); err != nil {
				return fmt.Errorf("pid %d: %w", t.pid, err)
			} else if in {
				if !live[t.stat.Session] {
					return fmt.Errorf("pid %d: its controlling terminal, the console /dev/pts/%d, is the terminal of session %d, whose leader is not in the dump", t.pid, idx, t.stat.Session)
				}
				continue
			}
		}
		if !d.opts.ShellJob {
			return fmt.Errorf("pid %d: it has a controlling terminal (tty_nr %#x) that is not a pty of the dump: dump with --shell-job to restore the job onto the restorer's terminal", t.pid, t.stat.TtyNr)
		}
	}
	return nil
}

// interrupted reports a cancelled dump as an error.
func (d *dumper) interrupted() error {
	if err := d.ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	return nil
}

// collectCore gathers the registers, signals, timers and credentials of
// process t, by ptrace and by syscalls injected into it.
func (d *dumper) collectCore(t *task) error {
	var err error
	if t.remote, err = ptrace.NewRemote(t.p); err != nil {
		return fmt.Errorf("prepare injection: %w", explainNoMapping(t.pid, err))
	}
	pid := t.pid
	st := t.status
	if err := dropOwnSigcont(t); err != nil {
		return err
	}
	if err := d.dropOwnSigchld(t); err != nil {
		return err
	}
	c := &imagepb.TaskCore{Pid: int32(pid), Comm: st.Name, Umask: st.Umask, ExitSignal: int32(t.stat.ExitSignal), SeccompMode: int32(st.Seccomp)}
	if c.Personality, err = procfs.Personality(pid); err != nil {
		return err
	}
	if c.Cwd, err = procfs.Cwd(pid); err != nil {
		return err
	}
	if c.Root, err = procfs.Root(pid); err != nil {
		return err
	}
	if strings.HasSuffix(c.Cwd, " (deleted)") {
		if c.CwdGhost, err = files.StatGhostDir(pid, "cwd"); err != nil {
			return fmt.Errorf("deleted cwd %s: %w", c.Cwd, err)
		}
	}
	if strings.HasSuffix(c.Root, " (deleted)") {
		if c.RootGhost, err = files.StatGhostDir(pid, "root"); err != nil {
			return fmt.Errorf("deleted root %s: %w", c.Root, err)
		}
	}
	limits, err := procfs.ReadLimits(pid)
	if err != nil {
		return err
	}
	for _, l := range limits {
		c.Rlimits = append(c.Rlimits, &imagepb.Rlimit{Resource: uint32(l.Resource), Cur: l.Cur, Max: l.Max})
	}
	shared, err := ptrace.PeekSiginfo(pid, true)
	if err != nil {
		return err
	}
	for _, s := range shared {
		c.SharedPending = append(c.SharedPending, &imagepb.Siginfo{Raw: s})
	}
	r := t.remote
	ans, err := collectTask(r, c)
	if err != nil {
		return err
	}
	t.brk = ans.brk
	if err := collectTimers(r, pid, c); err != nil {
		return err
	}
	if err := collectProcAttrs(r, pid, c, ans.membarrier); err != nil {
		return err
	}
	if c.MlockFuture, err = probeMlockFuture(r, pid); err != nil {
		return fmt.Errorf("mlockall flags: %w", err)
	}
	for i, th := range t.p.Threads {
		var pre *threadAnswers
		if i == 0 {
			pre = &ans.thread0 // read in collectTask's batch
		}
		tc, err := collectThread(r, pid, i, th, pre)
		if err != nil {
			return fmt.Errorf("tid %d: %w", th.Tid, err)
		}
		c.Threads = append(c.Threads, tc)
	}
	t.core = c
	// Signals taken out of the queues while seizing are in the image as
	// pending: put them back in the queues now, so the process holds them
	// whether it is released or killed.
	if err := r.RequeueStolen(); err != nil {
		return err
	}
	// Unmap the injection area before memory is read.
	d.mu.Lock()
	d.st.InjectedSyscalls += r.Calls()
	d.mu.Unlock()
	err = r.Close()
	t.remote = nil
	return err
}

// imagePlan is what the image needs from the live tree: its pstree
// entries (with the fd-table and fs sharing found by kcmp).
type imagePlan struct {
	tree    []*imagepb.PstreeEntry
	netLock string // as when the tree was captured (release drops d.netLock)
}

// planImage builds the pstree entries while the tree is still seized.
func (d *dumper) planImage() *imagePlan {
	fileIDs := sharedIDs(d.tasks, kcmpFiles)
	fsIDs := sharedIDs(d.tasks, kcmpFs)
	var tree []*imagepb.PstreeEntry
	for _, t := range d.tasks {
		pe := &imagepb.PstreeEntry{Pid: int32(t.pid), Ppid: int32(t.ppid), Pgid: int32(t.stat.Pgrp), Sid: int32(t.stat.Session)}
		if t.zombie {
			pe.Zombie, pe.ExitStatus = true, int32(t.stat.ExitCode)
			pe.Threads = []int32{int32(t.pid)}
			tree = append(tree, pe)
			continue
		}
		for _, ns := range t.status.NSpid {
			pe.NsPid = append(pe.NsPid, int32(ns))
		}
		if n := len(t.status.NSsid); n > 1 {
			pe.NsSid = int32(t.status.NSsid[n-1])
		}
		if n := len(t.status.NSpgid); n > 1 {
			pe.NsPgid = int32(t.status.NSpgid[n-1])
		}
		for _, th := range t.p.Threads {
			pe.Threads = append(pe.Threads, int32(th.Tid))
		}
		if t.p.Threads[0].Stopped {
			pe.Stopped, pe.StopSignal = true, int32(t.p.Threads[0].StopSig)
			pe.StopReportTaken = t.stopReportTaken
		}
		pe.FilesId, pe.FsId = fileIDs[t.pid], fsIDs[t.pid]
		tree = append(tree, pe)
	}
	return &imagePlan{tree: tree, netLock: d.netLock}
}

// writeImage writes every file of the image but the pages (written by
// dumpPages) from what was captured; it does not touch the tree, which may
// run again already (--leave-running).
func (d *dumper) writeImage(plan *imagePlan) error {
	for _, t := range d.tasks {
		if t.zombie {
			continue
		}
		if err := d.w.WriteCore(t.pid, t.core); err != nil {
			return err
		}
		if err := d.w.WriteMm(t.pid, t.mm); err != nil {
			return err
		}
		if err := d.w.WriteFdinfo(t.pid, t.fds); err != nil {
			return err
		}
	}
	if err := d.w.WritePstree(plan.tree); err != nil {
		return err
	}
	if err := d.w.WriteFiles(d.files.Files); err != nil {
		return err
	}
	fault.Point("dump:writing") // all but the inventory written
	trace("image files written")
	root := d.tasks[0]
	var nsSum []byte
	if d.nsData != nil {
		sum, err := d.w.WriteSide(NamespacesFile, d.nsData)
		if err != nil {
			return err
		}
		nsSum = sum
	}
	inv := &imagepb.Inventory{
		FormatVersion: image.FormatVersion, ToolVersion: version.Version, Kernel: kernelRelease(),
		Arch: runtime.GOARCH, RootPid: int32(d.root), CreatedUnixNano: time.Now().UnixNano(),
		RootPidNs:  len(root.status.NSpid) > 1 && root.status.NSpid[len(root.status.NSpid)-1] == 1,
		NetLock:    plan.netLock,
		TcpClose:   d.opts.TCPClose,
		Namespaces: d.namespaces, NamespacesSum: nsSum,
	}
	d.pm.inventory(inv)
	if len(root.core.Threads) > 0 {
		if f, size, ok := ptrace.XStateFeatures(root.core.Threads[0].Xsave); ok {
			inv.XsaveFeatures, inv.XsaveSize = f, size
		}
	}
	return d.w.FinishAfter(inv, d.pagesDone.wait)
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
