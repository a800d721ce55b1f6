// Package lifecycle is the engine's side of its callers' lifecycle: the
// points of a dump (core/dump) and of a restore (core/restore) at which a
// caller that owns more than the process tree (a container layer with its
// cgroup freezer and namespaces, a process restore that fills the
// namespaces it created) learns where the engine is and acts. The engine
// keeps only its own vocabulary (tasks, stops, the network lock); what a
// freezer, a runtime's init or a namespace part is stays with the caller,
// in its implementation of Notify. In the spirit of go-criu's Notify.
//
// Every hook is called from the engine's goroutine, locked to its OS
// thread, in the order the dump or restore reaches its point, and at most
// once per dump or restore. The thread is in ctr-cr's own namespaces,
// except that it may be in the tree's network namespace for Releasing and
// for the NetworkUnlocked of a failed restore: a hook that needs ctr-cr's
// network namespace (or runs programs) does so from another thread. A hook's error ends the operation
// under the engine's failure rules: a failed dump leaves the tree running
// as before the dump (released, the partial image removed); a failed
// restore leaves nothing behind (every task it created killed, the network
// lock removed). The error is returned wrapped, with %w.
package lifecycle

// Notify is implemented by the caller of a dump or a restore. Embed Base
// to implement only the hooks that matter.
type Notify interface {
	// Seized (dump) is called once every thread of the tree is seized
	// and has its stop queued, before anything of the tree is read. For a
	// tree the caller froze (dump.Options.Frozen) the threads are still
	// frozen then: Seized must thaw them (they then reach their stops
	// without running user code); it is also called when seizing the
	// frozen tree failed, so that the tree is thawed all the same, and its
	// error is then reported beside the seize's. An error fails the dump:
	// the tree is released, running as before.
	Seized(root int) error
	// Releasing (dump) is called as a seized tree is released (with
	// LeaveRunning, or after a failed dump), once every task's state is
	// put back. With dump.Options.StayFrozen every task that would run
	// is still in its ptrace stop then, and is detached only after
	// Releasing returns, so that the caller can freeze the tree again
	// (a paused container stays paused); without it Releasing comes once
	// every task is detached. An error is reported with the dump's
	// result; the tree is released all the same.
	Releasing(root int) error
	// NetworkLocked (restore) is called once the image's TCP connections
	// are locked again (the image carries a network lock and
	// restore.Options.Relock asked for it) in the network namespace of
	// pid (as for BeforeTasksRun), just before BeforeTasksRun: the caller
	// may bring that namespace's links up from here on, no peer's packet
	// reaches the sockets' ports before they are back. An error fails
	// the restore, the lock removed.
	NetworkLocked(pid int) error
	// BeforeTasksRun (restore) is called once per restore, before any
	// task of the image is created or runs and before the image's files
	// are checked or opened, with pid a process in the namespaces the
	// tree is restored into: the root the caller made
	// (restore.Options.Adopt), or else ctr-cr itself. The caller puts
	// back the state of those namespaces (mounts, IPC, UTS, links) and
	// runs what must come before the tree (a container's OCI prestart
	// hooks); the time it takes is not counted in the restore's Stats.
	// An error fails the restore: nothing the engine created is left
	// (the lock removed); what the hook made in those namespaces is the
	// caller's to remove (a container's sandbox is deleted).
	BeforeTasksRun(pid int) error
	// NetworkUnlocked (restore) is called, when the image carries a
	// network lock, once it is removed, with a process pid of the network
	// namespace it was in: after a successful restore (the connections
	// back, the tasks released), just before AfterRestore, and an error
	// then fails the restore (the tree is killed); after a failed
	// restore, before it returns, and an error is then added to the
	// restore's.
	NetworkUnlocked(pid int) error
	// AfterRestore (restore) is called once every task of the tree is
	// restored and released (they run), with the pid of the tree's root
	// in ctr-cr's pid namespace: the caller finishes what needs the
	// restored tasks (IPC segments they attached again). An error fails
	// the restore: every task of the tree is killed.
	AfterRestore(pid int) error
}

// Base implements every hook of Notify as doing nothing; callers embed it.
type Base struct{}

func (Base) Seized(int) error          { return nil }
func (Base) Releasing(int) error       { return nil }
func (Base) NetworkLocked(int) error   { return nil }
func (Base) BeforeTasksRun(int) error  { return nil }
func (Base) NetworkUnlocked(int) error { return nil }
func (Base) AfterRestore(int) error    { return nil }

// Or returns n, or Base when n is nil: the engine calls hooks without
// checking for a caller that gave none.
func Or(n Notify) Notify {
	if n == nil {
		return Base{}
	}
	return n
}
