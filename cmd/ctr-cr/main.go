// Command ctr-cr checkpoints and restores Linux processes.
//
//	ctr-cr dump    -t PID -D DIR [--leave-running] [--shell-job] [--tcp-established] [--ext-unix-sk] [--freeze-cgroup DIR] [--ghost-limit SIZE] [--jobs N] [--print-stats]
//	ctr-cr restore -D DIR [-d|--detach] [--pid-file FILE] [--shell-job] [--pid-method M] [--print-stats]
//	ctr-cr show    -f FILE | DIR
//	ctr-cr check
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

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
	// ptrace requests must come from the thread that attached: the whole
	// command runs on the main goroutine, locked to its thread.
	runtime.LockOSThread()
}

const usage = `usage: ctr-cr COMMAND [OPTIONS]

Process commands:
  dump    -t PID -D DIR [--leave-running] [--shell-job] [--tcp-established] [--ext-unix-sk] [--freeze-cgroup DIR] [--ghost-limit SIZE] [--jobs N] [--print-stats]
          (PID and all its descendants)
  restore -D DIR [-d|--detach] [--pid-file FILE] [--shell-job] [--pid-method clone3|ns_last_pid] [--print-stats]
  show    -f FILE       print one image file as JSON
  show    DIR           summary of an image
  check                 kernel features the engine uses
  version               print ctr-cr's version

Container commands (OCI runtimes runc and crun):
  checkpoint [--root DIR] [--runtime runc|crun] [--image-path DIR] [--leave-running]
             [--tcp-established] [--ext-unix-sk] [--print-stats] CONTAINER_ID
          (image in BUNDLE/checkpoint by default, with spec.dump, ctr-cr.json
           and container.json; without --runtime, runc or crun: whichever
           knows the container)
  restore [--id NEW_ID] [--image-path DIR] [-d] [--pid-file F] [--root DIR]
          [--runtime runc|crun] [--console-socket PATH] BUNDLE
          (the container comes back under the runtime that ran it at the
           checkpoint; without -d ctr-cr waits for it to end; a container
           with a terminal (process.terminal) needs --console-socket: the
           runtime sends the new console's pty master there, as for create)
  hook PHASE            as an OCI hook in config.json: records the event in
                        BUNDLE/ctr-cr-hooks.log (state JSON on stdin)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if path := os.Getenv("CTRCR_CPUPROFILE"); path != "" {
		// a developer's aid for the speed work: profile one command
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	code, err := run(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "ctr-cr: %s: %v\n", os.Args[1], err)
		if code == 0 {
			code = 1
		}
	}
	pprof.StopCPUProfile()
	os.Exit(code)
}

func run(cmd string) (int, error) {
	var err error
	code := 0
	switch cmd {
	case "dump":
		err = cmdDump(os.Args[2:])
	case "restore":
		code, err = cmdRestore(os.Args[2:])
	case "checkpoint":
		err = cmdCheckpoint(os.Args[2:])
	case "hook":
		if len(os.Args) != 3 {
			return 2, errors.New("usage: ctr-cr hook PHASE (the OCI state on stdin)")
		}
		err = hooks.Entry(os.Args[2], os.Stdin)
	case hooks.ExecArg:
		// ctr-cr itself runs this to put a hook in a container (not for users)
		err = hooks.Exec(os.Args[2:])
	case "show":
		err = cmdShow(os.Args[2:])
	case "check":
		code, err = cmdCheck(os.Args[2:])
	case "version", "--version":
		fmt.Println("ctr-cr", version.Version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprint(os.Stderr, usage)
		return 2, fmt.Errorf("unknown command %q", cmd)
	}
	return code, err
}
