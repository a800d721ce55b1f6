package dump

import (
	"encoding/binary"
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
	// contQueued: the SIGCONT that ended the task's group stop was queued
	// (its threads block every signal while seized) where none was
	// pending before; collectCore takes it out of the queue again.
	contQueued bool
	// chldQueued: that SIGCONT made the kernel queue a SIGCHLD
	// (CLD_CONTINUED) in the parent, which had none pending.
	chldQueued bool
	// stopReportTaken: stopped, and its parent (in the tree) already
	// collected the stop report with wait.
	stopReportTaken bool
	// sigchldWasPending: the task had a SIGCHLD pending before the dump
	// made any child send one (set with sigchldChecked).
	sigchldChecked, sigchldWasPending bool
	groupStopped                      bool // was in a group stop when seized
}

// parentOf finds t's parent among tasks.
func parentOf(tasks []*task, t *task) *task {
	for _, p := range tasks {
		if p.pid == t.ppid && p != t {
			return p
		}
	}
	return nil
}

// endGroupStop ends the group stop of seized task t: it would re-enter it
// at every resume, so no syscall could be injected. The SIGCONT is
// discarded at once by the kernel when not blocked and not handled;
// otherwise it is queued, which t.contQueued records.
//
// The kernel also tells the parent (CLD_CONTINUED), from the child the next
// time it goes through its signal checks: that is made to happen at once
// (ptrace.FlushNotifications), so the parent's queue holds the SIGCHLD
// before anything of the parent is read. A traced parent gets it queued
// even when it would ignore it. When the parent is in the tree and had no
// SIGCHLD pending before, t.chldQueued records it, and the parent's
// collectCore takes it out again.
//
// Before all that, the parent (when in the tree, seized) is asked whether
// it still has the stop report to collect (t.stopReportTaken when not).
func endGroupStop(t *task, parent *task) error {
	t.groupStopped = true
	before, err := procfs.ReadStatus(t.pid)
	if err != nil {
		return err
	}
	if parent != nil && parent.p != nil {
		pending, err := stopReportPending(parent, t, before)
		if err != nil {
			return fmt.Errorf("pid %d: stop report of child %d: %w", parent.pid, t.pid, err)
		}
		t.stopReportTaken = !pending
	}
	var parentBefore *procfs.Status
	if t.ppid != 0 {
		if parentBefore, err = procfs.ReadStatus(t.ppid); err != nil {
			return err
		}
	}
	if err := unix.Kill(t.pid, unix.SIGCONT); err != nil {
		return fmt.Errorf("pid %d: SIGCONT: %w", t.pid, err)
	}
	ours := before.ShdPnd&sigcontBit == 0
	var taken [][]byte
	t.tr.Do(func() { taken, err = ptrace.FlushNotifications(t.p.Threads[0].Tid) })
	for _, si := range taken {
		if ours && binary.LittleEndian.Uint32(si) == uint32(unix.SIGCONT) {
			ours = false // our own SIGCONT, taken for delivery: gone
			continue
		}
		t.p.Threads[0].Stolen = append(t.p.Threads[0].Stolen, si)
	}
	if err != nil {
		return fmt.Errorf("pid %d: %w", t.pid, err)
	}
	t.contQueued = ours
	if parent != nil && parentBefore != nil && !parent.sigchldChecked {
		parent.sigchldChecked = true
		parent.sigchldWasPending = parentBefore.ShdPnd&sigchldBit != 0
	}
	if parentBefore != nil && parentBefore.ShdPnd&sigchldBit == 0 {
		if after, err := procfs.ReadStatus(t.ppid); err == nil && after.ShdPnd&sigchldBit != 0 {
			t.chldQueued = true
		}
	}
	return nil
}

const (
	sigcontBit = 1 << (unix.SIGCONT - 1)
	sigchldBit = 1 << (unix.SIGCHLD - 1)
)

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
			if t.ppid != 0 && (errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EPERM)) {
				// exited while we looked: a zombie now (which
				// PTRACE_SEIZE refuses with EPERM), or gone
				st, serr := procfs.ReadStat(t.pid)
				if serr == nil && (st.State == 'Z' || st.State == 'X') {
					t.stat, t.zombie = st, true
					tasks = append(tasks, t)
					continue
				}
				if errors.Is(err, unix.ESRCH) || errors.Is(serr, os.ErrNotExist) {
					continue
				}
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
			if err := endGroupStop(t, parentOf(tasks, t)); err != nil {
				release()
				return nil, err
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

// seizeTreeFrozen seizes root and its descendants while their cgroup is
// frozen (a container): nothing in the tree can fork, exit or run, so the
// tree is listed at once, every thread of every process is seized and
// interrupted, then thaw lets the threads reach their interrupt stops
// without running user code, and the stops are collected. On error every
// process is let go and the cgroup is thawed all the same.
func seizeTreeFrozen(root int, tracers []*ptrace.Tracer, thaw func() error) ([]*task, error) {
	var tasks []*task
	var firstErr error
	queue := []*task{{pid: root}}
	for len(queue) > 0 && firstErr == nil {
		t := queue[0]
		queue = queue[1:]
		st, err := procfs.ReadStat(t.pid)
		if err != nil {
			firstErr = fmt.Errorf("pid %d: %w", t.pid, err)
			break
		}
		t.stat = st
		if st.State == 'Z' || st.State == 'X' {
			if t.ppid == 0 {
				firstErr = fmt.Errorf("pid %d is a zombie", t.pid)
				break
			}
			t.zombie = true
			tasks = append(tasks, t)
			continue
		}
		t.tr = tracers[len(tasks)%len(tracers)]
		var p *ptrace.Process
		t.tr.Do(func() { p, err = ptrace.SeizeFrozen(t.pid) })
		t.p = p
		tasks = append(tasks, t)
		if err != nil {
			firstErr = fmt.Errorf("seize pid %d: %w", t.pid, err)
			break
		}
		kids, err := allChildren(t.pid)
		if err != nil {
			firstErr = err
			break
		}
		for _, k := range kids {
			queue = append(queue, &task{pid: k, ppid: t.pid})
		}
	}
	if err := thaw(); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("thaw: %w", err)
	}
	waited := 0
	if firstErr == nil {
		for _, t := range tasks {
			if t.p == nil {
				waited++
				continue
			}
			var err error
			t.tr.Do(func() { err = t.p.WaitStops() })
			if err != nil {
				firstErr = fmt.Errorf("seize pid %d: %w", t.pid, err)
				t.p = nil // WaitStops let it go
				break
			}
			waited++
		}
	}
	if firstErr != nil {
		for i, t := range tasks {
			if t.p == nil {
				continue
			}
			if i < waited {
				t.tr.Do(func() { t.p.Release() })
			} else {
				t.tr.Do(func() { t.p.Abandon() })
			}
		}
		return nil, firstErr
	}
	for _, t := range tasks {
		if t.p == nil {
			continue
		}
		if t.p.Threads[0].Stopped {
			// see seizeTree: end the group stop while held in ptrace traps
			if err := endGroupStop(t, parentOf(tasks, t)); err != nil {
				releaseAll(tasks)
				return nil, err
			}
		}
		var err error
		if t.stat, err = procfs.ReadStat(t.pid); err == nil {
			t.status, err = procfs.ReadStatus(t.pid)
		}
		if err != nil {
			releaseAll(tasks)
			return nil, err
		}
	}
	return tasks, nil
}

// releaseAll lets every seized process of tasks go.
func releaseAll(tasks []*task) {
	for _, t := range tasks {
		if t.p != nil {
			t.tr.Do(func() { t.p.Release() })
		}
	}
}

// allChildren lists the children of every thread of pid (from /proc, for
// a process that cannot change: frozen).
func allChildren(pid int) ([]int, error) { return procfs.Children(pid) }
