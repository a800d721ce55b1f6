package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
)

// tidOf maps a thread id of the image (dumper's namespace) to the
// restored thread's id in ours, for F_SETOWN_EX F_OWNER_TID.
func (t *tree) tidOf(tid int32) (int, bool) {
	for _, r := range t.tasks {
		if r.exited {
			continue
		}
		for _, th := range r.threads {
			if th.core != nil && th.core.Tid == tid {
				return th.tid, true
			}
		}
	}
	return 0, false
}

// setAsync turns O_ASYNC on for the fd e in the task (off first: open(2)
// keeps the flag without registering the file for SIGIO), once per open
// file description, so that it is registered with this fd number as it
// was with the one the task used.
func (r *restorer) setAsync(e *imagepb.FdEntry) error {
	fl, ok := r.opener.AsyncOnce(e.FileId)
	if !ok {
		return nil
	}
	fl &^= unix.O_CLOEXEC
	b := r.batch(0)
	b.add("fcntl(F_SETFL) without O_ASYNC", unix.SYS_FCNTL, uint64(e.Fd), unix.F_SETFL, uint64(fl&^unix.O_ASYNC))
	b.add(fmt.Sprintf("fcntl(F_SETFL %#o)", fl), unix.SYS_FCNTL, uint64(e.Fd), unix.F_SETFL, uint64(fl))
	_, err := b.run()
	return err
}
