package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/internal/oprec"
)

const cleanupSynopsis = "cleanup [--dry-run]"

// cleanupHelp is the description --help prints above the options.
const cleanupHelp = `Undo what a ctr-cr killed mid-operation (kill -9, OOM, panic) left on
the host, from the records every dump, checkpoint and restore writes under
/run/ctr-cr/ops before it acts: thaw the cgroups it froze, delete its
nftables lock tables (unless a complete image owns one), take TCP
connections of a still-running target out of repair mode, remove partial
images and staging directories (never a complete image), delete a container
a restore created but did not restore, close the pipes and unmap the areas
syscall injection left in a process that runs on. Only records of ctr-cr processes
that are gone are touched. Every dump, checkpoint and restore does the same
when it starts. See docs/crash.md.`

// cmdCleanup sweeps the records of dead ctr-cr processes.
func cmdCleanup(args []string) error {
	var dry bool
	opts := []option{
		{names: []string{"dry-run", "n"}, value: boolValue{&dry}, help: "list what would be undone, change nothing"},
	}
	pos, err := parseOptions("cleanup", cleanupSynopsis+"\n\n"+cleanupHelp, opts, args, os.Stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf(cleanupSynopsis, "unexpected argument %q", pos[0])
	}
	n := 0
	err = oprec.Sweep(dry, func(line string) {
		n++
		fmt.Println(line)
	})
	if n == 0 && err == nil {
		fmt.Println("nothing to clean up")
	}
	return err
}

// beginOp undoes what dead ctr-cr processes left (a failure there is a
// warning: this operation may still succeed) and starts this process's
// record of op; the returned function ends it.
func beginOp(op string) (end func(), err error) {
	if err := oprec.Sweep(false, func(line string) { msgs.warnf("cleanup: %s", line) }); err != nil && !errors.Is(err, fs.ErrPermission) {
		msgs.warnf("cleanup: %v", err)
	}
	if err := oprec.Begin(op); err != nil {
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
			// not root: nothing of ctr-cr's under /run; a crash is then
			// cleaned up by hand (docs/crash.md)
			msgs.infof("no operation record (%v): a crash of this run would not be cleaned up by `ctr-cr cleanup`", err)
			return func() {}, nil
		}
		return nil, err
	}
	return oprec.End, nil
}

// recordImageDir records the image directory of a dump before it is
// written: a crash leaves a partial image there, which cleanup removes
// (never a complete one: one with its inventory).
func recordImageDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	_, serr := os.Stat(abs)
	return oprec.AddPartial(oprec.Partial{Dir: abs, CreatedDir: errors.Is(serr, fs.ErrNotExist)})
}

// recordFreeze records the freezer of cg before it is frozen.
func recordFreeze(cg *cgroup.Cgroup) error {
	dir, err := cg.FreezerDir()
	if err != nil {
		return err
	}
	return oprec.AddFrozen(dir)
}
