package main

// ctr-cr migrate CONTAINER_ID --to HOST:PORT: a container's live
// migration, the container counterpart of `migrate -t PID`. The bundle
// (config.json, the rootfs it names) must exist on the destination;
// migrate-receive is given it (--bundle) or takes the path the checkpoint
// names (ctr-cr.json), and restores the container from it there
// (`ctr-cr restore -d --image-path ROUND BUNDLE`). See docs/platforms.md.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ctr-cr/ctr-cr/container"
	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/pageserver"
)

// containerMigration is `migrate CONTAINER_ID`'s configuration.
type containerMigration struct {
	root, runtime              string // the container's runtime here
	tcpEst, extUnix, fileLocks bool   // as checkpoint's
	id, to, work               string
	maxRounds                  int
	stats                      bool
}

// options are the options only a container's migration has, and the
// final dump's that both have (--tcp-established, --ext-unix-sk,
// --file-locks).
func (m *containerMigration) options() []option {
	return []option{
		{names: []string{"root"}, arg: "DIR", value: stringValue{&m.root}, help: "container: the runtime's state directory here (--root of runc/crun)"},
		{names: []string{"runtime"}, arg: "runc|crun", value: stringValue{&m.runtime}, help: "container: its runtime here (default: whichever knows the container)"},
		{names: []string{"tcp-established"}, value: boolValue{&m.tcpEst}, help: "migrate established TCP connections (TCP_REPAIR; locked from the final freeze until they run on the destination)"},
		{names: []string{"ext-unix-sk"}, value: boolValue{&m.extUnix}, help: "as dump's and checkpoint's --ext-unix-sk"},
		{names: []string{"file-locks"}, value: boolValue{&m.fileLocks}, help: "as dump's and checkpoint's --file-locks"},
	}
}

// given reports whether an option only a container has was given.
func (m *containerMigration) given() bool { return m.root != "" || m.runtime != "" }

// roundStats is what --print-stats prints for each round of a container's
// migration.
type roundStats struct {
	Round int    `json:"round"`
	Kind  string `json:"kind"` // "pre-dump" or "final"
	Stats any    `json:"stats"`
}

// run migrates the container: pre-dump rounds until the pages written
// between two rounds stop shrinking by half (or --max-rounds), then the
// final checkpoint, whose image the receiver restores while the container
// here is still frozen; it is killed and deleted only once the
// destination runs it, and runs on (thawed, as it was) if anything fails
// before.
func (m *containerMigration) run(lc *logConfig) error {
	if err := msgs.open(lc, m.work); err != nil {
		return err
	}
	end, err := beginOp("migrate")
	if err != nil {
		return err
	}
	defer end()
	ctx, stop := interruptible()
	defer stop()
	rt, err := m.findRuntime(ctx)
	if err != nil {
		return err
	}
	parent := ""
	var last uint64
	k := 1
	for ; k <= m.maxRounds; k++ {
		st, err := m.preDumpRound(ctx, rt, k, parent)
		if err != nil {
			return err
		}
		msgs.infof("round %d: %d pages copied, %d written since the round before", k, st.PagesWritten, st.PagesDirty)
		parent = "../" + pageserver.RoundName(k)
		shrinking := k == 1 || st.PagesWritten < last/2
		last = st.PagesWritten
		if !shrinking {
			k++
			break
		}
	}
	cl, err := dialPageServer(m.to)
	if err != nil {
		return err
	}
	var info string
	deliver := func(dir string) error {
		_, err := offDumpThread(func() (struct{}, error) {
			if err := sendImage(cl, dir); err != nil {
				return struct{}{}, err
			}
			var err error
			info, err = cl.FinishRestore()
			return struct{}{}, err
		})
		return err
	}
	_, cst, err := container.Checkpoint(ctx, container.CheckpointOptions{
		ID: m.id, Runtime: rt, ImagePath: filepath.Join(m.work, pageserver.RoundName(k)),
		Dump: dump.Options{TCPEstablished: m.tcpEst, ExtUnixSk: m.extUnix, FileLocks: m.fileLocks, ParentPath: parent,
			Warn: msgs.warnf, PagesSink: hostSideCreate(cl), PagesDone: cl.Wait},
		Deliver: deliver,
	})
	switch {
	case err != nil && info != "":
		// the destination runs it: only the clean-up here failed
		return fmt.Errorf("migrate %s: the container runs on the destination (%s), but here: %w", m.id, info, err)
	case err != nil:
		return pageServerFailed(cl, fmt.Errorf("migrate %s: final checkpoint (the container runs on here): %w", m.id, err))
	}
	if m.stats {
		printStats(roundStats{Round: k, Kind: "final", Stats: cst})
	}
	msgs.infof("Migration finished: %s", info)
	fmt.Println(info)
	return nil
}

// findRuntime is the container's runtime here (--runtime, --root).
func (m *containerMigration) findRuntime(ctx context.Context) (*container.Runtime, error) {
	if m.runtime == "" {
		return container.FindRuntime(ctx, m.id, m.root)
	}
	return container.NewRuntime(m.runtime, m.root)
}

// preDumpRound is pre-copy round k of the container, sent to the receiver
// as it is written.
func (m *containerMigration) preDumpRound(ctx context.Context, rt *container.Runtime, k int, parent string) (*dump.Stats, error) {
	cl, err := dialPageServer(m.to)
	if err != nil {
		return nil, err
	}
	dir, st, err := container.PreDump(ctx, container.PreDumpOptions{
		ID: m.id, Runtime: rt, ImagePath: filepath.Join(m.work, pageserver.RoundName(k)), ParentPath: parent,
		Warn: msgs.warnf, PagesSink: cl.Create, Commit: cl.Wait,
	})
	if err == nil {
		err = sendImage(cl, dir)
	}
	if err == nil {
		err = cl.Finish()
	}
	if err != nil {
		return nil, pageServerFailed(cl, fmt.Errorf("migrate %s: round %d (the container runs on here): %w", m.id, k, err))
	}
	if m.stats {
		printStats(roundStats{Round: k, Kind: "pre-dump", Stats: st})
	}
	return st, nil
}

// containerReceiver is what migrate-receive needs to restore a container.
type containerReceiver struct {
	bundle, root, runtime string
}

func (cr *containerReceiver) options() []option {
	return []option{
		{names: []string{"bundle"}, arg: "DIR", value: stringValue{&cr.bundle}, help: "container: its bundle here (config.json and the rootfs it names); default: the bundle path its checkpoint names, which must exist here"},
		{names: []string{"root"}, arg: "DIR", value: stringValue{&cr.root}, help: "container: the runtime's state directory here (default: the checkpointed one)"},
		{names: []string{"runtime"}, arg: "runc|crun", value: stringValue{&cr.runtime}, help: "container: runc or crun (default: the one that ran it)"},
	}
}

func (cr *containerReceiver) given() bool {
	return cr.bundle != "" || cr.root != "" || cr.runtime != ""
}

// isContainer reports whether the image in dir is a container's
// checkpoint (ctr-cr.json beside it).
func (cr *containerReceiver) isContainer(dir string) bool {
	fi, err := os.Lstat(filepath.Join(dir, container.MetadataName))
	return err == nil && fi.Mode().IsRegular()
}

// restore restores the container checkpointed in dir from its bundle
// here, detached, with `ctr-cr restore`; it returns what to tell the
// source and the container's init pid.
func (cr *containerReceiver) restore(dir string) (string, int, error) {
	b, err := os.ReadFile(filepath.Join(dir, container.MetadataName))
	if err != nil {
		return "", 0, err
	}
	var meta container.Metadata
	if err := json.Unmarshal(b, &meta); err != nil {
		return "", 0, fmt.Errorf("%s: %w", container.MetadataName, err)
	}
	bundle := cr.bundle
	if bundle == "" {
		bundle = meta.Bundle
		if !filepath.IsAbs(bundle) {
			return "", 0, fmt.Errorf("the checkpoint names bundle %q, not an absolute path (give --bundle DIR)", bundle)
		}
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		return "", 0, fmt.Errorf("the container's bundle is not here (give --bundle DIR): %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", 0, err
	}
	pidFile := filepath.Join(dir, "restored.pid")
	args := []string{"restore", "-d", "--image-path", dir, "--pid-file", pidFile}
	if cr.root != "" {
		args = append(args, "--root", cr.root)
	}
	if cr.runtime != "" {
		args = append(args, "--runtime", cr.runtime)
	}
	out, err := exec.Command(exe, append(args, bundle)...).CombinedOutput()
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	pb, err := os.ReadFile(pidFile)
	if err != nil {
		return "", 0, errors.New("restore left no pid file")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil {
		return "", 0, fmt.Errorf("pid file: %w", err)
	}
	return fmt.Sprintf("restored container %s from bundle %s, init pid %d", meta.ID, bundle, pid), pid, nil
}
