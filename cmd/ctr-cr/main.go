// Command ctr-cr checkpoints and restores Linux processes.
//
//	ctr-cr dump    -t PID -D DIR [--leave-running] [--ghost-limit SIZE] [--print-stats]
//	ctr-cr restore -D DIR [-d|--detach] [--pid-file FILE] [--print-stats]
//	ctr-cr show    -f FILE | DIR
//	ctr-cr check
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/ctr-cr/ctr-cr/core/restore"
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
  dump    -t PID -D DIR [--leave-running] [--ghost-limit SIZE] [--print-stats]
  restore -D DIR [-d|--detach] [--pid-file FILE] [--pid-method clone3|ns_last_pid] [--print-stats]
  show    -f FILE       print one image file as JSON
  show    DIR           summary of an image
  check                 kernel features the engine uses
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	code := 0
	switch os.Args[1] {
	case "dump":
		err = cmdDump(os.Args[2:])
	case "restore":
		code, err = cmdRestore(os.Args[2:])
	case "show":
		err = cmdShow(os.Args[2:])
	case "check":
		code, err = cmdCheck(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "ctr-cr: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ctr-cr: %s: %v\n", os.Args[1], err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
