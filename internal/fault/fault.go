// Package fault lets tests kill ctr-cr at a named point, to check that a
// crash there leaves the workload, the bundle and the runtime's state as
// the failure rules say. CTRCR_FAULT=NAME makes Point(NAME) SIGKILL the
// process: no deferred cleanup runs, as with kill -9, the OOM killer or a
// power cut. Unset (always, outside tests), Point does nothing.
package fault

import (
	"os"
	"sync/atomic"
	"syscall"
)

// Point kills the process with SIGKILL when CTRCR_FAULT names this point.
func Point(name string) {
	if v := os.Getenv("CTRCR_FAULT"); v != "" && v == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is on its way
	}
}

// Once reports true the first time it is called with the name that
// CTRCR_FAULT_ONCE holds, in this process, and false otherwise: a test
// makes ctr-cr take a failure path once (e.g. a pid race that makes a
// restore start over). Unset (always, outside tests), it is false.
func Once(name string) bool {
	if v := os.Getenv("CTRCR_FAULT_ONCE"); v == "" || v != name {
		return false
	}
	return !onceFired.Swap(true)
}

var onceFired atomic.Bool
