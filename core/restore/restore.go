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
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// Options control a restore.
type Options struct {
	PidMethod PidMethod
}

// Stats reports where a restore spent its time, for --print-stats.
type Stats struct {
	ValidateMs       float64 `json:"validate_ms"`
	ForkingMs        float64 `json:"forking_ms"`
	MemoryMs         float64 `json:"memory_ms"`
	RestoreMs        float64 `json:"restore_ms"`
	TotalMs          float64 `json:"total_ms"`
	PagesRestored    uint64  `json:"pages_restored"`
	InjectedSyscalls int     `json:"injected_syscalls"`
	Threads          int     `json:"threads"`
}

// Restored is a running restored process.
type Restored struct {
	Pid   int
	Stats *Stats
}

// image contents of one process, validated.
type proc struct {
	pst   *imagepb.PstreeEntry
	core  *imagepb.TaskCore
	mm    *imagepb.MmEntry
	fds   []*imagepb.FdEntry
	pmap  []*imagepb.PagemapEntry
	pages *os.File
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Restore rebuilds the process in dir and lets it run. The calling goroutine
// must be locked to its OS thread. A cancelled ctx stops the restore before
// the process runs and removes everything created.
func Restore(ctx context.Context, dir string, opts Options) (*Restored, error) {
	st := &Stats{}
	t0 := time.Now()
	img, err := image.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	if inv := img.Inventory(); inv.Arch != runtime.GOARCH {
		return nil, fmt.Errorf("validate: image is for %s, this is %s", inv.Arch, runtime.GOARCH)
	}
	pr, opener, err := load(img)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	defer pr.pages.Close()
	pid := int(pr.pst.Pid)
	if err := checkFree(pr); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if err := opener.Check(); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	st.ValidateMs = ms(time.Since(t0))

	t1 := time.Now()
	s, err := newStub(pid, opts.PidMethod)
	if err != nil {
		return nil, fmt.Errorf("pid %d: create task: %w", pid, err)
	}
	st.ForkingMs = ms(time.Since(t1))
	r := &restorer{ctx: ctx, img: img, pr: pr, st: st, stub: s, opener: opener, inv: img.Inventory()}
	if err := r.run(); err != nil {
		r.abort()
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	st.RestoreMs = ms(time.Since(t1))
	st.TotalMs = ms(time.Since(t0))
	return &Restored{Pid: pid, Stats: st}, nil
}

// load reads and cross-checks everything restore needs before it touches
// the system.
func load(img *image.Reader) (*proc, *files.Opener, error) {
	tree, err := img.Pstree()
	if err != nil {
		return nil, nil, err
	}
	if len(tree) != 1 {
		return nil, nil, fmt.Errorf("pstree.img: %d processes; this version restores one", len(tree))
	}
	pr := &proc{pst: tree[0]}
	pid := int(pr.pst.Pid)
	if pid <= 1 || len(pr.pst.Threads) == 0 || int(pr.pst.Threads[0]) != pid {
		return nil, nil, fmt.Errorf("pstree.img: bad process entry (pid %d, threads %v)", pid, pr.pst.Threads)
	}
	if pr.core, err = img.Core(pid); err != nil {
		return nil, nil, err
	}
	if len(pr.core.Threads) != len(pr.pst.Threads) {
		return nil, nil, fmt.Errorf("core-%d.img: %d threads, pstree.img lists %d", pid, len(pr.core.Threads), len(pr.pst.Threads))
	}
	for i, t := range pr.core.Threads {
		if t.Tid != pr.pst.Threads[i] {
			return nil, nil, fmt.Errorf("core-%d.img: thread %d is tid %d, pstree.img says %d", pid, i, t.Tid, pr.pst.Threads[i])
		}
		if _, err := ptrace.RegsFromBytes(t.Regs); err != nil {
			return nil, nil, fmt.Errorf("core-%d.img: tid %d: %w", pid, t.Tid, err)
		}
		if len(t.Xsave) < 576 {
			return nil, nil, fmt.Errorf("core-%d.img: tid %d: xsave area of %d bytes", pid, t.Tid, len(t.Xsave))
		}
	}
	if pr.mm, err = img.Mm(pid); err != nil {
		return nil, nil, err
	}
	if pr.fds, err = img.Fdinfo(pid); err != nil {
		return nil, nil, err
	}
	_, pr.pmap, err = img.Pagemap(fmt.Sprint(pid))
	if err != nil {
		return nil, nil, err
	}
	if err := memory.CheckLayout(pr.mm.Vmas, pr.pmap); err != nil {
		return nil, nil, fmt.Errorf("mm-%d.img: %w", pid, err)
	}
	fl, err := img.Files()
	if err != nil {
		return nil, nil, err
	}
	opener, err := files.NewOpener(fl)
	if err != nil {
		return nil, nil, err
	}
	for _, fd := range pr.fds {
		if fd.Fd < 0 {
			return nil, nil, fmt.Errorf("fdinfo-%d.img: fd %d", pid, fd.Fd)
		}
		if _, err := opener.Entry(fd.FileId); err != nil {
			return nil, nil, fmt.Errorf("fdinfo-%d.img: fd %d: %w", pid, fd.Fd, err)
		}
	}
	for _, v := range pr.mm.Vmas {
		if v.FileId != 0 {
			if _, err := opener.Entry(v.FileId); err != nil {
				return nil, nil, fmt.Errorf("mm-%d.img: vma %#x-%#x: %w", pid, v.Start, v.End, err)
			}
		}
	}
	if _, err := opener.Entry(pr.mm.ExeFileId); err != nil {
		return nil, nil, fmt.Errorf("mm-%d.img: exe: %w", pid, err)
	}
	if pr.pages, err = img.OpenPages(fmt.Sprint(pid)); err != nil {
		return nil, nil, err
	}
	return pr, opener, nil
}

// checkFree fails when the pid or a tid is taken, naming who has it.
func checkFree(pr *proc) error {
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
