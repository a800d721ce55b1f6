package dump

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// buildMm records the mm fields and every VMA of t (file-backed ones get
// their file entry).
func (d *dumper) buildMm(t *task) (*imagepb.MmEntry, error) {
	pid := t.pid
	smaps, err := procfs.ReadSmaps(pid)
	if err != nil {
		return nil, err
	}
	trace("pid %d ReadSmaps", pid)
	stat := t.stat
	mm := &imagepb.MmEntry{
		StartCode: stat.StartCode, EndCode: stat.EndCode, StartData: stat.StartData, EndData: stat.EndData,
		StartBrk: stat.StartBrk, Brk: t.brk, StartStack: stat.StartStack, ArgStart: stat.ArgStart,
		ArgEnd: stat.ArgEnd, EnvStart: stat.EnvStart, EnvEnd: stat.EnvEnd,
	}
	if mm.Auxv, err = procfs.ReadAuxv(pid); err != nil {
		return nil, err
	}
	exe, err := procfs.Exe(pid)
	if err != nil {
		return nil, err
	}
	fopts := files.Options{GhostLimit: d.opts.GhostLimit}
	var pagemap *os.File // opened for the first VMA with guard pages
	defer func() {
		if pagemap != nil {
			pagemap.Close()
		}
	}()
	for i := range smaps {
		s := &smaps[i]
		v := &imagepb.Vma{
			Start: s.Start, End: s.End, Prot: uint32(s.Prot), Shared: s.Shared, Pgoff: s.Offset,
			Kind: memory.Classify(s), Name: s.Path, VmFlags: strings.Join(s.VmFlags, " "),
			Growsdown: s.HasFlag("gd"), Account: s.HasFlag("ac"),
		}
		if s.Deleted {
			v.Name += " (deleted)"
		}
		if strings.HasPrefix(s.Path, "/SYSV") && s.Shared {
			// a SysV shm attachment: /proc shows the shmid as its inode;
			// the contents go with the IPC namespace
			v.Kind, v.ShmemId, v.NoPages = imagepb.VmaKind_VMA_SYSV_SHM, s.Inode, true
			mm.Vmas = append(mm.Vmas, v)
			continue
		}
		if err := memory.RefuseSpecial(s); err != nil {
			return nil, fmt.Errorf("vma %#x-%#x: %w", s.Start, s.End, err)
		}
		if s.HasFlag("ht") {
			if err := memory.ClassifyHugetlb(v, s); err != nil {
				return nil, fmt.Errorf("vma %#x-%#x: %w", s.Start, s.End, err)
			}
			if v.Kind == imagepb.VmaKind_VMA_HUGETLB_ANON {
				mm.Vmas = append(mm.Vmas, v)
				continue
			}
		}
		switch v.Kind {
		case imagepb.VmaKind_VMA_FILE_PRIVATE, imagepb.VmaKind_VMA_FILE_SHARED, imagepb.VmaKind_VMA_MEMFD, imagepb.VmaKind_VMA_ANON_SHARED:
			id, err := d.files.AddMapped(pid, s, fopts)
			if err != nil {
				return nil, fmt.Errorf("vma %#x-%#x: %w", s.Start, s.End, err)
			}
			v.FileId = id
			d.files.NoteMapping(pid, s, id) // for the locks held through it
			if v.Kind == imagepb.VmaKind_VMA_MEMFD || v.Kind == imagepb.VmaKind_VMA_ANON_SHARED {
				v.ShmemId = s.Inode
			}
			if (exe == s.Path || s.Deleted && exe == s.Path+" (deleted)") && mm.ExeFileId == 0 {
				mm.ExeFileId = id
			}
		}
		if s.HasFlag("gu") {
			// may hold guard pages (MADV_GUARD_INSTALL): find them
			if pagemap == nil {
				if pagemap, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", pid)); err != nil {
					return nil, err
				}
			}
			if v.GuardRegions, err = memory.GuardRegions(pagemap, s.Start, s.End); err != nil {
				return nil, fmt.Errorf("vma %#x-%#x (guard pages): %w", s.Start, s.End, err)
			}
		}
		// Nothing private to save in a VMA without anonymous or swapped
		// pages: skip reading its pagemap.
		if s.Anonymous == 0 && s.Swap == 0 {
			v.NoPages = true
		}
		mm.Vmas = append(mm.Vmas, v)
	}
	if mm.ExeFileId == 0 {
		// exe not mapped (unusual): record it as a plain file
		id, err := d.files.AddPath(exe)
		if err != nil {
			return nil, fmt.Errorf("exe %s: %w", exe, err)
		}
		mm.ExeFileId = id
	}
	return mm, nil
}

// dumpPages writes the private pages of every process, in parallel (the
// kernel lets any thread read another process's memory), then each shared
// memory object once.
func (d *dumper) dumpPages() error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		total memory.Stats
	)
	if err := d.findCowShared(); err != nil {
		return err
	}
	trace("findCowShared")
	sem := make(chan struct{}, max(1, d.opts.Jobs))
	for _, t := range d.tasks {
		if t.zombie {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(t *task) {
			defer wg.Done()
			defer func() { <-sem }()
			var st memory.Stats
			err := d.dumpTaskPages(t, &st)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = fmt.Errorf("pid %d: memory: %w", t.pid, err)
			}
			total.PagesScanned += st.PagesScanned
			total.PagesWritten += st.PagesWritten
			total.PagesZero += st.PagesZero
		}(t)
	}
	wg.Wait()
	trace("task pages")
	if first != nil {
		return first
	}
	for _, o := range d.files.Objects {
		ow, err := d.w.CreatePages(fmt.Sprintf("shmem-%d", o.Ino))
		if err != nil {
			return err
		}
		// an *os.File of its own (a dup): the table closes o.Fd itself,
		// and an os.File on o.Fd would close that number again when the
		// GC finalizes it, whatever file has it by then (an image file)
		nfd, err := unix.Dup(o.Fd)
		if err != nil {
			ow.Close()
			return fmt.Errorf("shared memory object ino %d: dup: %w", o.Ino, err)
		}
		f := os.NewFile(uintptr(nfd), "shmem")
		err = memory.DumpObject(f, o.Size, ow, &total)
		f.Close()
		if cerr := ow.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("shared memory object ino %d: %w", o.Ino, err)
		}
	}
	d.st.PagesScanned, d.st.PagesWritten, d.st.PagesZero = total.PagesScanned, total.PagesWritten, total.PagesZero
	if d.pm != nil {
		d.st.PagesFromParent, d.st.PagesDirty = d.pm.stats.fromParent, d.pm.stats.dirty
	}
	return nil
}

func (d *dumper) dumpTaskPages(t *task, st *memory.Stats) error {
	mf, err := os.Open(fmt.Sprintf("/proc/%d/mem", t.pid))
	if err != nil {
		return err
	}
	defer mf.Close()
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", t.pid))
	if err != nil {
		return err
	}
	defer pm.Close()
	pw, err := d.w.CreatePages(fmt.Sprint(t.pid))
	if err != nil {
		return err
	}
	r := &memory.Reader{Pid: t.pid, Mem: mf, Pagemap: pm, Ctx: d.ctx, Skip: t.mm.CowParentRuns}
	if d.pm != nil {
		if err := d.pm.prepare(t.pid, t.mm, false); err != nil {
			pw.Close()
			return err
		}
	}
	if err := d.writeTaskPages(t, r, pw, st); err != nil {
		pw.Close()
		return err
	}
	trace("pid %d pages written", t.pid)
	t0 := time.Now()
	if err := pw.Close(); err != nil {
		return err
	}
	if debugSpliceOn {
		fmt.Fprintf(os.Stderr, "pages: pid %d: pages file closed (hashing done) in %v\n", t.pid, time.Since(t0).Round(time.Millisecond))
	}
	return d.pm.writeParentmap(d.w, t.pid)
}

// writeTaskPages writes t's private pages to pw: through pipes (a splice
// mover set up in t for the time of it, see openMover) when they are
// many, else (and for what pipes cannot take) through ctr-cr's buffer.
func (d *dumper) writeTaskPages(t *task, r *memory.Reader, pw *image.PagesWriter, st *memory.Stats) error {
	t0 := time.Now()
	runs, err := r.PageList(d.pm.vmas(t.pid, t.mm.Vmas), st)
	if err != nil {
		return err
	}
	trace("pid %d PageList", t.pid)
	if debugSpliceOn {
		fmt.Fprintf(os.Stderr, "pages: pid %d: page list in %v\n", t.pid, time.Since(t0).Round(time.Millisecond))
	}
	mv, err := d.openMover(t, runs)
	if err != nil {
		return err
	}
	if mv == nil {
		return r.WriteRuns(runs, pw, st)
	}
	r.Mover = mv.mover
	err = r.WriteRuns(runs, pw, st)
	if cerr := mv.close(d); err == nil {
		err = cerr
	}
	return err
}
