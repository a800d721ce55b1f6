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
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
	"github.com/ctr-cr/ctr-cr/internal/version"
)

// PreDumpOptions control a pre-dump round.
type PreDumpOptions struct {
	// ParentPath is the image of the round before, relative to the new
	// image's directory ("": a first round).
	ParentPath string
	Jobs       int // processes whose memory is copied at once; 0: DefaultJobs
	// Warn receives what makes the round copy more than it needs (no
	// tracking, tracking lost); nil: discarded.
	Warn func(format string, args ...any)
	// PagesSink and Commit: as in Options (a page server). Commit is
	// called before the image's inventory is written.
	PagesSink func(name string) (io.WriteCloser, error)
	Commit    func() error
	// LayerFiles: as in Options (a container's ctr-cr-predump.json).
	LayerFiles []string
}

// PreDump is a pre-copy round (issue 16): the tree is frozen only to list
// its mappings and (re)arm the dirty tracking, then runs on while its
// memory is copied into dir. The image (pstree, mm and pages only; with a
// parent, only the pages written since the parent round, the rest listed
// in parentmap-<pid>.img) is the parent of the next round; the final
// `dump --parent-path` makes the restorable image. The tracking stays
// armed, held by a holder process named in the image (tracker.go).
func PreDump(ctx context.Context, pid int, dir string, opts PreDumpOptions) (st *Stats, err error) {
	go imagepb.Init()
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultJobs()
	}
	warn := opts.Warn
	if warn == nil {
		warn = func(string, ...any) {}
	}
	st = &Stats{}
	t0 := time.Now()
	status, err := procfs.ReadStatus(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: no such process: %w", pid, err)
	}
	if status.Tgid != pid || pid == os.Getpid() {
		return nil, fmt.Errorf("pid %d: not a process that can be dumped", pid)
	}
	pm, err := openPremig(dir, opts.ParentPath, warn, opts.PagesSink != nil)
	if err != nil {
		return nil, err
	}
	defer pm.close()
	tracers := make([]*ptrace.Tracer, opts.Jobs)
	for i := range tracers {
		tracers[i] = ptrace.NewTracer()
	}
	defer func() {
		for _, tr := range tracers {
			tr.Stop()
		}
	}()
	tasks, err := seizeTree(pid, tracers)
	if err != nil {
		return nil, fmt.Errorf("seize: %w", err)
	}
	tFrozen := time.Now()
	st.FreezingMs = ms(tFrozen.Sub(t0))
	for _, t := range tasks {
		if t.p != nil {
			st.Threads += len(t.p.Threads)
			st.Processes++
		}
	}
	var pids []int
	for _, t := range tasks {
		if !t.zombie {
			pids = append(pids, t.pid)
		}
	}
	orphans := adoptOrphans(pids, pm.tracked)
	d := &dumper{ctx: ctx, root: pid, tasks: tasks, opts: Options{Jobs: opts.Jobs}, notify: lifecycle.Base{}, st: st, files: files.NewTable(), pm: pm}
	// From here on the tracking is re-armed: what it says is relative to
	// this round, no longer to the parent's. A round that fails ends it
	// (the next round from the parent then copies everything) rather
	// than let a retry from the parent miss what was written before.
	defer func() {
		if err != nil {
			pm.close()
			endHolder(pm.rec)
			for _, rec := range orphans {
				endHolder(rec)
			}
		}
	}()
	tree, err := d.armAll(warn)
	if rerr := d.release(); err == nil && rerr != nil {
		err = rerr
	}
	st.FrozenMs = ms(time.Since(tFrozen))
	if err != nil {
		return nil, err
	}
	// the tree runs again: copy its memory
	w, err := image.Create(dir)
	if err != nil {
		return nil, err
	}
	d.w = w
	if err := listLayerFiles(w, opts.LayerFiles); err != nil {
		w.Abort()
		return nil, err
	}
	if opts.PagesSink != nil {
		w.SetPagesSink(opts.PagesSink)
	}
	tm := time.Now()
	rec, err := d.writePreDump(tree, opts.Commit)
	st.MemdumpMs = ms(time.Since(tm))
	if err != nil {
		w.Abort()
		if rec != nil {
			endHolder(rec)
		}
		return nil, err
	}
	// the new holder has the tracking now: the old one can go
	if pm.rec != nil {
		endHolder(pm.rec)
	}
	for _, rec := range orphans {
		endHolder(rec)
	}
	st.PagesFromParent, st.PagesDirty = pm.stats.fromParent, pm.stats.dirty
	st.TotalMs = ms(time.Since(t0))
	return st, nil
}

// armAll lists the mappings of every process of the frozen tree and arms
// (first round, or a process new since) or reads and re-arms its dirty
// tracking. It returns the pstree entries.
func (d *dumper) armAll(warn func(string, ...any)) ([]*imagepb.PstreeEntry, error) {
	var tree []*imagepb.PstreeEntry
	var wg sync.WaitGroup
	errs := make([]error, len(d.tasks))
	for i, t := range d.tasks {
		pe := &imagepb.PstreeEntry{Pid: int32(t.pid), Ppid: int32(t.ppid)}
		if t.zombie {
			pe.Zombie = true
			tree = append(tree, pe)
			continue
		}
		for _, th := range t.p.Threads {
			pe.Threads = append(pe.Threads, int32(th.Tid))
		}
		tree = append(tree, pe)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.tr.Do(func() {
				if err := d.armTask(t, warn); err != nil {
					errs[i] = fmt.Errorf("pid %d: %w", t.pid, err)
				}
			})
		}()
	}
	wg.Wait()
	return tree, errors.Join(errs...)
}

// armTask lists t's mappings, makes it a userfaultfd if the tracking has
// none for it, and prepares its round (premig.prepare, re-arming).
func (d *dumper) armTask(t *task, warn func(string, ...any)) error {
	vmas, err := listVmas(t.pid)
	if err != nil {
		return err
	}
	t.mm = &imagepb.MmEntry{Vmas: vmas}
	if t.remote, err = ptrace.NewRemote(t.p); err != nil {
		return fmt.Errorf("prepare injection: %w", explainNoMapping(t.pid, err))
	}
	if err := dropOwnSigcont(t); err != nil {
		return err
	}
	if err := d.dropOwnSigchld(t); err != nil {
		return err
	}
	d.pm.mu.Lock()
	_, have := d.pm.tracked[t.pid]
	d.pm.mu.Unlock()
	if !have {
		fd, err := makeUffd(t)
		if err != nil {
			warn("pid %d: %v: the next round copies all its pages", t.pid, err)
		} else {
			d.pm.mu.Lock()
			d.pm.tracked[t.pid] = &tracked{pid: t.pid, start: t.stat.StartTime, fd: fd}
			d.pm.mu.Unlock()
		}
	}
	if err := t.remote.RequeueStolen(); err != nil {
		return err
	}
	err = t.remote.Close()
	t.remote = nil
	if err != nil {
		return err
	}
	return d.pm.prepare(t.pid, t.mm, true)
}

// makeUffd creates a userfaultfd in t (frozen, with its injection ready),
// takes it into ctr-cr and closes it in t: t's fd table is as before when
// it runs again. The context stays bound to t's mm.
func makeUffd(t *task) (int, error) {
	const uffdUserModeOnly = 1
	r := t.remote
	flags := uint64(unix.O_CLOEXEC | unix.O_NONBLOCK)
	tfd, err := r.Call(0, "userfaultfd", unix.SYS_USERFAULTFD, flags)
	if err != nil {
		// without the privilege for kernel-mode faults: user mode is
		// enough for write-protect tracking
		if tfd, err = r.Call(0, "userfaultfd(UFFD_USER_MODE_ONLY)", unix.SYS_USERFAULTFD, flags|uffdUserModeOnly); err != nil {
			return -1, fmt.Errorf("%w: userfaultfd in the process: %w", memory.ErrNoTracking, err)
		}
	}
	pfd, err := unix.PidfdOpen(t.pid, 0)
	var fd int
	if err == nil {
		fd, err = unix.PidfdGetfd(pfd, int(tfd), 0)
		unix.Close(pfd)
	}
	if _, cerr := r.Call(0, "close(userfaultfd)", unix.SYS_CLOSE, tfd); cerr != nil && err == nil {
		unix.Close(fd)
		return -1, cerr
	}
	if err != nil {
		return -1, fmt.Errorf("take the userfaultfd: %w", err)
	}
	if err := memory.EnableTracking(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// listVmas reads pid's mappings for a pre-dump image (no files: a
// pre-dump image holds pages only).
func listVmas(pid int) ([]*imagepb.Vma, error) {
	smaps, err := procfs.ReadSmaps(pid)
	if err != nil {
		return nil, err
	}
	var vmas []*imagepb.Vma
	for i := range smaps {
		s := &smaps[i]
		v := &imagepb.Vma{
			Start: s.Start, End: s.End, Prot: uint32(s.Prot), Shared: s.Shared, Pgoff: s.Offset,
			Kind: memory.Classify(s), Name: s.Path, VmFlags: strings.Join(s.VmFlags, " "),
		}
		if strings.HasPrefix(s.Path, "/SYSV") && s.Shared {
			v.Kind = imagepb.VmaKind_VMA_SYSV_SHM
		}
		if s.Anonymous == 0 && s.Swap == 0 || !trackable(v) {
			v.NoPages = true
		}
		vmas = append(vmas, v)
	}
	return vmas, nil
}

// writePreDump copies the pages of every process (running) and writes
// the pre-dump image; it starts the holder of the tracking and returns
// its record (also on a later failure, for the caller to end it).
func (d *dumper) writePreDump(tree []*imagepb.PstreeEntry, commit func() error) (*imagepb.PremigTracker, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, max(1, d.opts.Jobs))
	exited := map[int32]bool{}
	for _, t := range d.tasks {
		if t.zombie {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var st memory.Stats
			err := d.copyLive(t, &st)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && t.pid != d.root && exitedDuringCopy(t.pid) {
				exited[int32(t.pid)], err = true, nil // left out (exitedDuringCopy)
				d.pm.untrack(t.pid)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("pid %d: memory: %w", t.pid, err))
			}
			d.st.PagesScanned += st.PagesScanned
			d.st.PagesWritten += st.PagesWritten
			d.st.PagesZero += st.PagesZero
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, pe := range tree {
		if exited[pe.Pid] {
			pe.Zombie, pe.Threads = true, nil // as it is now; no memory
		}
	}
	if err := d.w.WritePstree(tree); err != nil {
		return nil, err
	}
	if commit != nil {
		if err := commit(); err != nil {
			return nil, err
		}
	}
	inv := &imagepb.Inventory{
		FormatVersion: image.FormatVersion, ToolVersion: version.Version, Kernel: kernelRelease(),
		Arch: runtime.GOARCH, RootPid: int32(d.root), CreatedUnixNano: time.Now().UnixNano(), PreDump: true,
	}
	d.pm.inventory(inv)
	var ts []*tracked
	for _, t := range d.tasks {
		if tk := d.pm.tracked[t.pid]; tk != nil {
			ts = append(ts, tk)
		}
	}
	if len(ts) > 0 {
		rec, err := startHolder(ts)
		if err != nil {
			return nil, err
		}
		inv.PremigTracker = rec
		return rec, d.w.Finish(inv)
	}
	return nil, d.w.Finish(inv)
}

// copyLive copies t's pages while it runs, and writes its mm and
// parentmap.
func (d *dumper) copyLive(t *task, st *memory.Stats) error {
	mf, err := os.Open(fmt.Sprintf("/proc/%d/mem", t.pid))
	if err != nil {
		return err
	}
	defer mf.Close()
	pmf, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", t.pid))
	if err != nil {
		return err
	}
	defer pmf.Close()
	pw, err := d.w.CreatePages(fmt.Sprint(t.pid))
	if err != nil {
		return err
	}
	r := &memory.Reader{Pid: t.pid, Mem: mf, Pagemap: pmf, Ctx: d.ctx, Live: true}
	if err := r.DumpPrivate(d.pm.vmas(t.pid, t.mm.Vmas), pw, st); err != nil {
		pw.Close()
		return err
	}
	if err := pw.Close(); err != nil {
		return err
	}
	if err := d.pm.writeParentmap(d.w, t.pid); err != nil {
		return err
	}
	return d.w.WriteMm(t.pid, t.mm)
}
