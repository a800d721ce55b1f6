package restore

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/lazy"
	"github.com/ctr-cr/ctr-cr/core/memory"
)

const archMapVdso64 = 0x2003

// restoreMemory recreates the memory objects (memfd, shared anonymous), the
// vDSO at its old address, every VMA, and fills the private pages.
func (r *restorer) restoreMemory() error {
	finish, err := r.startMemory()
	if err != nil {
		return err
	}
	return finish()
}

// startMemory is restoreMemory up to its last batch (the task's reads of
// its pages, the guards, protections and seals), which it starts without
// waiting: finish (to be called once, before anything else is injected
// into the task) waits for it and checks everything. Meanwhile the tracer
// may restore other tasks (tree.go's pipeline).
func (r *restorer) startMemory() (finish func() error, err error) {
	// the pages' checksum, computed while everything else of the memory
	// is made: a mismatch fails the restore before the task ever runs
	verified := r.verifyPages()
	wrote := func() (uint64, error) { return 0, nil }
	launched := false
	defer func() {
		if !launched { // failed before the last batch: wait for the helpers
			wrote()
			if verr := verified(); err == nil {
				err = verr
			}
		}
	}()
	if err := r.createObjects(); err != nil {
		return nil, err
	}
	var vvar uint64
	for _, v := range r.pr.mm.Vmas {
		if (v.Kind == imagepb.VmaKind_VMA_VVAR || v.Kind == imagepb.VmaKind_VMA_VDSO) && vvar == 0 {
			vvar = v.Start
		}
	}
	stubFds, err := r.installMapFiles(vvar)
	if err != nil {
		return nil, err
	}
	pagesFd, hasPagesFd := stubFds[pagesFileKey]
	delete(stubFds, pagesFileKey) // closed once the task has read it
	// every mapping, its madvise flags and the close of the files, in one
	// batch (a Go program has ~30 mappings)
	b := r.batch(0)
	if err := r.addMapLocks(b, stubFds); err != nil {
		return nil, err
	}
	var protect, sysv, apart []*imagepb.Vma
	var prev *imagepb.Vma
	for i, v := range r.pr.mm.Vmas {
		if memory.Special(v.Kind) {
			continue
		}
		if v.Kind == imagepb.VmaKind_VMA_SYSV_SHM {
			sysv = append(sysv, v)
			continue
		}
		mapped := prev
		prev = v
		if r.cow.isEarly(v) {
			continue // mapped and filled before the fork (cowfork.go)
		}
		if staysApart(mapped, v) || r.cow.mergesIntoNext(r.pr.mm.Vmas, i) {
			apart = append(apart, v)
			continue
		}
		later, err := r.mapVma(b, v, stubFds)
		if err != nil {
			return nil, fmt.Errorf("vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
		}
		if later {
			protect = append(protect, v)
		}
	}
	for _, fd := range stubFds {
		b.add("close", unix.SYS_CLOSE, fd)
	}
	if _, err := b.run(); err != nil {
		return nil, err
	}
	later, err := r.mapApart(apart)
	if err != nil {
		return nil, err
	}
	protect = append(protect, later...)
	for _, v := range sysv {
		if err := r.attachSysv(v); err != nil {
			return nil, fmt.Errorf("vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
		}
		mb := r.batch(0)
		addMadvise(mb, v)
		if _, err := mb.run(); err != nil {
			return nil, err
		}
	}
	maps, err := r.checkSpecial()
	if err != nil {
		return nil, err
	}
	var lazyRuns, lazyAll []lazy.Run
	var reads []taskRead
	if r.tree.lazy != nil {
		// lazy.go: the checksum is verified by the session's pass
		if lazyRuns, lazyAll, err = r.fillLazy(); err != nil {
			return nil, err
		}
	} else {
		// the pages the task cannot write itself (read-only VMAs) first,
		// through /proc/PID/mem; the task's own reads go in the last batch
		var ours []memory.PagePart
		var n uint64
		reads, ours, n, err = r.fillOwnPages(maps, hasPagesFd, unsettledSpans(r.pr.mm.Vmas, protect))
		r.st.PagesRestored += n
		if err != nil {
			return nil, err
		}
		pagesFile, _ := r.pr.pages.Raw().(*os.File)
		wrote = r.writePagesAsync(pagesFile, ours)
	}
	if r.pr.chain != nil && r.tree.lazy == nil { // lazy: fillLazy did it
		n, err := r.pr.chain.fill(memAt{r.mem})
		r.st.PagesRestored += n
		if err != nil {
			return nil, fmt.Errorf("pages from the parent images: %w", err)
		}
	}
	// Guard pages go in once the pages around them are written. Drop the
	// write bit only once the pages are in: making an anonymous VMA
	// read-only before it has pages would also drop VM_ACCOUNT.
	pb := r.batch(0)
	if hasPagesFd {
		addReads(pb, pagesFd, reads)
	}
	addGuards(pb, r.pr.mm.Vmas)
	for _, v := range protect {
		pb.add(fmt.Sprintf("vma %#x-%#x: mprotect", v.Start, v.End), unix.SYS_MPROTECT, v.Start, v.End-v.Start, uint64(v.Prot))
	}
	addSeals(pb, r.pr.mm.Vmas)
	wait, err := pb.start()
	if err != nil {
		return nil, err
	}
	launched = true
	return func() error {
		res, err := wait()
		wn, werr := wrote()
		r.st.PagesRestored += wn
		verr := verified()
		if err == nil {
			err = werr
		}
		if err == nil {
			var n uint64
			n, err = checkReads(res, reads)
			r.st.PagesRestored += n
			r.st.PagesTaskRead += n
		}
		if err == nil {
			err = r.registerLazy(lazyRuns, lazyAll)
		}
		if err == nil {
			err = verr
		}
		return err
	}, nil
}

// addSeals adds to b mseal for the VMAs whose VmFlags say "sl", once the
// VMAs are complete: a sealed one can no longer be changed at all. (Locked
// VMAs are locked again by restoreMlock, before the credentials.)
func addSeals(b *callBatch, vmas []*imagepb.Vma) {
	const sysMseal = 462
	for _, v := range vmas {
		if !memory.Special(v.Kind) && hasVmFlag(v, "sl") {
			b.add(fmt.Sprintf("vma %#x-%#x: mseal", v.Start, v.End), sysMseal, v.Start, v.End-v.Start, 0)
		}
	}
}

// installMapFiles opens the files the private and shared file mappings
// need (once per file and access) and installs them in the task in one
// batch of pidfd_getfd (after moving the vDSO to vvar, when not 0); it
// returns their numbers there by file key.
func (r *restorer) installMapFiles(vvar uint64) (map[string]uint64, error) {
	var keys []string
	b := r.batch(0)
	first := 0 // the calls before the pidfd_getfd ones
	if vvar != 0 {
		// the vDSO moved where it was, in the same round trip
		b.add("arch_prctl(ARCH_MAP_VDSO_64)", unix.SYS_ARCH_PRCTL, archMapVdso64, vvar)
		first = 1
	}
	seen := map[string]bool{}
	for _, v := range r.pr.mm.Vmas {
		switch v.Kind {
		case imagepb.VmaKind_VMA_FILE_PRIVATE, imagepb.VmaKind_VMA_FILE_SHARED, imagepb.VmaKind_VMA_MEMFD, imagepb.VmaKind_VMA_ANON_SHARED:
		default:
			continue
		}
		write := mapWritable(v)
		key := mapKey(v.FileId, write)
		if seen[key] {
			continue
		}
		seen[key] = true
		fd, err := r.opener.OpenForMap(v.FileId, write)
		if err != nil {
			return nil, fmt.Errorf("vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
		}
		b.add(fmt.Sprintf("pidfd_getfd (file of vma %#x-%#x %s)", v.Start, v.End, v.Name), unix.SYS_PIDFD_GETFD, r.pidfd, uint64(fd), 0)
		keys = append(keys, key)
	}
	if fd, ok := r.pagesFileFd(); ok {
		b.add("pidfd_getfd (pages file)", unix.SYS_PIDFD_GETFD, r.pidfd, uint64(fd), 0)
		keys = append(keys, pagesFileKey)
	}
	res, err := b.run()
	if err != nil {
		return nil, err
	}
	fds := make(map[string]uint64, len(keys))
	for k, key := range keys {
		fds[key] = res[first+k]
	}
	return fds, nil
}

func mapKey(fileID uint32, write bool) string { return fmt.Sprintf("%d/%v", fileID, write) }

// mapWritable reports whether the file of shared mapping v must be opened
// for writing: the original was made through a writable fd, which the
// kernel records as VM_MAYWRITE ("mw"); mprotect cannot change it, so a
// mapping made writable and then read-only keeps it (and may be made
// writable again), one made through a read-only fd lacks it. Private
// mappings never need a writable file. Images without VmFlags fall back
// to the protection.
func mapWritable(v *imagepb.Vma) bool {
	if !v.Shared {
		return false
	}
	if v.VmFlags == "" {
		return v.Prot&unix.PROT_WRITE != 0
	}
	return hasVmFlag(v, "mw")
}

// hasVmFlag reports whether v's smaps VmFlags include flag.
func hasVmFlag(v *imagepb.Vma, flag string) bool {
	return strings.Contains(" "+v.VmFlags+" ", " "+flag+" ")
}

// checkSpecial verifies that the kernel put vDSO/vvar where they were;
// it returns the task's maps text it read.
func (r *restorer) checkSpecial() (string, error) {
	maps, err := readMapsText(r.pid)
	if err != nil {
		return "", err
	}
	for _, v := range r.pr.mm.Vmas {
		if v.Kind == imagepb.VmaKind_VMA_VDSO && !strings.Contains(maps, fmt.Sprintf("%x-%x", v.Start, v.End)) {
			return "", fmt.Errorf("vdso not at %#x-%#x after ARCH_MAP_VDSO_64 (different kernel?)", v.Start, v.End)
		}
	}
	return maps, nil
}

// mapVma adds the mmap of v (with the file installed for it in stubFds)
// and its madvise flags to b; it reports whether v must still be
// mprotect'ed to its final protection once its pages are written. SysV
// attachments are not made here (attachSysv).
func (r *restorer) mapVma(b *callBatch, v *imagepb.Vma, stubFds map[string]uint64) (bool, error) {
	size := v.End - v.Start
	prot := uint64(v.Prot)
	mprot := prot
	if v.Account && prot&unix.PROT_WRITE == 0 && !v.Shared {
		// VM_ACCOUNT comes only with a writable private mapping: map it
		// writable, then drop the write bit, as the original was made.
		mprot |= unix.PROT_WRITE
	}
	flags := uint64(unix.MAP_FIXED)
	const mapDroppable = 0x08
	switch {
	case v.Shared:
		flags |= unix.MAP_SHARED
	case hasVmFlag(v, "dp") && v.Kind == imagepb.VmaKind_VMA_ANON_PRIVATE:
		// MAP_DROPPABLE (Linux 6.11+, vgetrandom state): its own type
		flags |= mapDroppable
	default:
		flags |= unix.MAP_PRIVATE
	}
	if hasVmFlag(v, "nr") {
		// VM_NORESERVE: mapped with MAP_NORESERVE, hence also no "ac"
		flags |= unix.MAP_NORESERVE
	}
	what := fmt.Sprintf("vma %#x-%#x %s: mmap", v.Start, v.End, v.Name)
	switch v.Kind {
	case imagepb.VmaKind_VMA_ANON_PRIVATE, imagepb.VmaKind_VMA_HEAP, imagepb.VmaKind_VMA_STACK:
		flags |= unix.MAP_ANONYMOUS
		if v.Growsdown {
			flags |= unix.MAP_GROWSDOWN
		}
		b.add(what, unix.SYS_MMAP, v.Start, size, mprot, flags, ^uint64(0), 0)
	case imagepb.VmaKind_VMA_HUGETLB_ANON:
		if v.Shared {
			return false, fmt.Errorf("shared anonymous hugetlb mapping: not supported")
		}
		hf, err := memory.HugetlbMapFlags(v)
		if err != nil {
			return false, fmt.Errorf("hugetlb mapping: %w", err)
		}
		what += fmt.Sprintf(" MAP_HUGETLB (%d kB pages: are enough huge pages free? vm.nr_hugepages)", v.HugetlbPageSize>>10)
		b.add(what, unix.SYS_MMAP, v.Start, size, mprot, flags|hf, ^uint64(0), 0)
	case imagepb.VmaKind_VMA_FILE_PRIVATE, imagepb.VmaKind_VMA_FILE_SHARED, imagepb.VmaKind_VMA_MEMFD, imagepb.VmaKind_VMA_ANON_SHARED:
		sfd, ok := stubFds[mapKey(v.FileId, mapWritable(v))]
		if !ok {
			return false, fmt.Errorf("file %d not installed", v.FileId)
		}
		b.add(what, unix.SYS_MMAP, v.Start, size, mprot, flags, sfd, v.Pgoff)
	default:
		return false, fmt.Errorf("unknown vma kind %v", v.Kind)
	}
	addMadvise(b, v)
	return mprot != prot, nil
}

// addGuards adds the MADV_GUARD_INSTALL of every guard region to b.
func addGuards(b *callBatch, vmas []*imagepb.Vma) {
	for _, v := range vmas {
		for _, g := range v.GuardRegions {
			b.add(fmt.Sprintf("vma %#x-%#x: guard pages %#x-%#x", v.Start, v.End, g.Start, g.End), unix.SYS_MADVISE, g.Start, g.End-g.Start, memory.MadvGuardInstall)
		}
	}
}

// addMadvise adds the madvise calls that give v its advice flags (from
// VmFlags) to b.
func addMadvise(b *callBatch, v *imagepb.Vma) {
	flagSet := " " + v.VmFlags + " "
	for _, m := range memory.Madvise {
		if strings.Contains(flagSet, " "+m.Flag+" ") {
			b.add(fmt.Sprintf("vma %#x-%#x: madvise %s", v.Start, v.End, m.Flag), unix.SYS_MADVISE, v.Start, v.End-v.Start, m.Advice)
		}
	}
	if hasVmFlag(v, "gu") && len(v.GuardRegions) == 0 && v.Kind != imagepb.VmaKind_VMA_SYSV_SHM {
		// "gu" stays once a guard page was installed, even after it is
		// removed: install and remove one (before any page is written)
		// to carry the flag
		b.add(fmt.Sprintf("vma %#x-%#x: madvise guard flag", v.Start, v.End), unix.SYS_MADVISE, v.Start, memory.PageSize, memory.MadvGuardInstall)
		b.add(fmt.Sprintf("vma %#x-%#x: madvise guard flag", v.Start, v.End), unix.SYS_MADVISE, v.Start, memory.PageSize, memory.MadvGuardRemove)
	}
}

// createObjects makes, in ctr-cr, each memfd and shared anonymous object of
// the image with its size and contents; mappings and fds then use them.
func (r *restorer) createObjects() error {
	fl, err := r.img.Files()
	if err != nil {
		return err
	}
	for _, f := range fl {
		if !files.IsMemObject(f) {
			continue
		}
		if _, done := r.opener.Object(f.Id); done {
			continue // made for another process of the tree: one object
		}
		if fd, ok := r.opener.ObjectOf(f); ok {
			// another entry of the same inode (another open file
			// description, or a mapping): one object
			r.opener.AddObject(f.Id, fd)
			continue
		}
		var fd int
		if f.Kind == imagepb.FileKind_FILE_MEMFD {
			fd, err = files.CreateMemfd(f)
		} else {
			fd, err = r.shmemObject(f.Size, f.HugetlbPageSize)
		}
		if err != nil {
			return fmt.Errorf("memory object %d (%s): %w", f.Id, f.Path, err)
		}
		r.opener.AddObject(f.Id, fd)
		if f.Kind == imagepb.FileKind_FILE_MEMFD {
			if err := unix.Ftruncate(fd, f.Size); err != nil {
				return fmt.Errorf("memfd %s: ftruncate %d: %w", f.Path, f.Size, err)
			}
		}
		name := fmt.Sprintf("shmem-%d", f.Ino)
		if !r.img.Has("pagemap-" + name + ".img") {
			continue
		}
		_, entries, err := r.img.Pagemap(name)
		if err != nil {
			return err
		}
		pages, err := r.img.OpenPages(name)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Vaddr+e.NrPages*memory.PageSize > uint64(f.Size)+memory.PageSize-1 {
				pages.Close()
				return fmt.Errorf("pagemap-%s.img: run %#x+%d pages beyond the object size %d", name, e.Vaddr, e.NrPages, f.Size)
			}
		}
		if f.HugetlbPageSize != 0 {
			// hugetlbfs has no write(): fill through a mapping
			err = fillMapped(fd, f.Size, entries, pages)
		} else {
			_, err = memory.Fill(fdWriter(fd), entries, pages)
		}
		if err == nil {
			err = pages.Verify()
		}
		pages.Close()
		if err == nil && f.Kind == imagepb.FileKind_FILE_MEMFD {
			// pages are whole: cut the object back to its exact size
			err = unix.Ftruncate(fd, f.Size)
		}
		if err != nil {
			return fmt.Errorf("memory object %s: %w", f.Path, err)
		}
	}
	for id, fd := range r.opener.Objects() {
		if f, _ := r.opener.Entry(id); f != nil && f.Kind == imagepb.FileKind_FILE_MEMFD {
			if err := files.SealMemfdEarly(fd, f, !r.tree.sharedMayWrite(f)); err != nil {
				return err
			}
		}
	}
	return nil
}

// shmemObject creates a shared anonymous memory object of size bytes: it is
// mapped shared and anonymous in ctr-cr and reopened through map_files, so
// the restored mappings show "/dev/zero (deleted)" like the originals. With
// hugePage non-zero it is made of huge pages of that size (MAP_HUGETLB) and
// shows as "/anon_hugepage (deleted)".
func (r *restorer) shmemObject(size int64, hugePage uint64) (int, error) {
	if size <= 0 || size > 1<<40 {
		return -1, fmt.Errorf("bad shared memory size %d", size)
	}
	flags := unix.MAP_SHARED | unix.MAP_ANONYMOUS
	if hugePage != 0 {
		hf, err := memory.HugetlbObjectFlags(hugePage)
		if err != nil {
			return -1, err
		}
		if uint64(size)%hugePage != 0 {
			return -1, fmt.Errorf("hugetlb object size %d not a multiple of its page size %d", size, hugePage)
		}
		flags |= hf
	}
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		if hugePage != 0 {
			return -1, fmt.Errorf("MAP_HUGETLB of %d bytes (%d kB pages: are enough huge pages free? vm.nr_hugepages): %w", size, hugePage>>10, err)
		}
		return -1, err
	}
	defer unix.Munmap(b)
	start := addrOf(b)
	fd, err := unix.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", start, start+uint64(len(b))), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open shared memory object: %w", err)
	}
	return fd, nil
}

// fillMapped writes the pages of entries into memory object fd (size bytes)
// through a shared mapping of it.
func fillMapped(fd int, size int64, entries []*imagepb.PagemapEntry, pages io.ReaderAt) error {
	b, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the object to fill it: %w", err)
	}
	defer unix.Munmap(b)
	_, err = memory.Fill(sliceWriter(b), entries, pages)
	return err
}

// sliceWriter writes into a byte slice at offsets, refusing writes past it.
type sliceWriter []byte

func (s sliceWriter) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(s)) || int64(len(b)) > int64(len(s))-off {
		return 0, fmt.Errorf("write of %d bytes at %d beyond the object (%d bytes)", len(b), off, len(s))
	}
	return copy(s[off:], b), nil
}

type fdWriter int

func (f fdWriter) WriteAt(b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Pwrite(int(f), b[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// attachSysv attaches the SysV segment v.ShmemId (restored with the IPC
// namespace, same id) at v.Start with v's protection, and unmaps what lies
// beyond v of the segment (a VMA cut short by a partial munmap).
func (r *restorer) attachSysv(v *imagepb.Vma) error {
	if v.Pgoff != 0 {
		return fmt.Errorf("SysV shm %d: attachment at offset %d in the segment: unsupported", v.ShmemId, v.Pgoff)
	}
	if v.ShmemId > 1<<31 {
		return fmt.Errorf("SysV shm id %d", v.ShmemId)
	}
	const ipcStat, shmRdonly, shmExec = 2, 0o10000, 0o100000
	if _, err := r.call(0, "shmctl(IPC_STAT)", unix.SYS_SHMCTL, v.ShmemId, ipcStat, r.scratch); err != nil {
		return fmt.Errorf("SysV shm %d (restored with the IPC namespace?): %w", v.ShmemId, err)
	}
	b := make([]byte, 8)
	if err := r.mem.ReadAt(b, r.scratch+48); err != nil { // shm_segsz after struct ipc64_perm
		return err
	}
	segsz := (binary.LittleEndian.Uint64(b) + memory.PageSize - 1) &^ (memory.PageSize - 1)
	flags := uint64(0)
	if v.Prot&unix.PROT_WRITE == 0 {
		flags |= shmRdonly
	}
	if v.Prot&unix.PROT_EXEC != 0 {
		flags |= shmExec
	}
	addr, err := r.call(0, fmt.Sprintf("shmat(%d)", v.ShmemId), unix.SYS_SHMAT, v.ShmemId, v.Start, flags)
	if err != nil {
		return fmt.Errorf("SysV shm %d: %w", v.ShmemId, err)
	}
	if addr != v.Start {
		return fmt.Errorf("SysV shm %d attached at %#x, want %#x", v.ShmemId, addr, v.Start)
	}
	if size := v.End - v.Start; segsz > size {
		if _, err := r.call(0, "munmap SysV tail", unix.SYS_MUNMAP, v.End, segsz-size); err != nil {
			return err
		}
	}
	return nil
}
