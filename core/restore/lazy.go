package restore

import (
	"fmt"
	"io"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/lazy"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

// Lazy restore (Options.LazyPages, core/lazy): the pages of a process's
// private anonymous writable VMAs are not written before it runs; they
// are registered with a userfaultfd made in the process and served by
// the session, from the image's pages file or, for the pages a pre-copy
// chain leaves to the parent images, from theirs. What cannot be
// registered (file-backed private pages, VMAs filled before the forks for
// copy-on-write sharing, locked, sealed, guarded, droppable or read-only
// ones) is written as in an eager restore.

// lazyEligible reports whether v's pages may come after the task runs.
func (r *restorer) lazyEligible(v *imagepb.Vma) bool {
	switch v.Kind {
	case imagepb.VmaKind_VMA_ANON_PRIVATE, imagepb.VmaKind_VMA_HEAP, imagepb.VmaKind_VMA_STACK:
	default:
		return false
	}
	if v.Shared || v.Prot&unix.PROT_WRITE == 0 || r.cow.isEarly(v) || len(v.GuardRegions) > 0 {
		return false
	}
	for _, f := range []string{"dp", "lo", "sl", "gu", "um", "uw"} {
		if hasVmFlag(v, f) {
			return false
		}
	}
	return true
}

// A lazy run's offset names its source too: the pages file of the image
// below 1<<srcShift, the pages file of chain level k-1 (a parent image
// of a pre-copy chain) at k<<srcShift and up (multiSource). Runs never
// cross sources, so neither does a read.
const srcShift = 48

// lazyPlan splits the process's pages into the runs served lazily and
// those written now, each with where it is in its source; all is every
// run of the image's own pages file in file order, for the checksum
// pass.
func (r *restorer) lazyPlan() (lazyRuns, eager, all []lazy.Run) {
	var elig []*imagepb.Vma
	for _, v := range r.pr.mm.Vmas {
		if r.lazyEligible(v) {
			elig = append(elig, v)
		}
	}
	var off int64
	for _, e := range r.pr.pmap {
		all = append(all, lazy.Run{Addr: e.Vaddr, NrPages: int(e.NrPages), Off: off})
		l, g := splitEligible(elig, e.Vaddr, e.NrPages, off)
		lazyRuns, eager = append(lazyRuns, l...), append(eager, g...)
		off += int64(e.NrPages * memory.PageSize)
	}
	if r.pr.chain != nil {
		for _, pc := range r.pr.chain.pieces {
			l, g := splitEligible(elig, pc.Vaddr, pc.NrPages, pc.Off+int64(pc.Level+1)<<srcShift)
			lazyRuns, eager = append(lazyRuns, l...), append(eager, g...)
		}
	}
	return lazyRuns, eager, all
}

// splitEligible cuts the n pages at addr (at off in their source) into
// the parts inside the eligible VMAs elig (one run per VMA: a copy may
// not cross VMAs) and the rest.
func splitEligible(elig []*imagepb.Vma, addr, n uint64, off int64) (lazyRuns, eager []lazy.Run) {
	start, end := addr, addr+n*memory.PageSize
	for pos := start; pos < end; {
		next, in := end, false
		// elig is sorted and disjoint: the first VMA ending after pos
		if i := sort.Search(len(elig), func(i int) bool { return elig[i].End > pos }); i < len(elig) {
			if v := elig[i]; v.Start <= pos {
				next, in = min(end, v.End), true
			} else {
				next = min(next, v.Start)
			}
		}
		run := lazy.Run{Addr: pos, NrPages: int((next - pos) / memory.PageSize), Off: off + int64(pos-start)}
		if in {
			lazyRuns = append(lazyRuns, run)
		} else {
			eager = append(eager, run)
		}
		pos = next
	}
	return lazyRuns, eager
}

// lazySources opens the sources of the process's pages: the image's own
// pages file (Raw: checked by the session's pass) and the pages files of
// the chain levels it uses (checked when the chain was opened).
func (r *restorer) lazySources() (multiSource, error) {
	srcs := multiSource{r.pr.pages.Raw()}
	if r.pr.chain == nil {
		return srcs, nil
	}
	c := r.pr.chain
	for l := range c.levels {
		used := false
		for _, pc := range c.pieces {
			used = used || pc.Level == l
		}
		if !used {
			srcs = append(srcs, nil)
			continue
		}
		pg, err := c.levels[l].OpenPages(strconv.Itoa(c.pid))
		if err != nil {
			srcs.close()
			return nil, fmt.Errorf("pages from the parent images: %w", err)
		}
		srcs = append(srcs, pg)
	}
	return srcs, nil
}

// multiSource reads a lazy run's pages from the source its offset names
// (srcShift).
type multiSource []io.ReaderAt

func (m multiSource) ReadAt(b []byte, off int64) (int, error) {
	k := int(off >> srcShift)
	if k >= len(m) || m[k] == nil {
		return 0, fmt.Errorf("no pages source %d", k)
	}
	return m[k].ReadAt(b, off&(1<<srcShift-1))
}

// close closes the chain levels' files (not the image's own, the
// restore's).
func (m multiSource) close() error {
	for _, s := range m[1:] {
		if c, ok := s.(io.Closer); ok {
			c.Close()
		}
	}
	return nil
}

// fillLazy writes the pages that are not served lazily (see lazyPlan),
// the chain's included, and returns the lazy plan for registerLazy.
func (r *restorer) fillLazy() ([]lazy.Run, []lazy.Run, error) {
	lazyRuns, eager, all := r.lazyPlan()
	dst := r.fillDst(memAt{r.mem})
	srcs, err := r.lazySources()
	if err != nil {
		return nil, nil, err
	}
	defer srcs.close()
	buf := make([]byte, 1<<20)
	for _, e := range eager {
		left, addr, off := uint64(e.NrPages)*memory.PageSize, e.Addr, e.Off
		for left > 0 {
			b := buf[:min(left, uint64(len(buf)))]
			if _, err := srcs.ReadAt(b, off); err != nil {
				return nil, nil, fmt.Errorf("read pages at offset %d: %w", off&(1<<srcShift-1), err)
			}
			if _, err := dst.WriteAt(b, int64(addr)); err != nil {
				return nil, nil, fmt.Errorf("write %d bytes at %#x: %w", len(b), addr, err)
			}
			left -= uint64(len(b))
			addr += uint64(len(b))
			off += int64(len(b))
			r.st.PagesRestored += uint64(len(b)) / memory.PageSize
		}
	}
	return lazyRuns, all, nil
}

// registerLazy makes a userfaultfd in the task (not user-mode-only: the
// kernel's own accesses to the task's memory, a read(2) into a buffer or
// the rseq area, must wait for the page too, not fail), takes it into
// ctr-cr, closes it in the task, registers the VMAs holding lazy runs and
// hands everything to the session, which serves the faults from now on.
func (r *restorer) registerLazy(runs, all []lazy.Run) error {
	if len(runs) == 0 {
		return nil
	}
	flags := uint64(unix.O_CLOEXEC | unix.O_NONBLOCK)
	tfd, err := r.call(0, "userfaultfd (lazy pages)", unix.SYS_USERFAULTFD, flags)
	if err != nil {
		return fmt.Errorf("%w: userfaultfd in the process (needs CAP_SYS_PTRACE for kernel-mode faults): %w", lazy.ErrUnavailable, err)
	}
	pidfd, err := unix.PidfdOpen(r.pid, 0)
	uffd := -1
	if err == nil {
		uffd, err = unix.PidfdGetfd(pidfd, int(tfd), 0)
	}
	if _, cerr := r.call(0, "close(userfaultfd)", unix.SYS_CLOSE, tfd); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		if uffd >= 0 {
			unix.Close(uffd)
		}
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return fmt.Errorf("lazy pages: take the userfaultfd: %w", err)
	}
	fail := func(err error) error {
		unix.Close(uffd)
		unix.Close(pidfd)
		return err
	}
	if err := lazy.Handshake(uffd); err != nil {
		return fail(err)
	}
	registered := map[uint64]bool{}
	for _, run := range runs {
		v := vmaAt(r.pr.mm.Vmas, run.Addr)
		if v == nil || registered[v.Start] {
			continue
		}
		registered[v.Start] = true
		if err := lazy.RegisterMissing(uffd, v.Start, v.End); err != nil {
			return fail(fmt.Errorf("lazy pages: vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err))
		}
	}
	// the session's own readers of the file: the checksum pass's, and
	// one for faults (a page server connection of its own: a fault does
	// not wait behind a chunk of the pass)
	name := strconv.Itoa(int(r.pr.pst.Pid))
	seq, err := r.img.OpenPages(name)
	if err != nil {
		return fail(err)
	}
	src, err := r.img.OpenPages(name)
	if err != nil {
		seq.Close()
		return fail(err)
	}
	srcs, err := r.lazySources()
	if err != nil {
		seq.Close()
		src.Close()
		return fail(err)
	}
	srcs[0] = src.Raw()
	return r.tree.lazy.AddProcess(lazy.Process{Pid: r.pid, Pidfd: pidfd, Uffd: uffd, Runs: runs, All: all,
		Source: srcs, SourceCloser: closeAll{src, srcs}, Seq: seq})
}

// vmaAt returns the VMA holding addr (vmas sorted, as CheckLayout
// requires).
func vmaAt(vmas []*imagepb.Vma, addr uint64) *imagepb.Vma {
	i := sort.Search(len(vmas), func(i int) bool { return vmas[i].End > addr })
	if i < len(vmas) && vmas[i].Start <= addr {
		return vmas[i]
	}
	return nil
}

// startLazy makes the session of a lazy restore (before any process is
// filled).
func (t *tree) startLazy() error {
	if !t.opts.LazyPages {
		return nil
	}
	// this very binary, whatever the mount namespace shows at its path
	var err error
	t.lazy, err = lazy.NewSession("/proc/self/exe")
	return err
}

// abortLazy ends the session of a failed restore (the tree is killed).
func (t *tree) abortLazy() {
	if t.lazy != nil {
		t.lazy.Abort()
		t.lazy = nil
	}
}

// closeAll closes the session's readers of a process: its own pages
// file's and the chain levels'.
type closeAll struct {
	own  io.Closer
	srcs multiSource
}

func (c closeAll) Close() error {
	c.srcs.close()
	return c.own.Close()
}
