package procfs

import (
	"io"
	"strconv"
	"strings"
)

// sigevent notification kinds (include/uapi/asm-generic/siginfo.h).
const (
	SigevSignal   = 0 // SIGEV_SIGNAL
	SigevNone     = 1 // SIGEV_NONE
	SigevThread   = 2 // SIGEV_THREAD
	SigevThreadID = 4 // SIGEV_THREAD_ID, or-ed with one of the above
)

// PosixTimer is one timer of /proc/<pid>/timers (CONFIG_CHECKPOINT_RESTORE).
// The kernel prints four lines per timer (fs/proc/base.c show_timer):
//
//	ID: 0
//	signal: 14/deadbeef12345678
//	notify: signal/pid.3694
//	ClockID: 1
//
// Observed on Linux 6.18:
//   - "signal:" is signo/sigev_value, the value printed with %px as 16 hex
//     digits (0000000000000000 for NULL), never hashed.
//   - "notify:" is kind/target.N where kind is nstr[notify &
//     ~SIGEV_THREAD_ID] ("signal", "none", "thread") and target is "tid"
//     iff SIGEV_THREAD_ID is set, else "pid". So SIGEV_THREAD_ID timers read
//     "signal/tid.N"; "thread/..." only appears for a raw SIGEV_THREAD (glibc
//     implements SIGEV_THREAD in user space with SIGEV_THREAD_ID).
//   - SIGEV_NONE timers still print the given sigev_signo (usually 0) and
//     "none/pid.N". A NULL sigevent prints SIGALRM and the timer ID as the
//     value ("14/0000000000000004" for ID 4).
//   - ClockID may be negative: CPU-time clocks are encoded, e.g.
//     CLOCK_PROCESS_CPUTIME_ID created by the process itself shows -6.
//   - Timers are listed newest first (descending ID), not by ID.
type PosixTimer struct {
	ID             int    // timer id as returned by timer_create(2)
	Signo          int    // sigev_signo
	SigevValue     uint64 // sigev_value.sival_ptr
	Notify         string // "signal", "none" or "thread"
	NotifyThreadID bool   // target printed as "tid" (SIGEV_THREAD_ID)
	NotifyTid      int    // the pid or tid after the dot (in the reader's pid namespace)
	ClockID        int    // clockid_t
}

// SigevNotify returns the sigev_notify value: SigevSignal, SigevNone or
// SigevThread, or-ed with SigevThreadID when NotifyThreadID is set.
func (t *PosixTimer) SigevNotify() int {
	v := SigevSignal
	switch t.Notify {
	case "none":
		v = SigevNone
	case "thread":
		v = SigevThread
	}
	if t.NotifyThreadID {
		v |= SigevThreadID
	}
	return v
}

// ParseTimers parses the content of /proc/<pid>/timers: zero or more blocks
// of exactly the four lines ID, signal, notify, ClockID in that order.
// Anything else is an error wrapping ErrMalformed. Timers are returned in
// file order.
func ParseTimers(r io.Reader) ([]PosixTimer, error) {
	var out []PosixTimer
	var t PosixTimer
	sc := lineScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		want := [...]string{"ID", "signal", "notify", "ClockID"}[(n-1)%4]
		key, val, ok := strings.Cut(line, ": ")
		if !ok || key != want {
			return nil, malformed("timers", n, "want %q line, got %q", want+":", line)
		}
		var err error
		switch key {
		case "ID":
			t = PosixTimer{}
			err = setNumber(&t.ID, val, 10)
		case "signal":
			sig, value, ok := strings.Cut(val, "/")
			if !ok {
				err = msgError("want signo/value, got " + strconv.Quote(val))
			} else if err = setNumber(&t.Signo, sig, 10); err == nil {
				err = setNumber(&t.SigevValue, value, 16)
			}
		case "notify":
			err = t.parseNotify(val)
		case "ClockID":
			if err = setNumber(&t.ClockID, val, 10); err == nil {
				out = append(out, t)
			}
		}
		if err != nil {
			return nil, malformed("timers", n, "%s: %v", key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, scanErr("timers", n, err)
	}
	if n%4 != 0 {
		return nil, malformed("timers", n, "truncated timer block")
	}
	return out, nil
}

// ReadTimers parses /proc/<pid>/timers.
func ReadTimers(pid int) ([]PosixTimer, error) {
	return parseFile(PidPath(pid, "timers"), ParseTimers)
}

// parseNotify parses "signal/pid.123".
func (t *PosixTimer) parseNotify(val string) error {
	kind, rest, ok1 := strings.Cut(val, "/")
	target, num, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return msgError("want kind/target.N, got " + strconv.Quote(val))
	}
	switch kind {
	case "signal", "none", "thread":
		t.Notify = kind
	default:
		return msgError("unknown notify kind " + strconv.Quote(kind))
	}
	switch target {
	case "pid":
	case "tid":
		t.NotifyThreadID = true
	default:
		return msgError("unknown notify target " + strconv.Quote(target))
	}
	return setNumber(&t.NotifyTid, num, 10)
}
