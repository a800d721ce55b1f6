package main

import (
	"encoding/json"
	"os"

	"github.com/ctr-cr/ctr-cr/core/dump"
)

const preDumpSynopsis = "pre-dump -t PID -D DIR [--parent-path DIR] [OPTIONS]"

// parentPathHelp is the help of --parent-path (dump and pre-dump).
const parentPathHelp = "the image of the previous pre-dump round, relative to -D DIR (CRIU's --prev-images-dir too): only pages written since are copied"

// cmdPreDump runs a pre-copy round: memory copied while the tree runs,
// dirty tracking left armed for the next round (core/dump/predump.go).
func cmdPreDump(args []string) error {
	var pid, jobs int
	var dir, parent, pageServer string
	var stats bool
	var lc logConfig
	opts := []option{
		{names: []string{"t", "tree"}, arg: "PID", value: intValue{&pid}, help: "the process to pre-dump, with all its descendants"},
		{names: []string{"D", "images-dir"}, arg: "DIR", value: stringValue{&dir}, help: "image directory"},
		{names: []string{"parent-path", "prev-images-dir"}, arg: "DIR", value: stringValue{&parent}, help: parentPathHelp},
		{names: []string{"page-server"}, arg: "HOST:PORT", value: stringValue{&pageServer}, help: pageServerHelp},
		{names: []string{"track-mem"}, value: boolValue{new(bool)}, help: "accepted: memory is always tracked (userfaultfd write-protect, no soft-dirty)"},
		{names: []string{"jobs"}, arg: "N", value: intValue{&jobs}, help: "processes whose memory is copied in parallel (default: two per idle CPU, 1 to 4)"},
		{names: []string{"print-stats"}, value: boolValue{&stats}, help: "print statistics as JSON (frozen_ms, pages_written, pages_dirty, pages_from_parent)"},
	}
	opts = append(opts, logOptions(&lc)...)
	if _, err := parseOptions("pre-dump", preDumpSynopsis, opts, args, os.Stdout); err != nil {
		return err
	}
	if pid <= 0 || dir == "" {
		return usageErrorf(preDumpSynopsis, "-t PID and -D DIR are required")
	}
	if err := msgs.open(&lc, dir); err != nil {
		return err
	}
	end, err := beginOp("pre-dump")
	if err != nil {
		return err
	}
	defer end()
	if err := recordImageDir(dir); err != nil {
		return err
	}
	ctx, stop := interruptible()
	defer stop()
	ps, err := dialPageServer(pageServer)
	if err != nil {
		return err
	}
	popts := dump.PreDumpOptions{ParentPath: parent, Jobs: jobs, Warn: msgs.warnf}
	if ps != nil {
		popts.PagesSink, popts.Commit = ps.Create, ps.Finish
	}
	st, err := dump.PreDump(ctx, pid, dir, popts)
	if err != nil {
		return pageServerFailed(ps, err)
	}
	if stats {
		printStats(st)
	} else if b, err := json.Marshal(st); err == nil {
		msgs.debugf("stats: %s", b)
	}
	msgs.infof("Pre-dump finished successfully")
	return nil
}

// chainCommit runs a, then b (either may be nil).
func chainCommit(a, b func() error) func() error {
	return func() error {
		if a != nil {
			if err := a(); err != nil {
				return err
			}
		}
		if b != nil {
			return b()
		}
		return nil
	}
}
