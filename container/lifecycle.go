package container

import (
	"context"
	"fmt"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/core/lifecycle"
)

// FreezerNotify is the dump's lifecycle (core/lifecycle) for a tree whose
// cgroup the caller froze before the dump (dump.Options.Frozen): the
// seized tree is thawed once every thread has its stop queued and, when
// Refreeze is set (a paused container, dump.Options.StayFrozen), frozen
// again as it is released, before any task can run. ctr-cr dump
// --freeze-cgroup uses it too.
type FreezerNotify struct {
	lifecycle.Base
	Cgroup   *cgroup.Cgroup
	Refreeze bool
}

// Seized thaws the cgroup: the seized threads reach their stops.
func (n *FreezerNotify) Seized(int) error { return n.Cgroup.Thaw() }

// Releasing freezes the cgroup again (Refreeze) while the released tree's
// tasks are still in their stops.
func (n *FreezerNotify) Releasing(int) error {
	if !n.Refreeze {
		return nil
	}
	if err := n.Cgroup.Freeze(context.Background()); err != nil {
		return fmt.Errorf("freezing the cgroup again: %w", err)
	}
	return nil
}

// restoreNotify is a container restore's lifecycle: before puts the
// namespaces' state back into the sandbox of the adopted init pid and runs
// the OCI hooks before the tree (BeforeTasksRun); after finishes the IPC
// namespace once the restored tasks run (AfterRestore).
type restoreNotify struct {
	lifecycle.Base
	before, after func(pid int) error
}

func (n *restoreNotify) BeforeTasksRun(pid int) error { return n.before(pid) }
func (n *restoreNotify) AfterRestore(pid int) error   { return n.after(pid) }
