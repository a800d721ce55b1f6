package container

import (
	"errors"
	"fmt"
	"time"

	"github.com/ctr-cr/ctr-cr/internal/cleanup"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/core/image"
)

// A part is one piece of a container's state that the process image does
// not hold and the container layer carries in container.json (State): the
// state of one of the container's own namespaces, or its cgroup's
// settings. Checkpoint captures every part, Restore validates every part
// and puts it back into the sandbox the runtime created, each through the
// loops below, which time every part (the namespace_ms figures of
// --print-stats, keyed by name).
type part interface {
	// name is the part's key in the stats: "ipc", "uts", "net", "mounts",
	// "cgroup".
	name() string
	// stage is when in a checkpoint the part captures (see captureStage).
	stage() captureStage
	// capture reads the part's state from the container into c.state
	// (nothing when the container has no such state of its own), and may
	// write files into c.dir, the staged image (a failed checkpoint
	// removes it whole).
	capture(c *captureEnv) error
	// validate checks the part's state as read back from an image.
	validate(st *State) error
	// restore puts the part's state (r.state) back into the sandbox
	// whose init is r.pid, before any task is restored. It returns the
	// undo of what it did, or nil when there is nothing to undo.
	restore(r *restoreEnv) (undo func() error, err error)
}

// A finisher is a part with a last step once the tasks are restored and
// before they run (IPC: segments dumped as removed, shm_rmid_forced).
type finisher interface {
	finish(r *restoreEnv) error
}

// captureStage is when, in a checkpoint, a part reads its state.
type captureStage int

const (
	// beforeFreeze: while the container still runs, before its cgroup
	// is frozen (the cgroup's settings: reading them then keeps them out
	// of the frozen time).
	beforeFreeze captureStage = iota
	// frozenRead: frozen, beside the scan for stray processes; reads only.
	frozenRead
	// frozenWrite: frozen, once the stray scan has answered: the part
	// writes files into the staged image (tmpfs-N.tar), and nothing is
	// written before the scan's answer.
	frozenWrite
)

// nsParts are the container's parts in the order a restore puts them back
// into the sandbox: IPC objects, hostname and domain name, network links
// (addresses, routes, sysctls), the mount tree with the tmpfs contents,
// and last the cgroup settings. validate and capture go through it in the
// same order, capture by stage. Around the parts:
//
//	checkpoint: runtime state, config.json
//	            cgroup part (beforeFreeze)
//	            freeze; the stray scan starts
//	            ipc, uts, net parts (frozenRead), beside the stray scan
//	            the stray scan's answer
//	            mounts part (frozenWrite): mount tree, tmpfs-N.tar
//	            container.json, spec.dump, ctr-cr.json
//	            the engine's dump: it locks the network (TCP) of the tree
//	            and unlocks it again, or keeps it locked when the tree is
//	            killed
//	restore:    validation (State.validate: every part), RUNTIME create
//	            the engine's restore (restoreNotify), which first takes its
//	            network lock in the new network namespace (Options.Relock),
//	            before any link comes up, then calls BeforeTasksRun:
//	              ipc, uts, net, mounts, cgroup parts; creation hooks
//	            then restores the tree and calls AfterRestore:
//	              finishers (ipc)
//	            then the runtime's created -> running
//
// The order among ipc, uts and net is free (separate namespaces); net
// comes after the network lock, mounts before the tree is restored (the
// tasks' files are opened in the restored tree), cgroup settings last.
var nsParts = []part{ipcPart{}, utsPart{}, netPart{}, mountsPart{}, cgroupPart{}}

// captureEnv is what a part's capture reads from and writes to.
type captureEnv struct {
	pid      int            // the container's init
	spec     *specs.Spec    // config.json as checkpointed
	dir      string         // the staged image directory
	cg       *cgroup.Cgroup // the container's cgroup
	emptyNet bool           // runc's --empty-ns network: the network's contents are not saved
	state    *State         // what the parts fill
}

// restoreEnv is what a part's restore reads and where it writes.
type restoreEnv struct {
	pid           int           // the sandbox's init, the root the tree adopts
	img           *image.Reader // the opened image (tmpfs archives)
	spec          *specs.Spec   // the bundle's config.json
	state         *State        // container.json, validated
	outsideByHook bool          // OutsidePeersAnnotation "hook"
	emptyNet      bool          // runc's --empty-ns network: the platform sets it up
}

// captureParts runs the capture of each of parts whose stage is stage, in
// order, and records the time of each in times by name. The first error
// stops it; what was captured stays in c.state (a failed checkpoint
// discards it with the staged image).
func captureParts(c *captureEnv, parts []part, stage captureStage, times map[string]float64) error {
	for _, p := range parts {
		if p.stage() != stage {
			continue
		}
		t := time.Now()
		err := p.capture(c)
		times[p.name()] = ms(time.Since(t))
		if err != nil {
			return err
		}
	}
	return nil
}

// validateParts validates every part's state in st, in order.
func validateParts(st *State, parts []part) error {
	for _, p := range parts {
		if err := p.validate(st); err != nil {
			return err
		}
	}
	return nil
}

// restoreParts puts back each of parts, in order, and records the time of
// each in times by name. When one fails, the undos of those before it run,
// last first, and their errors are joined to its own. On success it
// returns the undo of them all (last first), for a failure after it.
func restoreParts(r *restoreEnv, parts []part, times map[string]float64) (func() error, error) {
	var u cleanup.Stack
	for _, p := range parts {
		t := time.Now()
		undo, err := p.restore(r)
		times[p.name()] = ms(time.Since(t))
		if err != nil {
			if uerr := u.Run(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
			}
			return nil, err
		}
		if undo != nil {
			u.Push(undo)
		}
	}
	return u.Run, nil
}

// finishParts runs the finish step of the parts that have one, in order.
func finishParts(r *restoreEnv, parts []part) error {
	for _, p := range parts {
		if f, ok := p.(finisher); ok {
			if err := f.finish(r); err != nil {
				return err
			}
		}
	}
	return nil
}
