package dump

import (
	"os"
	"runtime"
	"strconv"
	"strings"
)

// DefaultJobs is the number of processes whose memory is dumped at once
// when the caller does not say (--jobs): two per CPU that is idle now, 1 to
// 4. On this project's two-CPU machine a 20-process tree dumped in 529 ms
// with 4 jobs against 772 ms with 1 when the CPUs were free, but in 1153
// against 985 ms with two CPU hogs running: every further job is one more
// runnable thread waiting for a CPU, and every hand-off between them a
// wake-up (docs/performance.md). So parallel only where CPUs are free.
func DefaultJobs() int {
	return jobsFor(runtime.NumCPU(), runnableNow())
}

// jobsFor is DefaultJobs for cpus usable CPUs and running runnable tasks on
// the host (ourselves included; -1 unknown).
func jobsFor(cpus, running int) int {
	if running < 0 {
		return 4 // no /proc/loadavg: what the default was
	}
	idle := cpus - (running - 1)
	return max(1, min(4, 2*idle))
}

// runnableNow reads the number of runnable tasks on the host, the first
// half of /proc/loadavg's fourth field ("2/391"), or -1.
func runnableNow() int {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return -1
	}
	r, _, ok := strings.Cut(f[3], "/")
	n, err := strconv.Atoi(r)
	if !ok || err != nil || n < 0 {
		return -1
	}
	return n
}

// confirm is a check running in the background (Options.PagesDone).
type confirm struct {
	done chan struct{}
	err  error
}

// startConfirm runs f in the background; nil f gives a nil confirm,
// whose wait returns nil.
func startConfirm(f func() error) *confirm {
	if f == nil {
		return nil
	}
	c := &confirm{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = f()
	}()
	return c
}

// wait returns f's result once it is known.
func (c *confirm) wait() error {
	if c == nil {
		return nil
	}
	<-c.done
	return c.err
}
