package restore

import (
	"testing"

	"golang.org/x/sys/unix"
)

// A CPU-time itimer set with itimerValueUs reads back as the value it had at
// dump, not one tick more (the kernel's slack), so a timer does not drift
// later by a tick per checkpoint/restore cycle.
func TestItimerValueUsReadsBackUnchanged(t *testing.T) {
	slack := cpuTimerSlack()
	if slack < 1000 || slack > 10_000 {
		t.Fatalf("cpu timer slack %d µs, want one tick of HZ 100..1000", slack)
	}
	defer unix.Setitimer(unix.ItimerVirtual, unix.Itimerval{})
	for _, want := range []int64{500_000, 28_000, slack + 1} {
		v := itimerValueUs(unix.ITIMER_VIRTUAL, want)
		if _, err := unix.Setitimer(unix.ItimerVirtual, unix.Itimerval{Value: unix.NsecToTimeval(v * 1000)}); err != nil {
			t.Fatal(err)
		}
		it, err := unix.Getitimer(unix.ItimerVirtual)
		if err != nil {
			t.Fatal(err)
		}
		got := it.Value.Sec*1_000_000 + it.Value.Usec
		if got > want || got < want-1000 {
			t.Errorf("dumped value %d µs reads back as %d µs after restore", want, got)
		}
	}
	if got := itimerValueUs(unix.ITIMER_PROF, 1); got != 1 {
		t.Errorf("a value under the slack gives %d µs, want 1 (still armed)", got)
	}
	if got := itimerValueUs(unix.ITIMER_REAL, 28_000); got != 28_000 {
		t.Errorf("ITIMER_REAL has no slack, got %d", got)
	}
}
