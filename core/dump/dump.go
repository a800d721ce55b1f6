// Package dump checkpoints a running process into an image directory: it
// seizes every thread, collects registers, signals, timers, credentials,
// memory and files, writes the image, and then either kills the process or
// lets it run on untouched. A failed dump leaves the process running exactly
// as before and removes the partial image.
package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/core/files"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/image/imagepb"
	"github.com/ctr-cr/ctr-cr/core/procfs"
	"github.com/ctr-cr/ctr-cr/core/ptrace"
	"github.com/ctr-cr/ctr-cr/internal/version"
)

// Options control a dump.
type Options struct {
	LeaveRunning bool
	GhostLimit   int64 // bytes of a deleted file saved at most; 0 means 1 MiB
}

// Stats reports where a dump spent its time, for --print-stats.
type Stats struct {
	FreezingMs       float64 `json:"freezing_ms"`
	FrozenMs         float64 `json:"frozen_ms"`
	CollectMs        float64 `json:"collect_ms"`
	MemdumpMs        float64 `json:"memdump_ms"`
	WriteMs          float64 `json:"write_ms"`
	TotalMs          float64 `json:"total_ms"`
	PagesScanned     uint64  `json:"pages_scanned"`
	PagesWritten     uint64  `json:"pages_written"`
	PagesZero        uint64  `json:"pages_zero"`
	InjectedSyscalls int     `json:"injected_syscalls"`
	Threads          int     `json:"threads"`
}

// Dump checkpoints process pid into dir. The calling goroutine must be locked
// to its OS thread (ptrace requests come from the attaching thread). When ctx
// is cancelled (e.g. on SIGINT) before the image is complete, the dump stops,
// the process is released untouched and the partial image removed.
func Dump(ctx context.Context, pid int, dir string, opts Options) (st *Stats, err error) {
	if opts.GhostLimit == 0 {
		opts.GhostLimit = 1 << 20
	}
	st = &Stats{}
	t0 := time.Now()
	status, err := procfs.ReadStatus(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: no such process: %w", pid, err)
	}
	if status.Tgid != pid {
		return nil, fmt.Errorf("pid %d is a thread of process %d: dump the process", pid, status.Tgid)
	}
	if status.State == 'Z' {
		return nil, fmt.Errorf("pid %d is a zombie", pid)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("pid %d is ctr-cr itself", pid)
	}
	p, err := ptrace.SeizeProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("seize: %w", err)
	}
	tFrozen := time.Now()
	st.FreezingMs = ms(tFrozen.Sub(t0))
	st.Threads = len(p.Threads)

	w, err := image.Create(dir)
	if err != nil {
		p.Release()
		return nil, err
	}
	d := &dumper{ctx: ctx, pid: pid, p: p, w: w, opts: opts, st: st}
	err = d.run()
	if err != nil {
		w.Abort()
		if rerr := d.release(); rerr != nil {
			err = fmt.Errorf("%w (and releasing the process: %v)", err, rerr)
		}
		return nil, err
	}
	if opts.LeaveRunning {
		err = d.release()
	} else {
		err = p.Kill()
	}
	st.FrozenMs = ms(time.Since(tFrozen))
	st.TotalMs = ms(time.Since(t0))
	return st, err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type dumper struct {
	ctx    context.Context
	pid    int
	p      *ptrace.Process
	w      *image.Writer
	opts   Options
	st     *Stats
	remote *ptrace.Remote
	files  *files.Table
	brk    uint64
}

// release undoes the seize: gadget bytes, scratch page, stolen signals,
// registers, masks; then detaches.
func (d *dumper) release() error {
	var errs []error
	if d.files != nil {
		d.files.Close()
	}
	if d.remote != nil {
		if err := d.remote.RequeueStolen(); err != nil {
			errs = append(errs, err)
		}
		if err := d.remote.Close(); err != nil {
			errs = append(errs, err)
		}
		d.st.InjectedSyscalls = d.remote.Calls()
		d.remote = nil
	}
	if err := d.p.Release(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (d *dumper) run() error {
	if err := d.refuseChildren(); err != nil {
		return err
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", d.pid))
	if err != nil {
		return fmt.Errorf("pid %d: %w", d.pid, err)
	}
	gadget, ok := ptrace.FirstExec(string(maps))
	if !ok {
		return fmt.Errorf("pid %d: no executable mapping for syscall injection", d.pid)
	}
	if d.remote, err = ptrace.NewRemote(d.p, gadget); err != nil {
		return fmt.Errorf("pid %d: prepare injection: %w", d.pid, err)
	}
	tc := time.Now()
	core, err := d.collectCore()
	d.st.CollectMs = ms(time.Since(tc))
	if err != nil {
		return fmt.Errorf("pid %d: %w", d.pid, err)
	}
	if err := d.interrupted(); err != nil {
		return err
	}
	// Signals taken out of the queues while seizing are in the image as
	// pending: put them back in the queues now, so the process holds them
	// whether it is released or killed.
	if err := d.remote.RequeueStolen(); err != nil {
		return fmt.Errorf("pid %d: %w", d.pid, err)
	}
	// Put the code under the gadget back before memory is read.
	d.st.InjectedSyscalls = d.remote.Calls()
	if err := d.remote.Close(); err != nil {
		return fmt.Errorf("pid %d: %w", d.pid, err)
	}
	d.remote = nil

	d.files = files.NewTable()
	if err := d.files.DumpFds(d.pid, files.Options{GhostLimit: d.opts.GhostLimit}); err != nil {
		return fmt.Errorf("pid %d: %w", d.pid, err)
	}
	tm := time.Now()
	mm, err := d.dumpMemory(core)
	d.st.MemdumpMs = ms(time.Since(tm))
	if err != nil {
		return fmt.Errorf("pid %d: memory: %w", d.pid, err)
	}
	if err := d.interrupted(); err != nil {
		return err
	}
	tw := time.Now()
	err = d.writeImage(core, mm)
	d.st.WriteMs = ms(time.Since(tw))
	return err
}

// interrupted reports a cancelled dump as an error naming the phase.
func (d *dumper) interrupted() error {
	if err := d.ctx.Err(); err != nil {
		return fmt.Errorf("pid %d: interrupted: %w", d.pid, err)
	}
	return nil
}

func (d *dumper) collectCore() (*imagepb.TaskCore, error) {
	pid := d.pid
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return nil, err
	}
	stat, err := procfs.ReadStat(pid)
	if err != nil {
		return nil, err
	}
	c := &imagepb.TaskCore{Pid: int32(pid), Comm: st.Name, Umask: st.Umask, ExitSignal: int32(stat.ExitSignal), SeccompMode: int32(st.Seccomp)}
	if c.Personality, err = procfs.Personality(pid); err != nil {
		return nil, err
	}
	if c.Cwd, err = procfs.Cwd(pid); err != nil {
		return nil, err
	}
	if c.Root, err = procfs.Root(pid); err != nil {
		return nil, err
	}
	for _, p := range []string{c.Cwd, c.Root} {
		if strings.HasSuffix(p, " (deleted)") {
			return nil, fmt.Errorf("cwd or root %s was deleted: unsupported", p)
		}
	}
	limits, err := procfs.ReadLimits(pid)
	if err != nil {
		return nil, err
	}
	for _, l := range limits {
		c.Rlimits = append(c.Rlimits, &imagepb.Rlimit{Resource: uint32(l.Resource), Cur: l.Cur, Max: l.Max})
	}
	shared, err := ptrace.PeekSiginfo(pid, true)
	if err != nil {
		return nil, err
	}
	for _, s := range shared {
		c.SharedPending = append(c.SharedPending, &imagepb.Siginfo{Raw: s})
	}
	if d.brk, err = d.remote.Call(0, "brk(0)", unix.SYS_BRK, 0); err != nil {
		return nil, err
	}
	if err := collectTask(d.remote, c); err != nil {
		return nil, err
	}
	if err := collectTimers(d.remote, pid, c); err != nil {
		return nil, err
	}
	for i, th := range d.p.Threads {
		tc, err := collectThread(d.remote, pid, i, th)
		if err != nil {
			return nil, fmt.Errorf("tid %d: %w", th.Tid, err)
		}
		c.Threads = append(c.Threads, tc)
	}
	return c, nil
}

func (d *dumper) writeImage(core *imagepb.TaskCore, mm *imagepb.MmEntry) error {
	st, err := procfs.ReadStatus(d.pid)
	if err != nil {
		return err
	}
	stat, err := procfs.ReadStat(d.pid)
	if err != nil {
		return err
	}
	pe := &imagepb.PstreeEntry{Pid: int32(d.pid), Pgid: int32(stat.Pgrp), Sid: int32(stat.Session)}
	for _, ns := range st.NSpid {
		pe.NsPid = append(pe.NsPid, int32(ns))
	}
	for _, th := range d.p.Threads {
		pe.Threads = append(pe.Threads, int32(th.Tid))
	}
	if err := d.w.WritePstree([]*imagepb.PstreeEntry{pe}); err != nil {
		return err
	}
	if err := d.w.WriteCore(d.pid, core); err != nil {
		return err
	}
	if err := d.w.WriteMm(d.pid, mm); err != nil {
		return err
	}
	if err := d.w.WriteFiles(d.files.Files); err != nil {
		return err
	}
	if err := d.w.WriteFdinfo(d.pid, d.files.Fds); err != nil {
		return err
	}
	inv := &imagepb.Inventory{
		FormatVersion: image.FormatVersion, ToolVersion: version.Version, Kernel: kernelRelease(),
		Arch: runtime.GOARCH, RootPid: int32(d.pid), CreatedUnixNano: time.Now().UnixNano(),
		RootPidNs: len(st.NSpid) > 1 && st.NSpid[len(st.NSpid)-1] == 1,
	}
	if len(core.Threads) > 0 {
		f, size, ok := ptrace.XStateFeatures(core.Threads[0].Xsave)
		if ok {
			inv.XsaveFeatures, inv.XsaveSize = f, size
		}
	}
	return d.w.Finish(inv)
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// refuseChildren fails the dump of a process that has children: dumping it
// alone would silently lose them (process trees come with their own
// support). The threads are stopped, so no child can appear meanwhile.
func (d *dumper) refuseChildren() error {
	var kids []string
	for _, t := range d.p.Threads {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", d.pid, t.Tid))
		if err != nil {
			return fmt.Errorf("pid %d: %w", d.pid, err)
		}
		kids = append(kids, strings.Fields(string(b))...)
	}
	if len(kids) > 0 {
		return fmt.Errorf("pid %d has child processes (%s): dumping process trees is not supported yet", d.pid, strings.Join(kids, " "))
	}
	return nil
}
