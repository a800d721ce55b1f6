package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/container"
	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/kernel"
	"github.com/ctr-cr/ctr-cr/core/restore"
	"github.com/ctr-cr/ctr-cr/core/show"

	"golang.org/x/sys/unix"
)

// parseSize reads sizes such as 1048576, 512K, 4M, 1G.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"), strings.HasSuffix(s, "k"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"), strings.HasSuffix(s, "g"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

func printStats(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func cmdDump(args []string) error {
	fs := newFlags("dump")
	pid := fs.Int("t", 0, "pid of the process to dump")
	dir := fs.String("D", "", "image directory")
	leave := fs.Bool("leave-running", false, "let the process run on after the dump")
	ghost := fs.String("ghost-limit", "1M", "largest deleted file whose contents are saved")
	stats := fs.Bool("print-stats", false, "print timing statistics as JSON")
	jobs := fs.Int("jobs", 4, "processes whose memory is dumped in parallel (1: one by one)")
	shellJob := fs.Bool("shell-job", false, "the tree has a terminal (a job started from a shell): dump it as external")
	tcpEst := fs.Bool("tcp-established", false, "dump established TCP connections (TCP_REPAIR); they stay locked (nftables) until restore")
	extUnix := fs.Bool("ext-unix-sk", false, "accept unix sockets connected to a peer outside the tree: restore connects them to the peer's name again")
	freezeCg := fs.String("freeze-cgroup", "", "freeze this cgroup (v1 freezer or v2 directory) holding the tree while it is seized")
	fileLocks := fs.Bool("file-locks", false, "dump the file locks the tree holds (flock, POSIX, OFD); without it a tree holding one is refused")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pid <= 0 || *dir == "" {
		return errors.New("-t PID and -D DIR are required")
	}
	gl, err := parseSize(*ghost)
	if err != nil {
		return fmt.Errorf("--ghost-limit: %w", err)
	}
	ctx, stop := interruptible()
	defer stop()
	opts := dump.Options{LeaveRunning: *leave, GhostLimit: gl, Jobs: *jobs, ShellJob: *shellJob, TCPEstablished: *tcpEst, ExtUnixSk: *extUnix, FileLocks: *fileLocks}
	if *freezeCg != "" {
		cg, err := cgroup.OpenDir(*freezeCg)
		if err != nil {
			return err
		}
		if err := cg.Freeze(ctx); err != nil {
			return err
		}
		defer cg.Thaw() // on every path; a second thaw is harmless
		opts.Thaw = cg.Thaw
	}
	st, err := dump.Dump(ctx, *pid, *dir, opts)
	if err != nil {
		return err
	}
	if *stats {
		printStats(st)
	}
	return nil
}

// cmdCheckpoint checkpoints an OCI container found through its runtime.
func cmdCheckpoint(args []string) error {
	fs := newFlags("checkpoint")
	root := fs.String("root", "", "the runtime's state directory (--root of runc/crun)")
	rtName := fs.String("runtime", "", "the container's runtime: runc or crun (default: whichever knows the container)")
	imagePath := fs.String("image-path", "", "image directory (default BUNDLE/checkpoint)")
	leave := fs.Bool("leave-running", false, "let the container run on after the checkpoint")
	tcpEst := fs.Bool("tcp-established", false, "checkpoint established TCP connections (TCP_REPAIR)")
	extUnix := fs.Bool("ext-unix-sk", false, "accept unix sockets connected to a peer outside the container's tree: restore connects them to the peer's name again, in the container's root")
	stats := fs.Bool("print-stats", false, "print timing statistics as JSON")
	fileLocks := fs.Bool("file-locks", false, "checkpoint the file locks the container's tree holds (flock, POSIX, OFD)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: ctr-cr checkpoint [--root DIR] [--runtime runc|crun] [--image-path DIR] [--leave-running] [--tcp-established] [--ext-unix-sk] CONTAINER_ID")
	}
	ctx, stop := interruptible()
	defer stop()
	var rt *container.Runtime
	var err error
	if *rtName == "" {
		rt, err = container.FindRuntime(ctx, fs.Arg(0), *root)
	} else {
		rt, err = container.NewRuntime(*rtName, *root)
	}
	if err != nil {
		return err
	}
	dir, st, err := container.Checkpoint(ctx, container.CheckpointOptions{
		ID: fs.Arg(0), Runtime: rt, ImagePath: *imagePath, LeaveRunning: *leave,
		Dump: dump.Options{TCPEstablished: *tcpEst, ExtUnixSk: *extUnix, FileLocks: *fileLocks},
	})
	if err != nil {
		return err
	}
	if *stats {
		printStats(st)
	}
	fmt.Fprintf(os.Stderr, "ctr-cr: checkpoint: %s saved in %s\n", fs.Arg(0), dir)
	return nil
}

func cmdRestore(args []string) (int, error) {
	fs := newFlags("restore")
	dir := fs.String("D", "", "image directory")
	detach := fs.Bool("d", false, "detach: return once the process runs")
	fs.BoolVar(detach, "detach", false, "same as -d")
	pidFile := fs.String("pid-file", "", "write the restored pid to this file")
	method := fs.String("pid-method", "clone3", "how to get the pid: clone3 (set_tid) or ns_last_pid")
	stats := fs.Bool("print-stats", false, "print timing statistics as JSON")
	shellJob := fs.Bool("shell-job", false, "restore a shell job onto this terminal (ctr-cr's stdin, stdout or stderr)")
	newID := fs.String("id", "", "container: the restored container's id (default: the checkpointed one)")
	imagePath := fs.String("image-path", "", "container: image directory (default BUNDLE/checkpoint)")
	rtRoot := fs.String("root", "", "container: the runtime's state directory")
	rtName := fs.String("runtime", "", "container: runc or crun (default: the one that ran it at the checkpoint)")
	fs.Bool("file-locks", false, "accepted (CRIU's flag): the file locks of an image are always taken again")
	console := fs.String("console-socket", "", "container with a terminal (process.terminal): unix socket that receives the new console's pty master (SCM_RIGHTS), passed to the runtime's create")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if fs.NArg() == 1 && *dir == "" {
		return restoreContainer(fs.Arg(0), *newID, *imagePath, *rtName, *rtRoot, *pidFile, *console, *detach, *stats)
	}
	if *console != "" {
		return 2, errors.New("--console-socket: only for a container (ctr-cr restore --console-socket PATH BUNDLE)")
	}
	term := -1
	if *shellJob {
		if term = terminalFd(); term < 0 {
			return 2, errors.New("--shell-job: none of stdin, stdout, stderr is a terminal")
		}
	}
	if *dir == "" {
		return 2, errors.New("-D DIR is required")
	}
	m := restore.PidMethod(*method)
	if m != restore.PidClone3 && m != restore.PidNsLastPid {
		return 2, fmt.Errorf("--pid-method: unknown method %q", *method)
	}
	ctx, stop := interruptible()
	res, err := restore.Restore(ctx, *dir, restore.Options{PidMethod: m, Terminal: term, Detach: *detach})
	stop()
	if err != nil {
		return 1, err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(os.Stderr, "ctr-cr: restore: warning:", w)
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(res.Pid)+"\n"), 0o644); err != nil {
			return 1, fmt.Errorf("pid file: %w", err)
		}
	}
	if *stats {
		printStats(res.Stats)
	}
	if *detach {
		return 0, nil
	}
	if term >= 0 {
		// the restored job becomes the terminal's foreground group while it
		// runs; ours again afterwards
		defer giveTerminal(term, unix.Getpgrp())
		if pgid, err := unix.Getpgid(res.Pid); err == nil {
			giveTerminal(term, pgid)
		}
	}
	// In the foreground ctr-cr is the restored process's parent: pass the
	// termination signals it receives on, then exit with the child's status.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		for s := range sigs {
			syscall.Kill(res.Pid, s.(syscall.Signal))
		}
	}()
	return restore.Wait(res.Pid)
}

func cmdShow(args []string) error {
	fs := newFlags("show")
	file := fs.String("f", "", "image file to print as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file != "" {
		return image.FileJSON(*file, os.Stdout)
	}
	if fs.NArg() != 1 {
		return errors.New("give -f FILE or an image directory")
	}
	return show.Summary(fs.Arg(0), os.Stdout)
}

func cmdCheck(args []string) (int, error) {
	fs := newFlags("check")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	missing := kernel.Report(os.Stdout)
	if missing > 0 {
		return 1, fmt.Errorf("%d required feature(s) missing", missing)
	}
	return 0, nil
}

// interruptible returns a context cancelled by SIGINT, SIGTERM or SIGHUP:
// instead of dying half-way (leaving a gadget in a dumped process or a
// half-built one behind), the engine stops at the next safe point and undoes
// what it did.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
}

// terminalFd returns the first of stdin, stdout, stderr that is a tty.
func terminalFd() int {
	for fd := 0; fd < 3; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			return fd
		}
	}
	return -1
}

// giveTerminal makes pgid the foreground process group of the terminal;
// SIGTTOU is ignored meanwhile, as a background caller would get it.
func giveTerminal(fd, pgid int) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, pgid)
}

// restoreContainer restores a container from its bundle (ctr-cr restore
// BUNDLE). Without -d it waits until the container's init is gone.
func restoreContainer(bundle, id, imagePath, rtName, rtRoot, pidFile, console string, detach, stats bool) (int, error) {
	opts := container.RestoreOptions{Bundle: bundle, ImagePath: imagePath, ID: id, RuntimeRoot: rtRoot, ConsoleSocket: console}
	if stats {
		opts.Stats = &container.RestoreStats{}
	}
	if rtName != "" {
		rt, err := container.NewRuntime(rtName, rtRoot)
		if err != nil {
			return 2, err
		}
		opts.Runtime = rt
	}
	ctx, stop := interruptible()
	id, pid, err := container.Restore(ctx, opts)
	stop()
	if err != nil {
		return 1, err
	}
	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			return 1, fmt.Errorf("pid file: %w", err)
		}
	}
	if stats {
		printStats(opts.Stats)
	}
	fmt.Fprintf(os.Stderr, "ctr-cr: restore: container %s running, init pid %d\n", id, pid)
	if detach {
		return 0, nil
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, nil // gone already
	}
	defer unix.Close(pfd)
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}, -1)
		if err != unix.EINTR {
			return 0, nil
		}
	}
}
