package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
)

// installFds installs the fds entries (in order, as installFd would one by
// one, O_ASYNC turned on as setAsync does) with one syscall batch in the
// task instead of two or three injected calls per fd: a 20-process tree
// of Go programs made ~20 round trips a process here, 40% of its restore's
// round trips.
//
// pidfd_getfd gives a file the lowest free number, which a batch cannot
// pass on to the dup3 after it; so the numbers are predicted from the
// task's fd table as /proc shows it now (the task is stopped, its other
// threads are not created yet, and every task sharing its table is
// stopped: nothing else changes it) and checked against what the calls
// returned: a wrong guess fails the restore, naming the fd, rather than
// give back a wrong fd table.
func (r *restorer) installFds(entries []*imagepb.FdEntry) error {
	if len(entries) == 0 {
		return nil
	}
	ours := make([]int, len(entries))
	for i, e := range entries {
		our, err := r.opener.Open(e.FileId)
		if err != nil {
			return fmt.Errorf("fd %d: %w", e.Fd, err)
		}
		ours[i] = our
	}
	used, err := openFds(r.pid)
	if err != nil {
		return err
	}
	b := r.batch(0)
	type guess struct {
		call int // index of the pidfd_getfd among the batch's calls
		fd   uint64
		e    *imagepb.FdEntry
	}
	var guesses []guess
	calls := 0
	add := func(what string, nr uint64, args ...uint64) {
		b.add(what, nr, args...)
		calls++
	}
	for i, e := range entries {
		want := uint64(e.Fd)
		tmp := lowestFree(used)
		guesses = append(guesses, guess{calls, tmp, e})
		add(fmt.Sprintf("fd %d: pidfd_getfd", e.Fd), unix.SYS_PIDFD_GETFD, r.pidfd, uint64(ours[i]), 0)
		used[tmp] = true
		if tmp != want {
			fl := uint64(0)
			if e.Cloexec {
				fl = unix.O_CLOEXEC
			}
			add(fmt.Sprintf("fd %d: dup3", e.Fd), unix.SYS_DUP3, tmp, want, fl)
			add(fmt.Sprintf("fd %d: close", e.Fd), unix.SYS_CLOSE, tmp)
			used[want] = true
			delete(used, tmp)
		} else if !e.Cloexec {
			add(fmt.Sprintf("fd %d: fcntl(F_SETFD)", e.Fd), unix.SYS_FCNTL, want, unix.F_SETFD, 0)
		}
		if fl, ok := r.opener.AsyncOnce(e.FileId); ok {
			fl &^= unix.O_CLOEXEC
			add(fmt.Sprintf("fd %d: fcntl(F_SETFL) without O_ASYNC", e.Fd), unix.SYS_FCNTL, want, unix.F_SETFL, uint64(fl&^unix.O_ASYNC))
			add(fmt.Sprintf("fd %d: fcntl(F_SETFL %#o)", e.Fd, fl), unix.SYS_FCNTL, want, unix.F_SETFL, uint64(fl))
		}
	}
	res, err := b.run()
	if err != nil {
		return err
	}
	for _, g := range guesses {
		if got := res[g.call]; got != g.fd {
			return fmt.Errorf("fd %d: pidfd_getfd installed the file as fd %d, not fd %d as the task's fd table said", g.e.Fd, got, g.fd)
		}
	}
	return nil
}

// openFds returns the fds open in the stopped task pid, as a set.
func openFds(pid int) (map[uint64]bool, error) {
	open, err := procfs.Fds(pid)
	if err != nil {
		return nil, err
	}
	used := make(map[uint64]bool, len(open))
	for _, fd := range open {
		used[uint64(fd)] = true
	}
	return used, nil
}

// lowestFreeFd is the number the next file installed in the stopped task
// pid gets (the lowest free one), for a batch that names it before the
// call that installs it returns; nothing else may change the task's fd
// table meanwhile (see installFds), and the batch's result checks it.
func lowestFreeFd(pid int) (uint64, error) {
	used, err := openFds(pid)
	if err != nil {
		return 0, err
	}
	return lowestFree(used), nil
}

// lowestFree is the lowest number not in used.
func lowestFree(used map[uint64]bool) uint64 {
	n := uint64(0)
	for used[n] {
		n++
	}
	return n
}
