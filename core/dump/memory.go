package dump

import (
	"fmt"
	"os"
	"strings"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/memory"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// dumpMemory records every VMA and writes the pages that must be saved:
// private pages to pages-PID.img, shared memory objects (shared anonymous
// and memfd) once each to pages-shmem-INO.img.
func (d *dumper) dumpMemory(core *imagepb.TaskCore) (*imagepb.MmEntry, error) {
	pid := d.pid
	smaps, err := procfs.ReadSmaps(pid)
	if err != nil {
		return nil, err
	}
	stat, err := procfs.ReadStat(pid)
	if err != nil {
		return nil, err
	}
	brk := d.brk
	mm := &imagepb.MmEntry{
		StartCode: stat.StartCode, EndCode: stat.EndCode, StartData: stat.StartData, EndData: stat.EndData,
		StartBrk: stat.StartBrk, Brk: brk, StartStack: stat.StartStack, ArgStart: stat.ArgStart,
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
		switch v.Kind {
		case imagepb.VmaKind_VMA_FILE_PRIVATE, imagepb.VmaKind_VMA_FILE_SHARED, imagepb.VmaKind_VMA_MEMFD, imagepb.VmaKind_VMA_ANON_SHARED:
			if strings.HasPrefix(s.Path, "/SYSV") {
				return nil, fmt.Errorf("vma %#x-%#x: SysV shared memory is not supported yet", s.Start, s.End)
			}
			id, err := d.files.AddMapped(pid, s, fopts)
			if err != nil {
				return nil, fmt.Errorf("vma %#x-%#x: %w", s.Start, s.End, err)
			}
			v.FileId = id
			if v.Kind == imagepb.VmaKind_VMA_MEMFD || v.Kind == imagepb.VmaKind_VMA_ANON_SHARED {
				v.ShmemId = s.Inode
			}
			if exe == s.Path && mm.ExeFileId == 0 {
				mm.ExeFileId = id
			}
		}
		// Nothing private to save in a VMA without anonymous or swapped
		// pages: skip reading its pagemap.
		if s.Anonymous == 0 && s.Swap == 0 && v.Kind != imagepb.VmaKind_VMA_ANON_SHARED {
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
	mf, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	pw, err := d.w.CreatePages(fmt.Sprint(pid))
	if err != nil {
		return nil, err
	}
	var mst memory.Stats
	r := &memory.Reader{Pid: pid, Mem: mf, Pagemap: pm, Ctx: d.ctx}
	if err := r.DumpPrivate(mm.Vmas, pw, &mst); err != nil {
		pw.Close()
		return nil, err
	}
	if err := pw.Close(); err != nil {
		return nil, err
	}
	for _, o := range d.files.Objects {
		ow, err := d.w.CreatePages(fmt.Sprintf("shmem-%d", o.Ino))
		if err != nil {
			return nil, err
		}
		f := os.NewFile(uintptr(o.Fd), "shmem")
		err = memory.DumpObject(f, o.Size, ow, &mst)
		if cerr := ow.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("shared memory object ino %d: %w", o.Ino, err)
		}
	}
	d.st.PagesScanned, d.st.PagesWritten, d.st.PagesZero = mst.PagesScanned, mst.PagesWritten, mst.PagesZero
	return mm, nil
}
