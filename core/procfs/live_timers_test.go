package procfs

import (
	"os"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sigevent is struct sigevent on x86-64 (64 bytes).
type sigevent struct {
	value  uint64
	signo  int32
	notify int32
	tid    int32
	_      [44]byte
}

// timerCreate calls timer_create(2) directly; ev may be nil.
func timerCreate(t *testing.T, clock int, ev *sigevent) int {
	t.Helper()
	var id int32
	_, _, errno := unix.Syscall(unix.SYS_TIMER_CREATE, uintptr(clock), uintptr(unsafe.Pointer(ev)), uintptr(unsafe.Pointer(&id)))
	if errno != 0 {
		t.Fatalf("timer_create(%d, %+v): %v", clock, ev, errno)
	}
	t.Cleanup(func() { unix.Syscall(unix.SYS_TIMER_DELETE, uintptr(id), 0, 0) })
	return int(id)
}

// TestLiveTimers creates POSIX timers with raw syscalls and checks what
// /proc/self/timers reports for each sigevent shape.
func TestLiveTimers(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, tid := os.Getpid(), unix.Gettid()

	type want struct {
		PosixTimer
		notify int
	}
	cases := map[int]want{}
	add := func(clock int, ev *sigevent, w PosixTimer, notify int) {
		id := timerCreate(t, clock, ev)
		w.ID = id
		cases[id] = want{w, notify}
	}
	add(unix.CLOCK_MONOTONIC,
		&sigevent{value: 0xdeadbeef12345678, signo: int32(unix.SIGUSR2), notify: SigevSignal},
		PosixTimer{Signo: int(unix.SIGUSR2), SigevValue: 0xdeadbeef12345678, Notify: "signal", NotifyTid: pid, ClockID: unix.CLOCK_MONOTONIC},
		SigevSignal)
	add(unix.CLOCK_REALTIME, &sigevent{notify: SigevNone},
		PosixTimer{Notify: "none", NotifyTid: pid, ClockID: unix.CLOCK_REALTIME}, SigevNone)
	add(unix.CLOCK_BOOTTIME,
		&sigevent{value: 42, signo: 35, notify: SigevSignal | SigevThreadID, tid: int32(tid)},
		PosixTimer{Signo: 35, SigevValue: 42, Notify: "signal", NotifyThreadID: true, NotifyTid: tid, ClockID: unix.CLOCK_BOOTTIME},
		SigevSignal|SigevThreadID)
	add(unix.CLOCK_MONOTONIC, &sigevent{value: 1, signo: int32(unix.SIGUSR1), notify: SigevThread},
		PosixTimer{Signo: int(unix.SIGUSR1), SigevValue: 1, Notify: "thread", NotifyTid: pid, ClockID: unix.CLOCK_MONOTONIC},
		SigevThread)
	// NULL sigevent: SIGALRM to the process; the kernel stores the timer id
	// as sigev_value (filled in below).
	nullID := timerCreate(t, unix.CLOCK_PROCESS_CPUTIME_ID, nil)
	cases[nullID] = want{PosixTimer{ID: nullID, Signo: int(unix.SIGALRM), SigevValue: uint64(nullID), Notify: "signal", NotifyTid: pid, ClockID: -6}, SigevSignal}

	raw, err := os.ReadFile(PidPath(pid, "timers"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/proc/%d/timers:\n%s", pid, raw)
	timers, err := ReadTimers(pid)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, got := range timers {
		w, ok := cases[got.ID]
		if !ok {
			continue
		}
		found++
		if got != w.PosixTimer {
			t.Errorf("timer %d:\n got  %+v\n want %+v", got.ID, got, w.PosixTimer)
		}
		if n := got.SigevNotify(); n != w.notify {
			t.Errorf("timer %d: SigevNotify %d, want %d", got.ID, n, w.notify)
		}
	}
	if found != len(cases) {
		t.Errorf("found %d of %d timers in %+v", found, len(cases), timers)
	}
}
