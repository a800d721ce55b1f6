// Package fault lets tests kill ctr-cr at a named point, to check that a
// crash there leaves the workload, the bundle and the runtime's state as
// the failure rules say. CTRCR_FAULT=NAME makes Point(NAME) SIGKILL the
// process: no deferred cleanup runs, as with kill -9, the OOM killer or a
// power cut. CTRCR_FAULT=NAME:N makes the N-th Step(NAME) (counted from 1
// over the whole process) do the same, for points passed many times, such
// as each step of syscall injection ("inject:N"). CTRCR_FAULT=point:N
// kills at the N-th Point of any name, to sweep every named point of an
// operation in turn (the name is written to stderr first). Unset (always,
// outside tests), Point and Step do nothing.
package fault

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Point kills the process with SIGKILL when CTRCR_FAULT names this point,
// or when it is the N-th point passed and CTRCR_FAULT is point:N.
func Point(name string) {
	if v := os.Getenv("CTRCR_FAULT"); v != "" && v == name {
		die()
	}
	if hit("point") {
		fmt.Fprintf(os.Stderr, "fault: killed at point %s\n", name)
		die()
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
var (
	stepOnce sync.Once
	stepName string
	stepAt   int64
	steps    atomic.Int64
)

// Step counts a pass through the counted point name and kills the process
// with SIGKILL at the pass CTRCR_FAULT=name:N asks for.
func Step(name string) {
	if hit(name) {
		die()
	}
}

// hit counts a pass through the counted point name and reports whether it
// is the pass CTRCR_FAULT=name:N asks for.
func hit(name string) bool {
	stepOnce.Do(func() {
		v := os.Getenv("CTRCR_FAULT")
		n, at, ok := strings.Cut(v, ":")
		if !ok {
			return
		}
		if k, err := strconv.ParseInt(at, 10, 64); err == nil && k > 0 {
			stepName, stepAt = n, k
		}
	})
	return stepAt != 0 && name == stepName && steps.Add(1) == stepAt
}

func die() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is on its way
}
