package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// addMapLocks adds to b, ahead of the mappings, the locks of the open file
// descriptions only a mapping of this task kept (the entries' map_locks):
// they go on the very file installed for the mapping (stubFds), which the
// mapping then keeps once b closes it, so that the lock goes with the last
// munmap as before. A flock is injected, taken by the task itself (which
// /proc/locks names, as at dump time); an OFD lock names no task and is
// taken by ctr-cr on its own fd of that open file description.
func (r *restorer) addMapLocks(b *callBatch, stubFds map[string]uint64) error {
	done := map[string]bool{}
	for _, v := range r.pr.mm.Vmas {
		switch v.Kind {
		case imagepb.VmaKind_VMA_FILE_PRIVATE, imagepb.VmaKind_VMA_FILE_SHARED, imagepb.VmaKind_VMA_MEMFD, imagepb.VmaKind_VMA_ANON_SHARED:
		default:
			continue
		}
		f, err := r.opener.Entry(v.FileId)
		if err != nil {
			return fmt.Errorf("vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
		}
		key := mapKey(v.FileId, mapWritable(v))
		if len(f.MapLocks) == 0 || done[key] {
			continue
		}
		if f.Kind != imagepb.FileKind_FILE_REG {
			// a memory object's fd is shared with its fds: never dumped so
			return fmt.Errorf("vma %#x-%#x %s: file locks on a memory object's mapping", v.Start, v.End, v.Name)
		}
		done[key] = true
		sfd, ok := stubFds[key]
		if !ok {
			return fmt.Errorf("vma %#x-%#x %s: file %d not installed", v.Start, v.End, v.Name, v.FileId)
		}
		for _, fl := range f.MapLocks {
			if err := r.addMapLock(b, v, sfd, fl); err != nil {
				return fmt.Errorf("vma %#x-%#x %s: lock of its file: %s: %w", v.Start, v.End, v.Name, files.LockName(fl), err)
			}
		}
	}
	return nil
}

// addMapLock takes lock fl of the file installed as sfd for mapping v.
func (r *restorer) addMapLock(b *callBatch, v *imagepb.Vma, sfd uint64, fl *imagepb.FileLock) error {
	switch fl.Kind {
	case imagepb.FileLockKind_FILE_LOCK_FLOCK:
		if fl.Pid != r.pr.pst.Pid {
			return fmt.Errorf("taken by pid %d, not by pid %d which maps the file", fl.Pid, r.pr.pst.Pid)
		}
		b.add(fmt.Sprintf("vma %#x-%#x %s: flock (%s of the mapped file)", v.Start, v.End, v.Name, files.LockName(fl)), unix.SYS_FLOCK, sfd, uint64(files.FlockOp(fl)))
		return nil
	case imagepb.FileLockKind_FILE_LOCK_OFD:
		fd, err := r.opener.OpenForMap(v.FileId, mapWritable(v)) // ours of the installed file
		if err != nil {
			return err
		}
		return files.TakeOFDLock(fd, fl)
	}
	return fmt.Errorf("not a lock of an open file description")
}
