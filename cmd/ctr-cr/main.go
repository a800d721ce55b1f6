// Command ctr-cr checkpoints and restores Linux processes.
//
//	ctr-cr dump    -t PID -D DIR [--leave-running] [--shell-job] [--tcp-established] [--ext-unix-sk] [--file-locks] [--freeze-cgroup DIR] [--ghost-limit SIZE] [--jobs N] [--print-stats]
//	ctr-cr restore -D DIR [-d|--detach] [--pid-file FILE] [--shell-job] [--pid-method M] [--print-stats]
//	ctr-cr show    -f FILE | DIR
//	ctr-cr check
//
// CRIU's spellings of the same options are accepted too (flags.go), and
// every command lists its options with --help.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/ctr-cr/ctr-cr/core/dump"
	"github.com/ctr-cr/ctr-cr/core/restore"
	"github.com/ctr-cr/ctr-cr/hooks"
	"github.com/ctr-cr/ctr-cr/internal/version"
)

func init() {
	// A restore stub is taken over by its tracer before it runs; if it ever
	// runs on its own, there is nothing for it to do.
	if len(os.Args) > 1 && os.Args[1] == restore.StubArg {
		os.Exit(3)
	}
	lazyGuardMain()
	// ptrace requests must come from the thread that attached: the whole
	// command runs on the main goroutine, locked to its thread.
	runtime.LockOSThread()
}

// shortUsage is printed on stderr for a missing or unknown command.
const shortUsage = `usage: ctr-cr COMMAND [OPTIONS]
commands: dump, pre-dump, page-server, migrate, migrate-receive, restore, checkpoint, cleanup, show, check, version, hook, keygen
ctr-cr --help describes them; ctr-cr COMMAND --help lists a command's options
`

const usage = `usage: ctr-cr COMMAND [OPTIONS]

Process commands:
  dump    -t PID -D DIR [--leave-running] [--shell-job] [--tcp-established] [--ext-unix-sk] [--file-locks] [--freeze-cgroup DIR] [--ghost-limit SIZE] [--jobs N] [--print-stats]
          (PID and all its descendants)
          dump, checkpoint --sign-key FILE and restore --verify-key FILE sign
          and verify an image (docs/trust.md)
  pre-dump -t PID -D DIR [--parent-path DIR] [--print-stats]
          copy memory while the tree runs; the next pre-dump or a
          dump --parent-path DIR writes only the pages written since
  page-server --address ADDR --port PORT -D DIR [--lazy-pages]
          receive the pages files of a dump|pre-dump --page-server HOST:PORT
          (--lazy-pages, at the source: serve the image's pages files to a
          restore --lazy-pages --page-server HOST:PORT)
          (not encrypted: bind to an address only the source reaches, or
          tunnel it over SSH/TLS)
  migrate -t PID --to HOST:PORT -D WORKDIR [--max-rounds N]
          pre-copy rounds, final dump, restore by the destination's
  migrate-receive --address ADDR --port PORT -D DIR
          (the tree is killed here only once it runs there)
  restore -D DIR [-d|--detach] [--pid-file FILE] [--shell-job] [--pid-method clone3|ns_last_pid] [--print-stats]
          [--lazy-pages [--page-server HOST:PORT]]
          (--lazy-pages: the tree runs before its memory is in; -d returns
          once the last page is in)
  show    -f FILE       print one image file as JSON
  show    DIR           summary of an image
  check                 kernel features the engine uses
  cleanup [--dry-run]   undo what a ctr-cr killed mid-operation left (frozen
                        cgroups, lock tables, partial images; docs/crash.md)
  keygen  --out PREFIX  Ed25519 key pair for --sign-key (PREFIX.key) and
                        --verify-key (PREFIX.pub) of dump, checkpoint, restore
  version               print ctr-cr's version

Container commands (OCI runtimes runc and crun):
  checkpoint [--root DIR] [--runtime runc|crun] [--image-path DIR] [--leave-running]
             [--tcp-established] [--ext-unix-sk] [--print-stats] CONTAINER_ID
          (image in BUNDLE/checkpoint by default, with spec.dump, ctr-cr.json
           and container.json; without --runtime, runc or crun: whichever
           knows the container)
  checkpoint --pre-dump [--parent-path DIR] ... CONTAINER_ID
          a pre-copy round (the container runs on); the final
          checkpoint --parent-path DIR writes only the pages written since
  migrate CONTAINER_ID --to HOST:PORT -D WORKDIR [--tcp-established]
          to migrate-receive ... --bundle DIR [--root DIR] (docs/platforms.md)
  restore [--id NEW_ID] [--image-path DIR] [-d] [--pid-file F] [--root DIR]
          [--runtime runc|crun] [--console-socket PATH] BUNDLE
          (the container comes back under the runtime that ran it at the
           checkpoint; without -d ctr-cr waits for it to end; a container
           with a terminal (process.terminal) needs --console-socket: the
           runtime sends the new console's pty master there, as for create)
  hook PHASE            as an OCI hook in config.json: records the event in
                        BUNDLE/ctr-cr-hooks.log (state JSON on stdin)

CRIU's spellings work too (-R, -j, --pidfile, --restore-detached, -o FILE,
-v4, --tcp-established on restore, ...): ctr-cr COMMAND --help lists them.
Failures are reported on lines starting with "Error (ctr-cr COMMAND): ".
`

func main() {
	// other personalities by argv[0]'s basename: runc (an OCI runtime
	// for container platforms), criu swrk (their version probe)
	if code, ok := runcMain(os.Args); ok {
		os.Exit(code)
	}
	if code, ok := criuSwrkMain(os.Args); ok {
		os.Exit(code)
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, shortUsage)
		os.Exit(2)
	}
	msgs.cmd = os.Args[1]
	if path := os.Getenv("CTRCR_CPUPROFILE"); path != "" {
		// a developer's aid for the speed work: profile one command
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	code := report(run(os.Args[1]))
	msgs.close()
	pprof.StopCPUProfile()
	os.Exit(code)
}

// report prints a command's error and returns the exit status: 0 after a
// help, 2 for a wrong command line (with the command's usage line), the
// command's own status otherwise (at least 1 with an error).
func report(code int, err error) int {
	if err == nil {
		return code
	}
	if errors.Is(err, errHelp) {
		return 0
	}
	msgs.errorf("%v", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "usage: ctr-cr %s\n(ctr-cr %s --help lists the options)\n", ue.synopsis, msgs.cmd)
		return 2
	}
	if code == 0 {
		code = 1
	}
	return code
}

func run(cmd string) (int, error) {
	var err error
	code := 0
	switch cmd {
	case "dump":
		err = cmdDump(os.Args[2:])
	case "pre-dump":
		err = cmdPreDump(os.Args[2:])
	case "page-server":
		err = cmdPageServer(os.Args[2:])
	case "migrate":
		err = cmdMigrate(os.Args[2:])
	case "migrate-receive":
		err = cmdMigrateReceive(os.Args[2:])
	case dump.HolderArg:
		// ctr-cr itself runs this to hold the pre-dump tracking (not for users)
		err = dump.RunHolder(os.Args[2:])
	case "restore":
		code, err = cmdRestore(os.Args[2:])
	case "checkpoint":
		err = cmdCheckpoint(os.Args[2:])
	case "hook":
		const hookSynopsis = "hook PHASE (the OCI state on stdin)"
		if _, err := parseOptions("hook", hookSynopsis, nil, os.Args[2:], os.Stdout); err != nil {
			return 2, err
		}
		if len(os.Args) != 3 {
			return 2, usageErrorf(hookSynopsis, "one PHASE is required")
		}
		err = hooks.Entry(os.Args[2], os.Stdin)
	case hooks.ExecArg:
		// ctr-cr itself runs this to put a hook in a container (not for users)
		err = hooks.Exec(os.Args[2:])
	case "show":
		err = cmdShow(os.Args[2:])
	case "cleanup":
		err = cmdCleanup(os.Args[2:])
	case "keygen":
		err = cmdKeygen(os.Args[2:])
	case "check":
		code, err = cmdCheck(os.Args[2:])
	case "version", "--version", "-V":
		if _, err := parseOptions("version", "version", nil, os.Args[2:], os.Stdout); err != nil {
			return 2, err
		}
		fmt.Println("ctr-cr", version.Version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprint(os.Stderr, shortUsage)
		return 2, fmt.Errorf("unknown command %q", cmd)
	}
	return code, err
}
