package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
)

// task is one process of the dumped tree.
type task struct {
	tr     *ptrace.Tracer // the thread that seized this process
	pid    int
	ppid   int // 0 for the root
	status *procfs.Status
	stat   *procfs.Stat
	p      *ptrace.Process // nil for a zombie
	zombie bool
	remote *ptrace.Remote
	core   *imagepb.TaskCore
	mm     *imagepb.MmEntry
	fds    []*imagepb.FdEntry
	brk    uint64
}

// seizeTree seizes root and all its descendants, parents before children:
// a parent is stopped before its children are listed, so none can be forked
// unseen; a child is seized before its own children are listed. Zombies are
// recorded, not seized. On error everything seized is released.
func seizeTree(root int, tracers []*ptrace.Tracer) ([]*task, error) {
	var tasks []*task
	release := func() {
		for _, t := range tasks {
			if t.p != nil {
				t.tr.Do(func() { t.p.Release() })
			}
		}
	}
	queue := []*task{{pid: root}}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		st, err := procfs.ReadStat(t.pid)
		if err != nil {
			if t.ppid != 0 && errors.Is(err, os.ErrNotExist) {
				continue // reaped meanwhile
			}
			release()
			return nil, fmt.Errorf("pid %d: %w", t.pid, err)
		}
		t.stat = st
		if st.State == 'Z' || st.State == 'X' {
			if t.ppid == 0 {
				release()
				return nil, fmt.Errorf("pid %d is a zombie", t.pid)
			}
			t.zombie = true
			tasks = append(tasks, t)
			continue
		}
		t.tr = tracers[len(tasks)%len(tracers)]
		var p *ptrace.Process
		t.tr.Do(func() { p, err = ptrace.SeizeProcess(t.pid) })
		if err != nil {
			if t.ppid != 0 && errors.Is(err, unix.ESRCH) {
				// exited while we looked: a zombie now, or gone
				if st, serr := procfs.ReadStat(t.pid); serr == nil && (st.State == 'Z' || st.State == 'X') {
					t.stat, t.zombie = st, true
					tasks = append(tasks, t)
				}
				continue
			}
			release()
			return nil, fmt.Errorf("seize pid %d: %w", t.pid, err)
		}
		t.p = p
		tasks = append(tasks, t)
		if p.Threads[0].Stopped {
			// A task in a group stop re-enters it at every resume, so no
			// syscall could be injected: end the group stop while the
			// threads are held in their ptrace traps (a default SIGCONT
			// is discarded, nothing is queued); it is stopped again when
			// released, and restored stopped.
			if err := unix.Kill(t.pid, unix.SIGCONT); err != nil {
				release()
				return nil, fmt.Errorf("pid %d: SIGCONT: %w", t.pid, err)
			}
		}
		// stat again: state and ids as of the stop
		if t.stat, err = procfs.ReadStat(t.pid); err != nil {
			release()
			return nil, err
		}
		if t.status, err = procfs.ReadStatus(t.pid); err != nil {
			release()
			return nil, err
		}
		kids, err := children(t.pid, p)
		if err != nil {
			release()
			return nil, err
		}
		for _, k := range kids {
			queue = append(queue, &task{pid: k, ppid: t.pid})
		}
	}
	return tasks, nil
}

// children lists the children of every thread of a stopped process.
func children(pid int, p *ptrace.Process) ([]int, error) {
	var out []int
	for _, th := range p.Threads {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, th.Tid))
		if err != nil {
			return nil, fmt.Errorf("pid %d: children: %w", pid, err)
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// kcmp compares kernel objects of two processes (KCMP_FILES, KCMP_FS, ...).
func kcmp(pid1, pid2, typ int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), 0, 0, 0)
	return e == 0 && r == 0
}

const (
	kcmpFiles = 2
	kcmpFs    = 3
)

// sharedIDs numbers the fd tables and fs infos of the live tasks: tasks
// sharing one (CLONE_FILES / CLONE_FS) get the same id.
func sharedIDs(tasks []*task, typ int) map[int]uint32 {
	ids := map[int]uint32{}
	var reps []int
	for _, t := range tasks {
		if t.zombie {
			continue
		}
		id := uint32(0)
		for i, r := range reps {
			if kcmp(r, t.pid, typ) {
				id = uint32(i + 1)
				break
			}
		}
		if id == 0 {
			reps = append(reps, t.pid)
			id = uint32(len(reps))
		}
		ids[t.pid] = id
	}
	return ids
}
