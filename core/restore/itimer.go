package restore

import (
	"sync"

	"golang.org/x/sys/unix"
)

// cpuTimerSlack is what the kernel adds to the value of a CPU-time itimer
// (ITIMER_VIRTUAL, ITIMER_PROF) when it is set: one tick (TICK_NSEC, 4 ms
// at HZ=250), so that it never fires early. Reading the timer right after
// setting it shows the value plus that tick. A restore that set the dumped
// value as it is would make the timer one tick later on every
// checkpoint/restore cycle, so the value set is the dumped one minus the
// slack (see itimerValueUs).
//
// The slack is measured once, in this process, with ITIMER_VIRTUAL, which
// the Go runtime does not use: set 1 s, read it back, disarm it. A second
// of user CPU cannot pass in between, so the timer never fires here.
var cpuTimerSlack = sync.OnceValue(func() int64 {
	const setUs = 1_000_000
	if _, err := unix.Setitimer(unix.ItimerVirtual, unix.Itimerval{Value: unix.Timeval{Sec: 1}}); err != nil {
		return 0
	}
	got, err := unix.Getitimer(unix.ItimerVirtual)
	unix.Setitimer(unix.ItimerVirtual, unix.Itimerval{})
	if err != nil {
		return 0
	}
	slack := got.Value.Sec*1_000_000 + got.Value.Usec - setUs
	if slack <= 0 || slack > 20_000 {
		return 0 // no slack on this kernel, or a reading we do not trust
	}
	// The CPU used between the two calls (microseconds at most) makes the
	// reading a little short of the tick; round up to 100 µs.
	return (slack + 99) / 100 * 100
})

// itimerValueUs is the value to pass to setitimer at restore for a timer
// that had valueUs left at dump: CPU-time timers get the kernel's slack
// taken off (never down to 0, which would disarm the timer; an expired
// value of 0 with an interval still armed is set as 1 µs).
func itimerValueUs(which uint32, valueUs int64) int64 {
	if which == unix.ITIMER_VIRTUAL || which == unix.ITIMER_PROF {
		valueUs -= cpuTimerSlack()
	}
	if valueUs <= 0 {
		return 1
	}
	return valueUs
}
