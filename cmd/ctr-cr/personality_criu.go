package main

// ctr-cr run under the name "criu" (a symlink) speaks CRIU's command line
// as LXC (lxc-checkpoint, LXC 5.0.2) runs it: `criu --version`, `criu
// check --feature F`, `criu dump ...`, `criu restore ...`. The options that
// only tune how CRIU works, or that LXC passes for things ctr-cr does its
// own way, are dropped here (listed in criuDropped); the others are ctr-cr's
// own options under the same names. Kept in a file of its own (argv0
// dispatch), beside the other personalities.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ctr-cr/ctr-cr/internal/version"
)

// criuVersion is the CRIU release whose command line the personality
// speaks; LXC compares it with the releases that brought the options it
// uses (2.0, 2.4, 2.8, 3.15).
const criuVersion = "4.2"

// criuDropped are the CRIU options (with whether they take a value) that
// the personality accepts and drops:
//   - --manage-cgroups=full: LXC creates the container's cgroups and their
//     limits itself at restore; the tree goes into them (--cgroup-root);
//   - --enable-external-sharing/--enable-external-masters: mounts shared
//     with or slaves of the host's are recorded with their propagation;
//   - --enable-fs FS: hugetlbfs and tracefs mounts are refused by name if
//     the container has them;
//   - --force-irmap: inotify watches are always found by file handle;
//   - --lsm-profile: no LSM on these machines (an AppArmor or SELinux
//     label on a task is refused at dump);
//   - --action-script: LXC's hook for network set-up, which ctr-cr's
//     restore does itself.
var criuDropped = map[string]bool{
	"manage-cgroups": false, "enable-external-sharing": false, "enable-external-masters": false,
	"enable-fs": true, "force-irmap": false, "lsm-profile": true, "action-script": true,
}

func init() {
	if filepath.Base(os.Args[0]) != "criu" || len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "--version", "-V":
		fmt.Printf("Version: %s\nGitID: ctr-cr %s (CRIU %s command line)\n", criuVersion, version.Version, criuVersion)
		os.Exit(0)
	case "check":
		for _, a := range os.Args[2:] {
			if a == "--feature" || strings.HasPrefix(a, "--feature=") {
				// lazy pages and dirty-memory tracking (pre-dump) are
				// not ctr-cr's: every feature probe says missing
				os.Exit(1)
			}
		}
	case "dump", "restore":
		os.Args = append([]string{"ctr-cr", os.Args[1]}, criuArgs(os.Args[1], os.Args[2:])...)
	}
}

// criuArgs drops the options of criuDropped, and turns LXC's console
// options into ctr-cr's: dump --external tty[RDEV:DEV] (the console, a pty
// whose master is LXC's) becomes --shell-job; restore --inherit-fd
// fd[N]:tty[...] gives the new console (kept: ctr-cr's --inherit-fd takes
// tty keys as the shell job's terminal). Other --external entries than
// mnt[] and tty[] are dropped at dump (LXC may repeat a stale buffer as
// the last one) and kept at restore (veth[] checked against the image,
// others refused by name).
func criuArgs(cmd string, args []string) []string {
	var out []string
	shellJob := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") {
			out = append(out, a)
			continue
		}
		if takes, ok := criuDropped[name]; ok {
			if takes && !hasVal && i+1 < len(args) {
				i++
			}
			continue
		}
		if name == "cgroup-root" && cmd == "dump" {
			if !hasVal && i+1 < len(args) {
				i++
			}
			continue
		}
		if name == "external" {
			if !hasVal && i+1 < len(args) {
				i++
				val = args[i]
			}
			switch {
			case strings.HasPrefix(val, "tty["):
				if cmd == "dump" && !shellJob {
					out = append(out, "--shell-job")
					shellJob = true
				}
				continue
			case strings.HasPrefix(val, "mnt["):
				out = append(out, "--external", val)
			case cmd == "dump":
				continue
			case strings.HasPrefix(val, "console:"):
				continue // the console's mount: --ext-mount-map console:... says it
			default:
				out = append(out, "--external", val)
			}
			continue
		}
		out = append(out, a)
	}
	return out
}
