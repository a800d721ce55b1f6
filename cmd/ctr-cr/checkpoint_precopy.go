package main

// Pre-copy for containers on ctr-cr's own command line: `checkpoint
// --pre-dump` rounds, the final `checkpoint --parent-path`, and their
// pages sent to a page server (--page-server), as dump and pre-dump do for
// a process tree.

import (
	"context"
	"fmt"
	"os"

	"github.com/ctr-cr/ctr-cr/container"
)

// preCopyConfig is what checkpoint's pre-copy options set.
type preCopyConfig struct {
	preDump    bool
	parent     string // --parent-path DIR
	pageServer string // --page-server HOST:PORT
}

func (pc *preCopyConfig) options() []option {
	return []option{
		{names: []string{"pre-dump"}, value: boolValue{&pc.preDump},
			help: "a pre-copy round: copy the container's memory while it runs and arm the dirty tracking; the container runs on (the image restores nothing by itself)"},
		{names: []string{"parent-path", "prev-images-dir"}, arg: "DIR", value: stringValue{&pc.parent}, help: parentPathHelp},
		{names: []string{"page-server"}, arg: "HOST:PORT", value: stringValue{&pc.pageServer}, help: pageServerHelp},
	}
}

// checkpoint is the final (or only) checkpoint of copts, with the parent
// and the page server of pc.
func (pc *preCopyConfig) checkpoint(ctx context.Context, copts *container.CheckpointOptions) (string, *container.CheckpointStats, error) {
	copts.Dump.ParentPath, copts.Dump.Warn = pc.parent, msgs.warnf
	ps, err := dialPageServer(pc.pageServer)
	if err != nil {
		return "", nil, err
	}
	if ps != nil {
		copts.Dump.PagesSink, copts.Dump.PagesDone = hostSideCreate(ps), ps.Wait
		copts.Deliver = func(string) error { return ps.Finish() }
	}
	dir, st, err := container.Checkpoint(ctx, *copts)
	if err != nil {
		return "", nil, pageServerFailed(ps, err)
	}
	return dir, st, nil
}

// checkpointPreDump is `checkpoint --pre-dump`: one pre-copy round of the
// container into its image directory.
func checkpointPreDump(ctx context.Context, copts *container.CheckpointOptions, pc *preCopyConfig, stats bool) error {
	if copts.SignKey != nil {
		return usageErrorf(checkpointSynopsis, "--sign-key with --pre-dump: a pre-dump round is not a checkpoint to sign; sign the final one (without --parent-path)")
	}
	ps, err := dialPageServer(pc.pageServer)
	if err != nil {
		return err
	}
	popts := container.PreDumpOptions{ID: copts.ID, Runtime: copts.Runtime, ImagePath: copts.ImagePath, ParentPath: pc.parent, Warn: msgs.warnf}
	if ps != nil {
		popts.PagesSink, popts.Commit = ps.Create, ps.Finish
	}
	dir, st, err := container.PreDump(ctx, popts)
	if err != nil {
		return pageServerFailed(ps, err)
	}
	if stats {
		printStats(st)
	}
	fmt.Fprintf(os.Stderr, "ctr-cr: checkpoint: pre-dump of %s saved in %s (%d pages copied, %d written since the round before); it runs on\n", copts.ID, dir, st.PagesWritten, st.PagesDirty)
	return nil
}
