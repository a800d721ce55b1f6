package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ctr-cr/ctr-cr/cgroup"
	"github.com/ctr-cr/ctr-cr/container"
	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/image"
	"github.com/ctr-cr/ctr-cr/core/imagesig"
	"github.com/ctr-cr/ctr-cr/core/kernel"
	"github.com/ctr-cr/ctr-cr/core/restore"
	"github.com/ctr-cr/ctr-cr/core/show"
	"github.com/ctr-cr/ctr-cr/internal/fault"
	"github.com/ctr-cr/ctr-cr/procns"

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

func printStats(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
	msgs.debugf("stats: %s", b)
}

// criuConfig holds the CRIU spellings that confirm or permit what ctr-cr
// does anyway, or name a mode of which ctr-cr has only one.
type criuConfig struct {
	fileLocks     bool   // --file-locks
	linkRemap     bool   // --link-remap: permission only, see its help
	networkLock   string // --network-lock: nftables only
	manageCgroups string // --manage-cgroups[=MODE]: ignore only
	tcpClose      bool   // --tcp-close: see its help in dump and restore
}

// criuOptions are the CRIU options dump and restore share; confirm is the
// help of the ones that only confirm what the image holds (restore).
func criuOptions(c *criuConfig, fileLocksHelp string) []option {
	return []option{
		{names: []string{"file-locks"}, value: boolValue{&c.fileLocks}, help: fileLocksHelp},
		{names: []string{"link-remap"}, value: boolValue{&c.linkRemap},
			help: "accepted: files deleted while open are saved by contents (up to --ghost-limit), no link is made"},
		{names: []string{"network-lock"}, arg: "nftables", value: stringValue{&c.networkLock},
			help: "how TCP connections are locked: nftables, the only method (others refused)"},
		{names: []string{"manage-cgroups"}, arg: "[=MODE]", value: modeValue{&c.manageCgroups, "soft"},
			help: "only MODE ignore: a tree's cgroups are not saved; it is restored into the restorer's (other modes refused)"},
	}
}

// check refuses the modes ctr-cr does not have, naming the flag.
func (c *criuConfig) check(synopsis string) error {
	if c.networkLock != "" && c.networkLock != "nftables" {
		return usageErrorf(synopsis, "--network-lock %s: not supported: ctr-cr locks TCP connections with nftables only", c.networkLock)
	}
	if c.manageCgroups != "" && c.manageCgroups != "ignore" {
		return usageErrorf(synopsis, "--manage-cgroups=%s: not supported: ctr-cr does not save or restore a process tree's cgroups (only --manage-cgroups=ignore)", c.manageCgroups)
	}
	return nil
}

const dumpSynopsis = "dump -t PID -D DIR [OPTIONS]"

// dumpConfig is what dump's options set.
type dumpConfig struct {
	pid                         int
	dir, ghost, freezeCg        string
	leave, stats                bool
	jobs                        int
	shellJob, tcpEst, extUnixSk bool
	skipInFlight                bool
	parent                      string            // --parent-path DIR
	pageServer                  string            // --page-server HOST:PORT
	signKey                     string            // --sign-key FILE
	extMounts                   map[string]string // --ext-mount-map MOUNTPOINT:KEY
	criu                        criuConfig
	log                         logConfig
}

func dumpOptions(c *dumpConfig) []option {
	c.ghost = "1M"
	opts := []option{
		{names: []string{"t", "tree"}, arg: "PID", value: intValue{&c.pid}, help: "the process to dump, with all its descendants"},
		{names: []string{"D", "images-dir"}, arg: "DIR", value: stringValue{&c.dir}, help: "image directory"},
		{names: []string{"R", "leave-running"}, value: boolValue{&c.leave}, help: "let the process run on after the dump"},
		{names: []string{"j", "shell-job"}, value: boolValue{&c.shellJob}, help: "the tree has a terminal (a job started from a shell): dump it as external"},
		{names: []string{"tcp-established"}, value: boolValue{&c.tcpEst}, help: "dump established TCP connections (TCP_REPAIR); they stay locked (nftables) until restore"},
		{names: []string{"ext-unix-sk"}, value: boolValue{&c.extUnixSk}, help: "accept unix sockets connected to a peer outside the tree: restore connects them to the peer's name again"},
		{names: []string{"freeze-cgroup"}, arg: "DIR", value: stringValue{&c.freezeCg}, help: "freeze this cgroup (v1 freezer or v2 directory) holding the tree while it is seized"},
		{names: []string{"ghost-limit"}, arg: "SIZE", value: stringValue{&c.ghost}, help: "largest deleted file whose contents are saved (default 1M)"},
		{names: []string{"jobs"}, arg: "N", value: intValue{&c.jobs}, help: "processes whose memory is dumped in parallel (default: two per idle CPU, 1 to 4; 1: one by one)"},
		{names: []string{"print-stats"}, value: boolValue{&c.stats}, help: "print timing statistics as JSON"},
		{names: []string{"skip-in-flight"}, value: boolValue{&c.skipInFlight},
			help: "dump TCP listeners without the connections waiting to be accepted (their peers see a reset); without it such a listener is refused"},
		{names: []string{"tcp-close"}, value: boolValue{&c.criu.tcpClose},
			help: "record TCP connections without their state, neither locked nor repaired (the image then needs restore --tcp-close)"},
		{names: []string{"sign-key"}, arg: "FILE", value: stringValue{&c.signKey}, help: signKeyHelp},
		{names: []string{"parent-path", "prev-images-dir"}, arg: "DIR", value: stringValue{&c.parent}, help: parentPathHelp},
		{names: []string{"page-server"}, arg: "HOST:PORT", value: stringValue{&c.pageServer}, help: pageServerHelp},
	}
	c.extMounts = map[string]string{}
	opts = append(opts, extMountOptions(c.extMounts, nil)...)
	opts = append(opts, criuOptions(&c.criu, "dump the file locks the tree holds (flock, POSIX, OFD); without it a tree holding one is refused")...)
	return append(opts, logOptions(&c.log)...)
}

func cmdDump(args []string) error {
	var c dumpConfig
	opts := dumpOptions(&c)
	if _, err := parseOptions("dump", dumpSynopsis, opts, args, os.Stdout); err != nil {
		return err
	}
	if c.pid <= 0 || c.dir == "" {
		return usageErrorf(dumpSynopsis, "-t PID and -D DIR are required")
	}
	if err := c.criu.check(dumpSynopsis); err != nil {
		return err
	}
	gl, err := parseSize(c.ghost)
	if err != nil {
		return usageErrorf(dumpSynopsis, "--ghost-limit: %w", err)
	}
	sign, err := signer(c.signKey, c.dir)
	if err != nil {
		return err
	}
	if err := msgs.open(&c.log, c.dir); err != nil {
		return err
	}
	end, err := beginOp("dump")
	if err != nil {
		return err
	}
	defer end()
	if err := recordImageDir(c.dir); err != nil {
		return err
	}
	ctx, stop := interruptible()
	defer stop()
	dopts := dump.Options{LeaveRunning: c.leave, GhostLimit: gl, Jobs: c.jobs, ShellJob: c.shellJob, TCPEstablished: c.tcpEst, ExtUnixSk: c.extUnixSk, FileLocks: c.criu.fileLocks,
		SkipInFlight: c.skipInFlight, TCPClose: c.criu.tcpClose, Commit: sign, ParentPath: c.parent, Warn: msgs.warnf,
		CarryNamespaces: (&procns.Capturer{ExtMounts: c.extMounts}).Capture}
	if c.freezeCg != "" {
		cg, err := cgroup.OpenDir(c.freezeCg)
		if err != nil {
			return err
		}
		if err := recordFreeze(cg); err != nil {
			return err
		}
		if err := cg.Freeze(ctx); err != nil {
			return err
		}
		defer cg.Thaw() // on every path; a second thaw is harmless
		fault.Point("dump:frozen")
		dopts.Frozen, dopts.Notify = true, &container.FreezerNotify{Cgroup: cg}
	}
	ps, err := dialPageServer(c.pageServer)
	if err != nil {
		return err
	}
	if ps != nil {
		dopts.PagesSink, dopts.PagesDone = hostSideCreate(ps), ps.Wait
		dopts.Commit = chainCommit(ps.Finish, dopts.Commit)
	}
	st, err := dump.Dump(ctx, c.pid, c.dir, dopts)
	if err != nil {
		return pageServerFailed(ps, err)
	}
	if c.stats {
		printStats(st)
	} else if b, err := json.Marshal(st); err == nil {
		msgs.debugf("stats: %s", b)
	}
	msgs.infof("Dumping finished successfully")
	return nil
}

const checkpointSynopsis = "checkpoint [--pre-dump] [--parent-path DIR] [OPTIONS] CONTAINER_ID"

// cmdCheckpoint checkpoints an OCI container found through its runtime.
func cmdCheckpoint(args []string) error {
	var root, rtName, imagePath, signKey string
	var leave, tcpEst, extUnix, stats, fileLocks bool
	opts := []option{
		{names: []string{"root"}, arg: "DIR", value: stringValue{&root}, help: "the runtime's state directory (--root of runc/crun)"},
		{names: []string{"runtime"}, arg: "runc|crun", value: stringValue{&rtName}, help: "the container's runtime (default: whichever knows the container)"},
		{names: []string{"image-path"}, arg: "DIR", value: stringValue{&imagePath}, help: "image directory (default BUNDLE/checkpoint)"},
		{names: []string{"R", "leave-running"}, value: boolValue{&leave}, help: "let the container run on after the checkpoint"},
		{names: []string{"tcp-established"}, value: boolValue{&tcpEst}, help: "checkpoint established TCP connections (TCP_REPAIR)"},
		{names: []string{"ext-unix-sk"}, value: boolValue{&extUnix}, help: "accept unix sockets connected to a peer outside the container's tree: restore connects them to the peer's name again, in the container's root"},
		{names: []string{"print-stats"}, value: boolValue{&stats}, help: "print timing statistics as JSON"},
		{names: []string{"file-locks"}, value: boolValue{&fileLocks}, help: "checkpoint the file locks the container's tree holds (flock, POSIX, OFD); without it a tree holding one is refused"},
		{names: []string{"sign-key"}, arg: "FILE", value: stringValue{&signKey}, help: signKeyHelp},
	}
	var pc preCopyConfig
	opts = append(opts, pc.options()...)
	pos, err := parseOptions("checkpoint", checkpointSynopsis, opts, args, os.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf(checkpointSynopsis, "one CONTAINER_ID is required")
	}
	id := pos[0]
	var key ed25519.PrivateKey
	if signKey != "" {
		if key, err = imagesig.ReadPrivateKey(signKey); err != nil {
			return fmt.Errorf("--sign-key: %w", err)
		}
	}
	end, err := beginOp("checkpoint")
	if err != nil {
		return err
	}
	defer end()
	ctx, stop := interruptible()
	defer stop()
	var rt *container.Runtime
	if rtName == "" {
		rt, err = container.FindRuntime(ctx, id, root)
	} else {
		rt, err = container.NewRuntime(rtName, root)
	}
	if err != nil {
		return err
	}
	copts := container.CheckpointOptions{
		ID: id, Runtime: rt, ImagePath: imagePath, LeaveRunning: leave, SignKey: key,
		Dump: dump.Options{TCPEstablished: tcpEst, ExtUnixSk: extUnix, FileLocks: fileLocks},
	}
	if pc.preDump {
		return checkpointPreDump(ctx, &copts, &pc, stats)
	}
	dir, st, err := pc.checkpoint(ctx, &copts)
	if err != nil {
		return err
	}
	if stats {
		printStats(st)
	}
	fmt.Fprintf(os.Stderr, "ctr-cr: checkpoint: %s saved in %s\n", id, dir)
	return nil
}

const restoreSynopsis = "restore -D DIR [OPTIONS] | restore [OPTIONS] BUNDLE"

// restoreConfig is what restore's options set.
type restoreConfig struct {
	dir, pidFile, method          string
	detach, stats, shellJob       bool
	tcpEst, extUnixSk             bool // confirm only: the image says
	id, imagePath, rtRoot, rtName string
	console                       string
	verifyKey                     string            // --verify-key FILE
	inherit                       map[string]int    // --inherit-fd: image key -> our fd
	extMounts                     map[string]string // --ext-mount-map KEY:PATH
	cgroupRoots                   []string          // --cgroup-root
	sibling                       bool              // --restore-sibling
	lazyPages                     bool              // --lazy-pages (lazy.go)
	pageServer                    string            // --page-server HOST:PORT (lazy.go)
	pageSource                    *pageSource       // its connection (lazy.go)
	veths                         []string          // --external veth[IF]:HOST[@BRIDGE]
	criu                          criuConfig
	log                           logConfig
}

func restoreOptions(c *restoreConfig) []option {
	c.method = string(restore.PidClone3)
	c.inherit = map[string]int{}
	opts := []option{
		{names: []string{"D", "images-dir"}, arg: "DIR", value: stringValue{&c.dir}, help: "image directory"},
		{names: []string{"d", "detach", "restore-detached"}, value: boolValue{&c.detach}, help: "detach: return once the process runs"},
		{names: []string{"pid-file", "pidfile"}, arg: "FILE", value: stringValue{&c.pidFile}, help: "write the restored pid to FILE (relative: in the work dir, the image dir by default; a container's: in the current dir)"},
		{names: []string{"j", "shell-job"}, value: boolValue{&c.shellJob}, help: "restore a shell job onto this terminal (ctr-cr's stdin, stdout or stderr)"},
		{names: []string{"pid-method"}, arg: "clone3|ns_last_pid", value: stringValue{&c.method}, help: "how to get the pid: clone3 (set_tid, default) or ns_last_pid"},
		{names: []string{"print-stats"}, value: boolValue{&c.stats}, help: "print timing statistics as JSON"},
		{names: []string{"lazy-pages"}, value: boolValue{&c.lazyPages}, help: "run the tree before its private memory is in: pages come on first touch and in the background (-d returns once the last page is in)"},
		{names: []string{"page-server"}, arg: "HOST:PORT", value: stringValue{&c.pageServer}, help: "read the pages files from `ctr-cr page-server --lazy-pages` at HOST:PORT (the source) instead of DIR"},
		{names: []string{"tcp-established"}, value: boolValue{&c.tcpEst}, help: "accepted: the image's TCP connections are restored whether given or not"},
		{names: []string{"ext-unix-sk"}, value: boolValue{&c.extUnixSk}, help: "accepted: the image's external unix peers are connected to again whether given or not"},
		{names: []string{"id"}, arg: "NEW_ID", value: stringValue{&c.id}, help: "container: the restored container's id (default: the checkpointed one)"},
		{names: []string{"image-path"}, arg: "DIR", value: stringValue{&c.imagePath}, help: "container: image directory (default BUNDLE/checkpoint)"},
		{names: []string{"root"}, arg: "DIR", value: stringValue{&c.rtRoot}, help: "container: the runtime's state directory; -D DIR: the root of the restored mount namespace (an image that carries one)"},
		{names: []string{"runtime"}, arg: "runc|crun", value: stringValue{&c.rtName}, help: "container: runc or crun (default: the one that ran it at the checkpoint)"},
		{names: []string{"inherit-fd"}, arg: "fd[N]:pipe:[INO]", value: inheritValue{c.inherit}, help: "use ctr-cr's fd N as the image's external pipe pipe:[INO] (see show); repeatable"},
		{names: []string{"console-socket"}, arg: "PATH", value: stringValue{&c.console}, help: "container with a terminal (process.terminal): unix socket that receives the new console's pty master (SCM_RIGHTS), passed to the runtime's create"},
		{names: []string{"tcp-close"}, value: boolValue{&c.criu.tcpClose},
			help: "restore the image's TCP connections as closed sockets (read: end of file, write: EPIPE); needed for an image dumped with --tcp-close"},
		{names: []string{"skip-in-flight"}, value: boolValue{new(bool)},
			help: "accepted: a dump option (restored listeners have what the image holds)"},
		{names: []string{"verify-key"}, arg: "FILE", value: stringValue{&c.verifyKey},
			help: "refuse the image unless its image.sig verifies with this Ed25519 public key (PEM) and every file it covers is as signed (docs/trust.md)"},
	}
	c.extMounts = map[string]string{}
	opts = append(opts, extMountOptions(c.extMounts, &c.veths)...)
	opts = append(opts, placeOptions(c)...)
	opts = append(opts, criuOptions(&c.criu, "accepted: the image's file locks are restored whether given or not")...)
	return append(opts, logOptions(&c.log)...)
}

func cmdRestore(args []string) (int, error) {
	var c restoreConfig
	pos, err := parseOptions("restore", restoreSynopsis, restoreOptions(&c), args, os.Stdout)
	if err != nil {
		return 2, err
	}
	if err := c.criu.check(restoreSynopsis); err != nil {
		return 2, err
	}
	if len(pos) == 1 && c.dir == "" {
		if len(c.inherit) > 0 {
			return 2, usageErrorf(restoreSynopsis, "--inherit-fd: only for a process restore (-D DIR)")
		}
		if c.criu.tcpClose {
			return 2, usageErrorf(restoreSynopsis, "--tcp-close: only for a process restore (-D DIR)")
		}
		if c.lazyPages || c.pageServer != "" {
			return 2, usageErrorf(restoreSynopsis, "--lazy-pages and --page-server: only for a process restore (-D DIR)")
		}
		if c.shellJob || c.method != string(restore.PidClone3) {
			return 2, usageErrorf(restoreSynopsis, "--shell-job and --pid-method: only for a process restore (-D DIR); a container gets its console with --console-socket")
		}
		return restoreContainer(pos[0], &c)
	}
	if len(pos) > 0 {
		return 2, usageErrorf(restoreSynopsis, "unexpected argument %q", pos[0])
	}
	if err := c.containerOnly(); err != nil {
		return 2, err
	}
	if c.dir == "" {
		return 2, usageErrorf(restoreSynopsis, "-D DIR or a BUNDLE is required")
	}
	term := inheritedTerminal(c.inherit)
	if c.shellJob && term < 0 {
		if term = terminalFd(); term < 0 {
			return 2, errors.New("--shell-job: none of stdin, stdout, stderr is a terminal")
		}
	}
	m := restore.PidMethod(c.method)
	if m != restore.PidClone3 && m != restore.PidNsLastPid {
		return 2, usageErrorf(restoreSynopsis, "--pid-method: unknown method %q", c.method)
	}
	// an unreadable inventory is reported by the restore below
	kinds, _ := imageNamespaces(c.dir)
	left, err := namespacesLeft()
	if err != nil {
		return 1, err
	}
	if left == nil {
		// before the namespaces: a new cgroup namespace is rooted here
		if err := enterCgroupRoots(c.cgroupRoots); err != nil {
			return 1, err
		}
	}
	if needsNewNamespaces(kinds) && left == nil {
		return 1, execInNewNamespaces(kinds)
	}
	if err := msgs.open(&c.log, c.dir); err != nil {
		return 1, err
	}
	if err := verifyImage(c.verifyKey, c.dir); err != nil {
		return 1, err
	}
	end, err := beginOp("restore")
	if err != nil {
		return 1, err
	}
	defer end()
	if err := checkRootOption(&c, kinds); err != nil {
		return 2, err
	}
	var nsState *procns.State
	ropts := restore.Options{PidMethod: m, Terminal: term, Detach: c.detach, Inherit: c.inherit, TCPClose: c.criu.tcpClose, LazyPages: c.lazyPages}
	if len(kinds) > 0 {
		if nsState, err = loadNamespaces(c.dir, kinds, left, c.veths); err != nil {
			return 1, err
		}
		// the dump's lock went with the old namespace: the restore locks
		// the connections again in the new one before its links come up
		ropts.InNamespaces, ropts.Relock = true, slices.Contains(kinds, "net")
		ropts.Notify = &nsNotify{st: nsState, outsideNet: left["net"]}
	}
	switch {
	case c.sibling && !slices.Contains(kinds, "mnt"):
		return 2, usageErrorf(restoreSynopsis, "--restore-sibling: only for an image whose root is a pid namespace init in its own mount namespace")
	case c.sibling:
		var sb *procns.Sandbox
		if sb, err = startSandbox(nsState, c.rtRoot, c.extMounts); err != nil {
			return 1, err
		}
		ropts.Adopt, ropts.Detach, ropts.Sibling = sb.Pid, true, true
		c.detach = true
		defer func() {
			if err != nil {
				sb.Kill()
			}
		}()
	case slices.Contains(kinds, "mnt"):
		ropts.MountNS = nsState.MountNS(c.rtRoot, c.extMounts)
	}
	if ropts.PagesFrom, err = restorePageSource(&c); err != nil {
		return 2, err
	}
	defer c.pageSource.finish(false) // after a failure; a no-op once finished
	ctx, stop := interruptible()
	res, err := restore.Restore(ctx, c.dir, ropts)
	stop()
	for _, fd := range c.inherit {
		unix.Close(fd) // the restored tree has its own copy
	}
	if err != nil {
		return 1, err
	}
	for _, w := range res.Warnings {
		msgs.warnf("%s", w)
	}
	if c.pidFile != "" {
		if err := writePidFile(c.log.inWorkDir(c.dir, c.pidFile), res.Pid); err != nil {
			return 1, err
		}
	}
	if c.stats {
		printStats(res.Stats)
	} else if b, err := json.Marshal(res.Stats); err == nil {
		msgs.debugf("stats: %s", b)
	}
	msgs.infof("Restore finished successfully, pid %d", res.Pid)
	msgs.close()
	if c.detach {
		return 0, waitLazy(res, &c)
	}
	lazyErr := make(chan error, 1)
	go func() { lazyErr <- waitLazy(res, &c) }()
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
	code, err := restore.Wait(res.Pid)
	if res.Lazy != nil {
		if lerr := <-lazyErr; lerr != nil {
			return 1, lerr
		}
	}
	return code, err
}

// containerOnly refuses, for a process restore (-D DIR), the options that
// only mean something for a container (BUNDLE); CRIU's --root, the restored
// tree's root directory, is one of them: not silently ignored.
func (c *restoreConfig) containerOnly() error {
	for _, o := range []struct{ name, value string }{
		{"--id", c.id}, {"--image-path", c.imagePath},
		{"--runtime", c.rtName}, {"--console-socket", c.console},
	} {
		if o.value != "" {
			return usageErrorf(restoreSynopsis, "%s: only for a container (ctr-cr restore %s ... BUNDLE); not for -D DIR", o.name, o.name)
		}
	}
	return nil
}

// writePidFile writes pid and a newline to path.
func writePidFile(path string, pid int) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

const showSynopsis = "show -f FILE | show DIR"

func cmdShow(args []string) error {
	var file string
	opts := []option{{names: []string{"f", "file"}, arg: "FILE", value: stringValue{&file}, help: "image file to print as JSON (without it: a summary of the image DIR)"}}
	pos, err := parseOptions("show", showSynopsis, opts, args, os.Stdout)
	if err != nil {
		return err
	}
	if file != "" {
		return image.FileJSON(file, os.Stdout)
	}
	if len(pos) != 1 {
		return usageErrorf(showSynopsis, "give -f FILE or an image directory")
	}
	return show.Summary(pos[0], os.Stdout)
}

func cmdCheck(args []string) (int, error) {
	pos, err := parseOptions("check", "check", nil, args, os.Stdout)
	if err != nil {
		return 2, err
	}
	if len(pos) > 0 {
		return 2, usageErrorf("check", "unexpected argument %q", pos[0])
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
// A relative log file is written in the image directory; a relative pid
// file in the current one, as runc's.
func restoreContainer(bundle string, c *restoreConfig) (int, error) {
	opts := container.RestoreOptions{Bundle: bundle, ImagePath: c.imagePath, ID: c.id, RuntimeRoot: c.rtRoot, ConsoleSocket: c.console}
	if c.stats {
		opts.Stats = &container.RestoreStats{}
	}
	if c.rtName != "" {
		rt, err := container.NewRuntime(c.rtName, c.rtRoot)
		if err != nil {
			return 2, err
		}
		opts.Runtime = rt
	}
	imageDir := c.imagePath
	if imageDir == "" {
		imageDir = filepath.Join(bundle, "checkpoint")
	}
	if err := msgs.open(&c.log, imageDir); err != nil {
		return 1, err
	}
	// verified before anything of the image is read, so before the
	// runtime's create
	if err := verifyImage(c.verifyKey, imageDir); err != nil {
		return 1, err
	}
	end, err := beginOp("restore")
	if err != nil {
		return 1, err
	}
	defer end()
	ctx, stop := interruptible()
	id, pid, err := container.Restore(ctx, opts)
	stop()
	if err != nil {
		return 1, err
	}
	if c.pidFile != "" {
		if err := writePidFile(c.pidFile, pid); err != nil {
			return 1, err
		}
	}
	if c.stats {
		printStats(opts.Stats)
	}
	fmt.Fprintf(os.Stderr, "ctr-cr: restore: container %s running, init pid %d\n", id, pid)
	msgs.infof("Restore finished successfully, container %s, init pid %d", id, pid)
	msgs.close()
	if c.detach {
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
