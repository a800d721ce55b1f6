package main

// ctr-cr as a runc-compatible OCI runtime. Container platforms (podman
// with conmon, containerd's runc shim, CRI-O) checkpoint by running their
// runtime's `checkpoint` and `restore` commands with runc's flags. Run
// under the basename `runc` (a symlink named runc, in a directory of its
// own, to the ctr-cr binary; podman picks its behaviour by the runtime's
// basename), ctr-cr is that runtime: checkpoint and restore are ctr-cr's,
// with runc's command-line contract (runc_args.go); every other command is
// passed to the real runc, found by absolute path (never through PATH,
// where the symlink may be), with the same arguments.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctr-cr/ctr-cr/container"
	"github.com/ctr-cr/ctr-cr/core/dump"
)

// runcMain runs ctr-cr as runc when argv[0]'s basename is "runc"; ok is
// false otherwise (ctr-cr's own command line).
func runcMain(argv []string) (code int, ok bool) {
	if len(argv) == 0 || filepath.Base(argv[0]) != "runc" {
		return 0, false
	}
	return runAsRunc(argv[1:]), true
}

// realRuncPaths are where the real runc is looked for, in order, after
// $CTRCR_RUNC.
var realRuncPaths = []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc", "/sbin/runc", "/bin/runc"}

// realRunc returns the absolute path of the real runc: $CTRCR_RUNC, or the
// first of realRuncPaths that is not this very binary (a symlink to ctr-cr
// installed as /usr/local/bin/runc must not call itself).
func realRunc() (string, error) {
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		return "", err
	}
	if p := os.Getenv("CTRCR_RUNC"); p != "" {
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("CTRCR_RUNC=%q: not an absolute path", p)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("CTRCR_RUNC: %w", err)
		}
		if os.SameFile(fi, self) {
			return "", fmt.Errorf("CTRCR_RUNC=%s is ctr-cr itself, not the real runc", p)
		}
		return p, nil
	}
	for _, p := range realRuncPaths {
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || os.SameFile(fi, self) {
			continue
		}
		return p, nil
	}
	return "", errors.New("the real runc was not found (looked for it in /usr/sbin, /usr/bin, /usr/local/sbin, /usr/local/bin; set CTRCR_RUNC to its absolute path)")
}

// runAsRunc is the whole runc personality: args are runc's (global
// options, command, its options).
func runAsRunc(args []string) int {
	g, cmd, rest, err := parseRuncGlobal(args)
	if err != nil || (cmd != "checkpoint" && cmd != "restore") {
		// runc's own commands, and command lines only runc can judge
		return execRealRunc(args)
	}
	msgs.cmd = cmd
	var cc *runcCheckpointConfig
	var rc *runcRestoreConfig
	if cmd == "checkpoint" {
		cc, err = parseRuncCheckpoint(rest, os.Stdout)
	} else {
		rc, err = parseRuncRestore(rest, os.Stdout)
	}
	if errors.Is(err, errHelp) {
		return 0 // podman's probe: checkpoint --help
	}
	if err != nil {
		return g.fail(err)
	}
	if os.Geteuid() != 0 {
		// ptrace of the container's tasks, its namespaces and cgroup
		return g.fail(errors.New("needs root: rootless containers are not supported by ctr-cr"))
	}
	real, err := realRunc()
	if err != nil {
		return g.fail(err)
	}
	rt := &container.Runtime{Name: "runc", Bin: real, Root: g.root, Args: g.forward()}
	switch cmd {
	case "checkpoint":
		return g.result(runcCheckpoint(rt, cc))
	default:
		code, err := runcRestore(rt, rc)
		if err != nil {
			return g.fail(err)
		}
		return code
	}
}

// execRealRunc replaces ctr-cr by the real runc with the same arguments.
func execRealRunc(args []string) int {
	real, err := realRunc()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctr-cr (as runc):", err)
		return 1
	}
	err = syscall.Exec(real, append([]string{real}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "ctr-cr (as runc): exec %s: %v\n", real, err)
	return 1
}

// result is the exit status of a command that returns only an error.
func (g *runcGlobal) result(err error) int {
	if err != nil {
		return g.fail(err)
	}
	return 0
}

// fail reports err as runc does: on stderr, and in the --log file in the
// --log-format asked for (json: one object with level, msg and time, which
// podman and containerd read back to show the user), and returns 1.
func (g *runcGlobal) fail(err error) int {
	msg := fmt.Sprintf("ctr-cr %s: %v", msgs.cmd, err)
	fmt.Fprintln(os.Stderr, msg)
	if g.log != "" {
		if f, ferr := os.OpenFile(g.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); ferr == nil {
			f.Write(formatRuncLog(g.logFormat, "error", msg))
			f.Close()
		}
	}
	return 1
}

// runcCheckpoint is `runc checkpoint` done by ctr-cr.
func runcCheckpoint(rt *container.Runtime, c *runcCheckpointConfig) error {
	image, work, err := c.paths.resolve()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("--work-path: %w", err)
	}
	logPath := filepath.Join(work, "dump.log")
	final := logPath
	if work == image {
		// the image directory is replaced whole once the new image is
		// complete: the log is written beside it and moved in at the end
		logPath = filepath.Join(filepath.Dir(image), "."+filepath.Base(image)+"-dump.log")
	}
	logc := logConfig{file: logPath, level: levelInfo}
	if err := msgs.open(&logc, work); err != nil {
		return err
	}
	defer func() {
		msgs.close()
		if logPath != final {
			os.Rename(logPath, final)
		}
	}()
	ctx, stop := interruptible()
	defer stop()
	if c.preDump {
		// runc's --pre-dump: a pre-copy round; the container runs on
		_, pst, err := container.PreDump(ctx, container.PreDumpOptions{ID: c.id, Runtime: rt, ImagePath: image, ParentPath: c.parentPath, Warn: msgs.warnf})
		if err != nil {
			msgs.line(levelError, "Error", err.Error(), false)
			return err
		}
		msgs.infof("Pre-dump finished successfully")
		return writeDumpStats(filepath.Join(work, "stats-dump"), &container.CheckpointStats{FreezingMs: pst.FreezingMs, FrozenMs: pst.FrozenMs, Dump: pst})
	}
	_, st, err := container.Checkpoint(ctx, container.CheckpointOptions{
		ID: c.id, Runtime: rt, ImagePath: image, LeaveRunning: c.leaveRunning,
		Dump:     dump.Options{TCPEstablished: c.tcpEstablished, ExtUnixSk: c.extUnixSk, FileLocks: c.fileLocks, ParentPath: c.parentPath, Warn: msgs.warnf},
		Platform: container.PlatformCheckpoint{ExternalStdio: true, AcceptPaused: true, EmptyNet: c.emptyNet},
	})
	if err != nil {
		msgs.line(levelError, "Error", err.Error(), false)
		return err
	}
	msgs.infof("Dumping finished successfully")
	return writeDumpStats(filepath.Join(work, "stats-dump"), st)
}

// runcRestore is `runc restore` done by ctr-cr. The new container's stdio
// is ctr-cr's own fds 0-2 (as runc gives the container its own): they take
// the place of the stdio pipes the checkpoint recorded. Detached, it
// returns once the container runs; otherwise it waits for the container's
// init (its subreaper, unless --no-subreaper) and exits with its status.
func runcRestore(rt *container.Runtime, c *runcRestoreConfig) (int, error) {
	image, work, err := c.paths.resolve()
	if err != nil {
		return 1, err
	}
	bundle, err := filepath.Abs(c.bundle)
	if err != nil {
		return 1, err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return 1, fmt.Errorf("--work-path: %w", err)
	}
	logc := logConfig{file: filepath.Join(work, "restore.log"), level: levelInfo}
	if err := msgs.open(&logc, work); err != nil {
		return 1, err
	}
	defer msgs.close()
	inherit, err := container.StdioInherit(image)
	if err != nil {
		return 1, fmt.Errorf("image %s: %w", image, err)
	}
	reap := !c.detach && !c.noSubreaper
	if reap {
		// the init the runtime's create forks comes to us when it exits
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return 1, fmt.Errorf("subreaper: %w", err)
		}
	}
	opts := container.RestoreOptions{
		Bundle: bundle, ImagePath: image, ID: c.id, Runtime: rt, ConsoleSocket: c.consoleSocket,
		Stats: &container.RestoreStats{},
		Platform: container.PlatformRestore{Inherit: inherit, TCPClose: c.tcpClose, EmptyNet: c.emptyNet, LooseMountOrder: true,
			CreateArgs: c.createArgs()},
	}
	ctx, stop := interruptible()
	_, pid, err := container.Restore(ctx, opts)
	stop()
	if err != nil {
		msgs.line(levelError, "Error", err.Error(), false)
		return 1, err
	}
	if c.pidFile != "" {
		p, err := filepath.Abs(c.pidFile)
		if err == nil {
			err = writePidFileAtomic(p, pid)
		}
		if err != nil {
			return 1, err
		}
	}
	msgs.infof("Restore finished successfully, container %s, init pid %d", c.id, pid)
	if err := writeRestoreStats(filepath.Join(work, "stats-restore"), opts.Stats); err != nil {
		return 1, err
	}
	msgs.close()
	if c.detach {
		return 0, nil
	}
	return waitContainer(pid, reap), nil
}

// writePidFileAtomic writes the pid file as runc does: a temporary file
// renamed into place, so that a platform polling for it never reads it
// half written; runc writes the bare number.
func writePidFileAtomic(path string, pid int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("--pid-file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--pid-file: %w", err)
	}
	return nil
}

// waitContainer waits until the container's init pid ends and returns its
// exit status as a shell reports it: reaped as its subreaper, or, without
// that, only seen to end (status 0).
func waitContainer(pid int, reaped bool) int {
	if reaped {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return 0
			}
			if got != pid {
				continue // an orphan of the container, reparented to us
			}
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(pfd)
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}, -1)
		if err != unix.EINTR {
			return 0
		}
	}
}
