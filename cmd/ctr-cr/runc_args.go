package main

// runc's command-line contract for checkpoint and restore, as the
// platforms send it (runc 1.1's flags; urfave/cli, so a flag is spelled
// with one dash or two, and takes its value as the next word or after
// "="): podman 4.3.1 and conmon 2.1.6,
//
//	runc checkpoint --image-path DIR --work-path DIR [--leave-running] [--tcp-established] [--file-locks] ID
//	runc --log-format=json --log FILE restore --bundle B --pid-file P --detach --image-path DIR --work-path DIR [--tcp-established] [--console-socket S] ID
//
// containerd 1.6's runc shim (go-runc),
//
//	runc --root R --log B/log.json --log-format json checkpoint --image-path P --work-path W [--leave-running] [--file-locks] ... ID
//	runc --root R --log B/log.json --log-format json restore --image-path D --work-path W --detach --pid-file P -no-subreaper [--console-socket S] --bundle B ID
//
// What ctr-cr cannot do yet is refused naming the flag, never ignored.

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// runcGlobal are runc's global options.
type runcGlobal struct {
	debug, systemdCgroup bool
	log, logFormat       string
	root, criu, rootless string
	help, version        bool
}

// parseRuncGlobal parses runc's global options up to the command and
// returns the command and its arguments.
func parseRuncGlobal(args []string) (*runcGlobal, string, []string, error) {
	g := &runcGlobal{}
	fs := flag.NewFlagSet("runc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&g.debug, "debug", false, "")
	fs.BoolVar(&g.systemdCgroup, "systemd-cgroup", false, "")
	fs.StringVar(&g.log, "log", "", "")
	fs.StringVar(&g.logFormat, "log-format", "text", "")
	fs.StringVar(&g.root, "root", "", "")
	fs.StringVar(&g.criu, "criu", "", "")
	fs.StringVar(&g.rootless, "rootless", "", "")
	fs.BoolVar(&g.help, "help", false, "")
	fs.BoolVar(&g.help, "h", false, "")
	fs.BoolVar(&g.version, "version", false, "")
	fs.BoolVar(&g.version, "v", false, "")
	if err := fs.Parse(args); err != nil {
		return g, "", nil, err
	}
	if g.help || g.version || fs.NArg() == 0 {
		return g, "", nil, nil
	}
	return g, fs.Arg(0), fs.Args()[1:], nil
}

// forward lists the global options every run of the real runc gets again
// (--root goes as container.Runtime.Root); --criu names a CRIU ctr-cr does
// not use.
func (g *runcGlobal) forward() []string {
	var a []string
	if g.debug {
		a = append(a, "--debug")
	}
	if g.systemdCgroup {
		a = append(a, "--systemd-cgroup")
	}
	if g.log != "" {
		a = append(a, "--log", g.log)
	}
	if g.logFormat != "" && g.logFormat != "text" {
		a = append(a, "--log-format", g.logFormat)
	}
	if g.rootless != "" {
		a = append(a, "--rootless", g.rootless)
	}
	return a
}

// formatRuncLog is one line of runc's log (logrus): json, or text.
func formatRuncLog(format, level, msg string) []byte {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if format == "json" {
		return []byte(fmt.Sprintf("{\"level\":%q,\"msg\":%q,\"time\":%q}\n", level, msg, now))
	}
	return []byte(fmt.Sprintf("time=%q level=%s msg=%q\n", now, level, msg))
}

// runcPaths are --image-path and --work-path.
type runcPaths struct{ image, work string }

// resolve gives the absolute image and work directories: the image in
// ./checkpoint by default, the work directory (dump.log, restore.log,
// stats-dump, stats-restore) the image directory by default, as runc's.
func (p runcPaths) resolve() (string, string, error) {
	image := p.image
	if image == "" {
		image = "checkpoint"
	}
	image, err := filepath.Abs(image)
	if err != nil {
		return "", "", err
	}
	work := p.work
	if work == "" {
		work = image
	}
	work, err = filepath.Abs(work)
	return image, work, err
}

// runcCommon are the options checkpoint and restore share.
type runcCommon struct {
	id                   string
	paths                runcPaths
	tcpEstablished       bool
	extUnixSk            bool
	shellJob, fileLocks  bool
	manageCgroups        string
	emptyNs              listValue
	emptyNet             bool
	lsmProfile, lsmMnt   string
	lazyPages, autoDedup bool
}

// listValue is a repeatable string option.
type listValue struct{ p *[]string }

func (v listValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}
func (v listValue) Set(s string) error { *v.p = append(*v.p, s); return nil }

func (c *runcCommon) define(fs *flag.FlagSet) {
	fs.StringVar(&c.paths.image, "image-path", "", "")
	fs.StringVar(&c.paths.work, "work-path", "", "")
	fs.BoolVar(&c.tcpEstablished, "tcp-established", false, "")
	fs.BoolVar(&c.extUnixSk, "ext-unix-sk", false, "")
	fs.BoolVar(&c.shellJob, "shell-job", false, "")
	fs.BoolVar(&c.fileLocks, "file-locks", false, "")
	fs.StringVar(&c.manageCgroups, "manage-cgroups-mode", "", "")
	var ns []string
	c.emptyNs = listValue{&ns}
	fs.Var(c.emptyNs, "empty-ns", "")
	fs.StringVar(&c.lsmProfile, "lsm-profile", "", "")
	fs.StringVar(&c.lsmMnt, "lsm-mount-context", "", "")
	fs.BoolVar(&c.lazyPages, "lazy-pages", false, "")
	fs.BoolVar(&c.autoDedup, "auto-dedup", false, "")
}

// check refuses, naming the flag, what ctr-cr does not do, and takes the
// one positional argument, the container id.
func (c *runcCommon) check(pos []string) error {
	if len(pos) != 1 {
		return fmt.Errorf("want one container id, got %d arguments (%s)", len(pos), strings.Join(pos, " "))
	}
	c.id = pos[0]
	switch c.manageCgroups {
	case "", "soft", "full":
		// the container's cgroup settings are saved and put back into the
		// cgroup the runtime's create makes: what soft and full give there
	default:
		return fmt.Errorf("--manage-cgroups-mode %s: not supported (ctr-cr restores the container's cgroup settings into the cgroup the runtime creates: soft or full)", c.manageCgroups)
	}
	for _, ns := range *c.emptyNs.p {
		if ns != "network" {
			return fmt.Errorf("--empty-ns %s: not supported (only network)", ns)
		}
		c.emptyNet = true
	}
	for _, r := range []struct {
		on   bool
		flag string
	}{
		{c.lazyPages, "--lazy-pages"}, {c.autoDedup, "--auto-dedup"},
		{c.lsmProfile != "", "--lsm-profile"}, {c.lsmMnt != "", "--lsm-mount-context"},
	} {
		if r.on {
			return fmt.Errorf("%s: not supported by ctr-cr", r.flag)
		}
	}
	return nil
}

// runcCheckpointConfig is `runc checkpoint`'s command line.
type runcCheckpointConfig struct {
	runcCommon
	leaveRunning bool
	parentPath   string
	preDump      bool
	pageServer   string
	statusFd     string
}

const runcCheckpointUsage = `usage: runc checkpoint [OPTIONS] CONTAINER_ID   (ctr-cr as runc)

Checkpoints a running (or paused) container with ctr-cr; runc's options:
  --image-path DIR          image directory (default ./checkpoint)
  --work-path DIR           dump.log and stats-dump (default: the image directory)
  --leave-running           leave the container running (a paused one stays paused)
  --tcp-established         checkpoint established TCP connections
  --ext-unix-sk             allow unix sockets connected outside the container
  --file-locks              checkpoint the file locks the container holds
  --shell-job               accepted: a container's console is saved either way
  --manage-cgroups-mode M   soft or full (the cgroup's settings are saved)
  --empty-ns network        do not save the network namespace's contents
  --pre-dump                a pre-copy round: memory copied while it runs, tracking armed
  --parent-path DIR         the previous round, relative to the image directory
refused until ctr-cr has them: --lazy-pages, --page-server, --status-fd,
  --auto-dedup, --lsm-profile, --lsm-mount-context
`

// parseRuncCheckpoint parses checkpoint's arguments (help goes to out).
func parseRuncCheckpoint(args []string, out io.Writer) (*runcCheckpointConfig, error) {
	c := &runcCheckpointConfig{}
	fs := flag.NewFlagSet("checkpoint", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.define(fs)
	fs.BoolVar(&c.leaveRunning, "leave-running", false, "")
	fs.StringVar(&c.parentPath, "parent-path", "", "")
	fs.BoolVar(&c.preDump, "pre-dump", false, "")
	fs.StringVar(&c.pageServer, "page-server", "", "")
	fs.StringVar(&c.statusFd, "status-fd", "", "")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprint(out, runcCheckpointUsage)
			return nil, errHelp
		}
		return nil, err
	}
	if err := c.check(fs.Args()); err != nil {
		return nil, err
	}
	for _, r := range []struct {
		on   bool
		flag string
	}{
		{c.pageServer != "", "--page-server"}, {c.statusFd != "", "--status-fd"},
	} {
		if r.on {
			return nil, fmt.Errorf("%s: not supported by ctr-cr as runc (ctr-cr checkpoint --page-server sends a container's pages to a page server)", r.flag)
		}
	}
	return c, nil
}

// runcRestoreConfig is `runc restore`'s command line.
type runcRestoreConfig struct {
	runcCommon
	bundle, pidFile, consoleSocket string
	detach, noSubreaper, noPivot   bool
	tcpClose                       bool
}

const runcRestoreUsage = `usage: runc restore [OPTIONS] CONTAINER_ID   (ctr-cr as runc)

Restores a container checkpointed by ctr-cr; runc's options:
  -b, --bundle DIR          the container's bundle (default: the current directory)
  --image-path DIR          image directory (default ./checkpoint)
  --work-path DIR           restore.log and stats-restore (default: the image directory)
  -d, --detach              return once the container runs
  --pid-file FILE           write the container's init pid there
  --console-socket PATH     a container with a terminal: receives the new console's master
  --no-subreaper            without --detach: do not become the container's subreaper
  --no-pivot                passed to the runtime's create
  --tcp-established, --ext-unix-sk, --file-locks, --shell-job: accepted (the image says)
  --tcp-close               TCP connections come back closed
  --manage-cgroups-mode M   soft or full
  --empty-ns network        leave the new network namespace as the platform made it
refused: --lazy-pages, --auto-dedup, --lsm-profile, --lsm-mount-context
`

// parseRuncRestore parses restore's arguments (help goes to out).
func parseRuncRestore(args []string, out io.Writer) (*runcRestoreConfig, error) {
	c := &runcRestoreConfig{}
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.define(fs)
	fs.StringVar(&c.bundle, "bundle", "", "")
	fs.StringVar(&c.bundle, "b", "", "")
	fs.StringVar(&c.pidFile, "pid-file", "", "")
	fs.StringVar(&c.consoleSocket, "console-socket", "", "")
	fs.BoolVar(&c.detach, "detach", false, "")
	fs.BoolVar(&c.detach, "d", false, "")
	fs.BoolVar(&c.noSubreaper, "no-subreaper", false, "")
	fs.BoolVar(&c.noPivot, "no-pivot", false, "")
	fs.BoolVar(&c.tcpClose, "tcp-close", false, "")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprint(out, runcRestoreUsage)
			return nil, errHelp
		}
		return nil, err
	}
	if err := c.check(fs.Args()); err != nil {
		return nil, err
	}
	if c.bundle == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		c.bundle = wd
	}
	return c, nil
}

// createArgs are the options restore passes on to the runtime's create.
func (c *runcRestoreConfig) createArgs() []string {
	if c.noPivot {
		return []string{"--no-pivot"}
	}
	return nil
}
