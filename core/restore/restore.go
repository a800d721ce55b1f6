// Package restore rebuilds a process from an image directory. A stub (ctr-cr
// re-executed under ptrace, taken over before it runs) gets the dumped pid;
// everything else is done by syscalls injected into it: its own image is
// unmapped, the dumped VMAs mapped and filled, fds installed, threads created
// with clone3 set_tid, per-thread and per-process state set, and registers
// put back last. A failed restore kills the stub and removes what it created.
package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/lazy"
	"github.com/ctr-cr/ctr-cr/core/lifecycle"
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/netlock"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
	"github.com/ctr-cr/ctr-cr/internal/threadns"
	"github.com/ctr-cr/ctr-cr/internal/timing"
)

// Options control a restore.
type Options struct {
	PidMethod PidMethod
	// Terminal replaces the terminal of a shell job (an fd of ours that is
	// a tty, for --shell-job), or -1.
	Terminal int
	// Detach: the caller will not stay the root's parent (restore -d).
	Detach bool
	// Adopt, when set, is an existing process that becomes the root of
	// the tree instead of one ctr-cr forks: pid 1 of a fresh pid
	// namespace that the caller made with the tree's other namespaces
	// (see stubAdopt), alone in it and waiting. The image's root must be
	// pid 1 of its own pid namespace; the tasks get their pids inside that
	// namespace (the pids outside are the kernel's choice), and files are
	// resolved in the process's root.
	Adopt int
	// Notify is told where the restore is, and puts back what the
	// caller owns (lifecycle.Notify: NetworkLocked, BeforeTasksRun,
	// NetworkUnlocked, AfterRestore); nil: nobody.
	Notify lifecycle.Notify
	// Relock says the tree comes back in a network namespace other than
	// the one its dump locked (a new one: Adopt's, or ctr-cr's own with
	// InNamespaces): the image's network lock is taken again there before
	// Notify.BeforeTasksRun, whose links then see no peer's packet before
	// the sockets are back; the restore removes it as it removes the
	// dump's.
	Relock bool
	// Inherit are fds of ours that replace the files of the image whose
	// other side is outside it, by CRIU's key (--inherit-fd fd[N]:KEY,
	// e.g. pipe:[INO] for an external pipe).
	Inherit map[string]int
	// TCPClose restores the image's TCP connections as closed sockets
	// (--tcp-close; see files.Opener.CloseConnections). An image dumped
	// with --tcp-close needs it.
	TCPClose bool
	// InNamespaces says the caller has created the namespaces the image
	// carries (Inventory.Namespaces) and filled them: ctr-cr runs in them.
	// An image that carries namespaces is refused without it, so that no
	// tree is ever restored into the restorer's own.
	InNamespaces bool
	// MountNS, when set, makes the root (pid 1 of a new pid namespace:
	// the image's root must be one) in a new mount namespace too, and is
	// called with its pid as soon as it exists, before anything else is
	// restored: it builds that namespace's mounts (procns). Files are then
	// resolved in the root's root, as for Adopt.
	MountNS func(pid int) error
	// Sibling says the root (Adopt) is a child of ctr-cr's parent, which
	// stays (restore --restore-sibling): its parent-death signal is
	// restored even with Detach.
	Sibling bool
	// LazyPages: the tree runs before its private anonymous memory is
	// in; the pages come on first touch and by a background pass
	// (core/lazy, lazy.go). Restored.Lazy then serves them: the caller
	// waits for it.
	LazyPages bool
	// PagesFrom, when set, is where the pages files are read from
	// instead of the image directory (restore --page-server: a lazy
	// page server at the source).
	PagesFrom func(name string) (image.PagesSource, error)
}

// Stats reports where a restore spent its time, for --print-stats.
type Stats struct {
	ValidateMs       float64 `json:"validate_ms"`
	ForkingMs        float64 `json:"forking_ms"`
	MemoryMs         float64 `json:"memory_ms"`
	RestoreMs        float64 `json:"restore_ms"`
	TotalMs          float64 `json:"total_ms"`
	PagesRestored    uint64  `json:"pages_restored"`
	InjectedSyscalls int     `json:"injected_syscalls"` // ptrace round trips: a syscall batch or code run counts once
	BatchedSyscalls  int     `json:"batched_syscalls"`  // syscalls made inside those batches
	Threads          int     `json:"threads"`
	Processes        int     `json:"processes"`
	PagesTaskRead    uint64  `json:"pages_task_read"` // of PagesRestored, read from the image by the task itself
}

// Restored is a running restored process.
type Restored struct {
	Pid      int
	Stats    *Stats
	Warnings []string // what could not be restored exactly, for the user
	// Lazy serves the memory of a restore with Options.LazyPages: its
	// Wait returns once the last page is in, or kills the tree with an
	// error when the pages cannot come. Nil without LazyPages.
	Lazy *lazy.Session
	// abort kills the tree and releases what its restore holds (a
	// failed Notify.AfterRestore).
	abort func()
}

// image contents of one process, validated.
type proc struct {
	pst   *imagepb.PstreeEntry
	core  *imagepb.TaskCore
	mm    *imagepb.MmEntry
	fds   []*imagepb.FdEntry
	pmap  []*imagepb.PagemapEntry
	pages *image.Pages
	chain *chainFill // pages in the parent images (chain.go), or nil
}

var ms = timing.Ms // the one definition: internal/timing

// Restore rebuilds the process tree in dir and lets it run. The calling
// goroutine must be locked to its OS thread. A cancelled ctx stops the
// restore before any process runs and removes everything created.
func Restore(ctx context.Context, dir string, opts Options) (res *Restored, err error) {
	t0 := time.Now()
	img, err := openImage(dir, opts.PagesFrom)
	if err != nil {
		return nil, err
	}
	return restoreNotified(ctx, img, opts, t0)
}

// Open opens and validates the image in dir as a restore needs it (the
// pages' checksums left to the restore that reads them, and the
// inventory's network lock name checked), for RestoreImage: a caller that
// needs the image before the restore (a container restore) opens it once.
func Open(dir string) (*image.Reader, error) { return openImage(dir, nil) }

// openImage is Open with the pages read from pagesFrom (Options.PagesFrom)
// when it is set.
func openImage(dir string, pagesFrom func(name string) (image.PagesSource, error)) (*image.Reader, error) {
	img, err := image.OpenWith(dir, image.OpenOptions{DeferPages: true, PagesFrom: pagesFrom})
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	if n := img.Inventory().NetLock; n != "" && !netlock.ValidName(n) {
		return nil, fmt.Errorf("validate: bad network lock name %q", n)
	}
	return img, nil
}

// RestoreImage is Restore of an image opened by Open. opts.PagesFrom is
// refused: the pages' source is chosen when the image is opened (Restore).
func RestoreImage(ctx context.Context, img *image.Reader, opts Options) (*Restored, error) {
	if opts.PagesFrom != nil {
		return nil, errors.New("restore: Options.PagesFrom with an image already opened: use Restore")
	}
	return restoreNotified(ctx, img, opts, time.Now())
}

// restoreNotified is restoreImage followed by Notify.NetworkUnlocked (the
// tree removed the lock) and Notify.AfterRestore; an error of either kills
// the tree.
func restoreNotified(ctx context.Context, img *image.Reader, opts Options, t0 time.Time) (*Restored, error) {
	res, err := restoreImage(ctx, img, opts, t0)
	if err != nil {
		return nil, err
	}
	if err := notifyRestored(lifecycle.Or(opts.Notify), img.Inventory().NetLock != "", netnsPid(opts), res.Pid, res.abort); err != nil {
		return nil, err
	}
	return res, nil
}

// notifyRestored tells notify that the restored tree runs: NetworkUnlocked
// (when the image had a lock, which the tree removed) with a process pid
// of its network namespace, then AfterRestore with the root's pid. The
// first error ends it and kills the tree (abort).
func notifyRestored(notify lifecycle.Notify, hadLock bool, pid, root int, abort func()) error {
	var err error
	if hadLock {
		err = notify.NetworkUnlocked(pid)
	}
	if err == nil {
		err = notify.AfterRestore(root)
	}
	if err != nil {
		abort()
	}
	return err
}

// netnsPid is a process in the network namespace the tree is restored
// into: the adopted root, or ctr-cr (whose namespaces the stub shares).
func netnsPid(opts Options) int {
	if opts.Adopt != 0 {
		return opts.Adopt
	}
	return os.Getpid()
}

// prepare takes the network lock again (Options.Relock) and lets the
// caller fill the tree's namespaces (Notify.BeforeTasksRun), from this
// thread in ctr-cr's network namespace; after a failure the lock it took is
// removed. It returns how long the caller's hooks took.
func prepare(img *image.Reader, opts Options, notify lifecycle.Notify) (time.Duration, error) {
	tp := time.Now()
	pid := netnsPid(opts)
	locked := false
	if opts.Relock {
		var err error
		if locked, err = relock(img, pid); err != nil {
			return 0, fmt.Errorf("network lock: %w", err)
		}
	}
	var err error
	if locked {
		err = notify.NetworkLocked(pid)
	}
	if err == nil {
		err = notify.BeforeTasksRun(pid)
	}
	if err != nil && locked {
		err = unlocked(err, unlockIn(pid, img.Inventory().NetLock), notify, pid)
	}
	if err != nil {
		return 0, err
	}
	return time.Since(tp), nil
}

// unlocked adds to err, the error of a failed restore, the errors of
// removing the network lock (uerr) and of Notify.NetworkUnlocked.
func unlocked(err, uerr error, notify lifecycle.Notify, pid int) error {
	if uerr != nil {
		err = fmt.Errorf("%w (and removing the network lock: %v)", err, uerr)
	}
	if nerr := notify.NetworkUnlocked(pid); nerr != nil {
		err = fmt.Errorf("%w (and after removing the network lock: %v)", err, nerr)
	}
	return err
}

// restoreImage is Restore from the opened image; t0 is when the restore
// began, for Stats.ValidateMs.
func restoreImage(ctx context.Context, img *image.Reader, opts Options, t0 time.Time) (res *Restored, err error) {
	st := &Stats{}
	inv := img.Inventory()
	if inv.Arch != runtime.GOARCH {
		return nil, fmt.Errorf("validate: image is for %s, this is %s", inv.Arch, runtime.GOARCH)
	}
	notify := lifecycle.Or(opts.Notify)
	hooks, err := prepare(img, opts, notify)
	if err != nil {
		return nil, err
	}
	t0 = t0.Add(hooks) // the caller's time is not the restore's (ValidateMs)
	if opts.Adopt != 0 {
		// sockets are created (and the network lock removed, also on
		// failure: this defer runs last) in the adopted init's network
		// namespace, from this thread
		back, err := threadns.EnterNetns(opts.Adopt)
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", opts.Adopt, err)
		}
		defer back()
	}
	if inv.NetLock != "" { // a name Open checked
		// The dump left its TCP connections locked: a failed restore
		// lifts the lock too (the peers then see the connections end
		// rather than hang), a successful one once they are back.
		defer func() {
			if err != nil {
				err = unlocked(err, netlock.Unlock(inv.NetLock), notify, netnsPid(opts))
			}
		}()
	}
	if len(inv.Namespaces) > 0 && !opts.InNamespaces {
		return nil, fmt.Errorf("validate: the image carries the tree's own %s namespaces: restore it with `ctr-cr restore -D DIR`, which creates them", strings.Join(inv.Namespaces, ", "))
	}
	if inv.TcpClose && !opts.TCPClose {
		return nil, errors.New("validate: the image was dumped with --tcp-close (its TCP connections without their state): restore needs --tcp-close")
	}
	chain, err := checkTip(img)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	var t *tree // the current try (restoreRetrying)
	procs, opener, err := load(img, files.WithTerminal(opts.Terminal), files.WithInherit(opts.Inherit),
		files.WithPids(func(pid int32) (int, bool) { return t.pidOf(pid) }, deadPidfd))
	if err == nil {
		err = attachChain(procs, img, chain)
	}
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	if opts.TCPClose {
		opener.CloseConnections()
	}
	defer func() {
		for _, p := range procs {
			if p.pages != nil {
				p.pages.Close()
			}
		}
	}()
	root := int(procs[0].pst.Pid)
	if opts.Adopt != 0 {
		if !inv.RootPidNs {
			return nil, fmt.Errorf("validate: pid %d: the image's root is not pid 1 of a pid namespace, it cannot be restored into pid %d", root, opts.Adopt)
		}
		if err := opener.SetRoot(opts.Adopt); err != nil {
			return nil, fmt.Errorf("pid %d: %w", opts.Adopt, err)
		}
	} else if opts.MountNS != nil && !inv.RootPidNs {
		return nil, fmt.Errorf("validate: pid %d: the image's root is not pid 1 of a pid namespace: its mount namespace cannot be restored", root)
	} else if err := checkFree(procs); err != nil {
		// pids come back as they were: outside a restored pid namespace too
		return nil, err
	}
	if err := opener.Check(); err != nil {
		return nil, fmt.Errorf("pid %d: %w", root, err)
	}
	if opts.Terminal < 0 && opener.HasTerminal() {
		return nil, fmt.Errorf("pid %d: the image is a shell job with a terminal: restore it with --shell-job from a terminal", root)
	}
	st.ValidateMs = ms(time.Since(t0))
	// With the ns_last_pid method a fork elsewhere on the host can take a
	// pid between our rewind of the cursor and our fork. A process is
	// forked again at once (stubNsLastPid, forkChild); a thread cannot be
	// undone alone, so then the whole tree is torn down and restored
	// again, as long as its pids are free.
	err = restoreRetrying(func() attempt {
		t = &tree{ctx: ctx, img: img, inv: inv, procs: procs, st: st, opener: opener, opts: opts}
		return t
	}, opts.Adopt != 0, func() error {
		if err := waitFree(procs, time.Second); err != nil {
			return err
		}
		*st = Stats{}
		for _, p := range procs {
			p.pages.Rewind() // read again from the start, checksum afresh
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	st.TotalMs = ms(time.Since(t0))
	return &Restored{Pid: t.root.pid, Stats: st, Warnings: t.warnings, Lazy: t.lazy, abort: t.abort}, nil
}

// attempt is one try at restoring the tree; tree implements it (the
// retry test fakes it).
type attempt interface {
	restore() error
	// abort undoes everything the try created: its processes killed and
	// reaped, what it opened closed.
	abort()
}

// maxAttempts bounds the tries of a restore that loses pid races.
const maxAttempts = 5

// restoreRetrying runs tries made by next until one succeeds. Every failed
// try is aborted before anything else. Only a lost pid race (errPidRace)
// is tried again: at most maxAttempts tries, never with an adopted root
// (adopt), and only when again, which waits for the pids to be free and
// resets what the failed try counted, succeeds. The error is the last
// try's.
func restoreRetrying(next func() attempt, adopt bool, again func() error) error {
	for n := 1; ; n++ {
		a := next()
		err := a.restore()
		if err == nil {
			return nil
		}
		a.abort()
		if !errors.Is(err, errPidRace) || n == maxAttempts || adopt || again() != nil {
			return err
		}
	}
}

// load reads and cross-checks everything restore needs before it touches
// the system. The processes come back in pstree order: parents first.
func load(img *image.Reader, opts ...files.OpenerOption) ([]*proc, *files.Opener, error) {
	tree, err := img.Pstree()
	if err != nil {
		return nil, nil, err
	}
	if len(tree) == 0 || tree[0].Ppid != 0 || tree[0].Zombie {
		return nil, nil, fmt.Errorf("pstree.img: the first entry must be the live root")
	}
	fl, err := img.Files()
	if err != nil {
		return nil, nil, err
	}
	opener, err := files.NewOpener(fl, opts...)
	if err != nil {
		return nil, nil, err
	}
	seen := map[int32]bool{}
	var procs []*proc
	for _, e := range tree {
		if seen[e.Pid] {
			return nil, nil, fmt.Errorf("pstree.img: pid %d twice", e.Pid)
		}
		if e.Ppid != 0 && !seen[e.Ppid] {
			return nil, nil, fmt.Errorf("pstree.img: pid %d comes before its parent %d", e.Pid, e.Ppid)
		}
		seen[e.Pid] = true
		pr := &proc{pst: e}
		if !e.Zombie {
			if err := loadProc(img, pr, opener); err != nil {
				return nil, nil, err
			}
		}
		procs = append(procs, pr)
	}
	return procs, opener, nil
}

// loadProc reads and checks the files of one live process.
func loadProc(img *image.Reader, pr *proc, opener *files.Opener) error {
	var err error
	pid := int(pr.pst.Pid)
	if pid <= 0 || len(pr.pst.Threads) == 0 || int(pr.pst.Threads[0]) != pid {
		return fmt.Errorf("pstree.img: bad process entry (pid %d, threads %v)", pid, pr.pst.Threads)
	}
	if pr.core, err = img.Core(pid); err != nil {
		return err
	}
	if len(pr.core.Threads) != len(pr.pst.Threads) {
		return fmt.Errorf("core-%d.img: %d threads, pstree.img lists %d", pid, len(pr.core.Threads), len(pr.pst.Threads))
	}
	for i, t := range pr.core.Threads {
		if t.Tid != pr.pst.Threads[i] {
			return fmt.Errorf("core-%d.img: thread %d is tid %d, pstree.img says %d", pid, i, t.Tid, pr.pst.Threads[i])
		}
		// Every task is made by the restorer with all of its privileges:
		// only its own credentials take them away. An image without them
		// is refused rather than leaving a task with the restorer's.
		if c := t.Creds; c == nil || len(c.Uids) != 4 || len(c.Gids) != 4 {
			return fmt.Errorf("core-%d.img: tid %d: %w: no complete credentials (uids, gids, capabilities): refusing to restore a task that would keep the restorer's privileges", pid, t.Tid, image.ErrCorrupt)
		}
		if _, err := ptrace.RegsFromBytes(t.Regs); err != nil {
			return fmt.Errorf("core-%d.img: tid %d: %w", pid, t.Tid, err)
		}
		if len(t.Xsave) < 576 {
			return fmt.Errorf("core-%d.img: tid %d: xsave area of %d bytes", pid, t.Tid, len(t.Xsave))
		}
	}
	if pr.mm, err = img.Mm(pid); err != nil {
		return err
	}
	if pr.fds, err = img.Fdinfo(pid); err != nil {
		return err
	}
	_, pr.pmap, err = img.Pagemap(fmt.Sprint(pid))
	if err != nil {
		return err
	}
	if err := memory.CheckLayout(pr.mm.Vmas, pr.pmap); err != nil {
		return fmt.Errorf("mm-%d.img: %w", pid, err)
	}
	for _, fd := range pr.fds {
		if fd.Fd < 0 {
			return fmt.Errorf("fdinfo-%d.img: fd %d", pid, fd.Fd)
		}
		if _, err := opener.Entry(fd.FileId); err != nil {
			return fmt.Errorf("fdinfo-%d.img: fd %d: %w", pid, fd.Fd, err)
		}
	}
	for _, v := range pr.mm.Vmas {
		if v.FileId != 0 {
			if _, err := opener.Entry(v.FileId); err != nil {
				return fmt.Errorf("mm-%d.img: vma %#x-%#x: %w", pid, v.Start, v.End, err)
			}
		}
	}
	if _, err := opener.Entry(pr.mm.ExeFileId); err != nil {
		return fmt.Errorf("mm-%d.img: exe: %w", pid, err)
	}
	pr.pages, err = img.OpenPages(fmt.Sprint(pid))
	return err
}

// checkFree fails when a pid or tid of the tree is taken, naming who has it.
// waitFree waits up to d for the tree's pids to be free again: the task
// that won a pid race is usually a short-lived fork of someone else's.
func waitFree(procs []*proc, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := checkFree(procs)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkFree(procs []*proc) error {
	for _, pr := range procs {
		if err := checkFreeProc(pr); err != nil {
			return fmt.Errorf("pid %d: %w", pr.pst.Pid, err)
		}
	}
	return nil
}

func checkFreeProc(pr *proc) error {
	for _, t := range pr.pst.Threads {
		waitZombie(int(t))
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", t)); err == nil {
			who := "another process"
			if st, err := procfs.ReadStatus(int(t)); err == nil {
				who = fmt.Sprintf("%q (pid %d)", st.Name, st.Tgid)
			}
			return fmt.Errorf("pid %d is in use by %s", t, who)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Wait waits for a restored process that is our child and returns its exit
// status the way a shell reports it (128+signal when killed).
func Wait(pid int) (int, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("wait for pid %d: %w", pid, err)
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), nil
		case ws.Signaled():
			return 128 + int(ws.Signal()), nil
		}
	}
}

// waitZombie gives the parent of a just-killed task (e.g. the dumped
// original) a moment to reap it: a zombie still holds its pid.
func waitZombie(pid int) {
	for i := 0; i < 200; i++ {
		st, err := procfs.ReadStat(pid)
		if err != nil || st.State != 'Z' {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
