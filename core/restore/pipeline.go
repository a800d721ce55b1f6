package restore

import (
	"fmt"
)

// restoreTasks restores every task of the tree but its registers, in the
// tree's order. Where it can, it overlaps one task's page fill (the last
// batch of its memory step, where the task reads its pages: most of a
// small task's restore) with the tracer's work on the tasks around it:
// task i's memory step is started, then task i-1's fill is waited for and
// the rest of task i-1 restored while task i fills. Each task still goes
// through its own steps in the same order; only the steps of neighbours
// interleave. Not with lazy pages (registered per task by the memory
// step), nor when tasks share an fd table (the fd numbers a task's fds
// get are predicted from the table, which a neighbour's memory step would
// change under it).
func (t *tree) restoreTasks() error {
	owners := map[uint32]bool{}
	pipelined := t.lazy == nil && !sharedFdTables(t.tasks)
	var pend *restorer
	var pendFinish func() error
	// flush finishes the pending task: its fill, then everything else
	flush := func() error {
		if pend == nil {
			return nil
		}
		r, finish := pend, pendFinish
		pend, pendFinish = nil, nil
		if err := finish(); err != nil {
			return fmt.Errorf("pid %d: memory: %w", r.pr.pst.Pid, err)
		}
		if err := r.restoreAfterMemory(); err != nil {
			return fmt.Errorf("pid %d: %w", r.pr.pst.Pid, err)
		}
		if err := t.ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		return nil
	}
	for _, r := range t.tasks {
		if r.pr.core == nil {
			continue
		}
		id := r.pr.pst.FilesId
		r.ownsFds = id == 0 || !owners[id]
		owners[id] = true
		if !pipelined {
			if err := r.restoreTask(); err != nil {
				return fmt.Errorf("pid %d: %w", r.pr.pst.Pid, err)
			}
			if err := t.ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
			continue
		}
		finish, err := r.startMemory()
		if err != nil {
			if pend != nil {
				pendFinish() // the restore fails: just wait for it
			}
			return fmt.Errorf("pid %d: memory: %w", r.pr.pst.Pid, err)
		}
		if err := flush(); err != nil {
			finish()
			return err
		}
		pend, pendFinish = r, finish
	}
	return flush()
}

// sharedFdTables reports whether two tasks of the tree share one fd table.
func sharedFdTables(tasks []*restorer) bool {
	seen := map[uint32]bool{}
	for _, r := range tasks {
		if r.pr.core == nil {
			continue
		}
		id := r.pr.pst.FilesId
		if id == 0 {
			continue
		}
		if seen[id] {
			return true
		}
		seen[id] = true
	}
	return false
}
