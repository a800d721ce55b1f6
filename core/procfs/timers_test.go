package procfs

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseTimers(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []PosixTimer
	}{
		{"none", "", nil},
		// testdata/timers.txt, from a C program (glibc timer_create):
		// ID 0: SIGEV_SIGNAL SIGALRM CLOCK_MONOTONIC value 0xdeadbeef12345678
		// ID 1: SIGEV_NONE CLOCK_REALTIME
		// ID 2: SIGEV_THREAD_ID SIGRTMIN+1 CLOCK_BOOTTIME value 42
		// ID 3: NULL sigevent, CLOCK_PROCESS_CPUTIME_ID
		// Note the newest-first order, "signal/tid" for SIGEV_THREAD_ID
		// and the encoded negative CPU clock id.
		{"real capture", fixture(t, "timers.txt"), []PosixTimer{
			{ID: 3, Signo: 14, Notify: "signal", NotifyTid: 3694, ClockID: -6},
			{ID: 2, Signo: 35, SigevValue: 42, Notify: "signal", NotifyThreadID: true, NotifyTid: 3694, ClockID: 7},
			{ID: 1, Notify: "none", NotifyTid: 3694},
			{ID: 0, Signo: 14, SigevValue: 0xdeadbeef12345678, Notify: "signal", NotifyTid: 3694, ClockID: 1},
		}},
		// Real text from TestLiveTimers (raw timer_create syscalls): ID 4
		// NULL sigevent, ID 3 raw SIGEV_THREAD, ID 2 SIGEV_THREAD_ID,
		// ID 1 SIGEV_NONE, ID 0 SIGEV_SIGNAL.
		{"real capture, raw syscalls", `ID: 4
signal: 14/0000000000000004
notify: signal/pid.10290
ClockID: -6
ID: 3
signal: 10/0000000000000001
notify: thread/pid.10290
ClockID: 1
ID: 2
signal: 35/000000000000002a
notify: signal/tid.10290
ClockID: 7
ID: 1
signal: 0/0000000000000000
notify: none/pid.10290
ClockID: 0
ID: 0
signal: 12/deadbeef12345678
notify: signal/pid.10290
ClockID: 1
`, []PosixTimer{
			{ID: 4, Signo: 14, SigevValue: 4, Notify: "signal", NotifyTid: 10290, ClockID: -6},
			{ID: 3, Signo: 10, SigevValue: 1, Notify: "thread", NotifyTid: 10290, ClockID: 1},
			{ID: 2, Signo: 35, SigevValue: 42, Notify: "signal", NotifyThreadID: true, NotifyTid: 10290, ClockID: 7},
			{ID: 1, Notify: "none", NotifyTid: 10290},
			{ID: 0, Signo: 12, SigevValue: 0xdeadbeef12345678, Notify: "signal", NotifyTid: 10290, ClockID: 1},
		}},
		{"raw SIGEV_THREAD, no trailing newline",
			"ID: 7\nsignal: 10/ffffffffffffffff\nnotify: thread/pid.1\nClockID: 0",
			[]PosixTimer{{ID: 7, Signo: 10, SigevValue: ^uint64(0), Notify: "thread", NotifyTid: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTimers(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestSigevNotify(t *testing.T) {
	for _, tc := range []struct {
		t    PosixTimer
		want int
	}{
		{PosixTimer{Notify: "signal"}, SigevSignal},
		{PosixTimer{Notify: "none"}, SigevNone},
		{PosixTimer{Notify: "thread"}, SigevThread},
		{PosixTimer{Notify: "signal", NotifyThreadID: true}, SigevSignal | SigevThreadID},
	} {
		if got := tc.t.SigevNotify(); got != tc.want {
			t.Errorf("%+v: SigevNotify() = %d, want %d", tc.t, got, tc.want)
		}
	}
}

func TestParseTimersMalformed(t *testing.T) {
	const ok = "ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.5\nClockID: 1\n"
	repl := func(old, new string) string { return strings.Replace(ok, old, new, 1) }
	for _, in := range []string{
		"\n",
		"ID: 1\n",
		"ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.5\n",
		ok + "ID: 2\n",
		repl("ID: 1", "ID:1"),
		repl("ID: 1", "ID: x"),
		repl("ID: 1", "Id: 1"),
		repl("signal: 14/0000000000000000", "signal: 14"),
		repl("signal: 14/0000000000000000", "signal: x/0"),
		repl("signal: 14/0000000000000000", "signal: 14/(null)"),
		repl("signal/pid.5", "signal/pid5"),
		repl("signal/pid.5", "signal.pid.5"),
		repl("signal/pid.5", "bogus/pid.5"),
		repl("signal/pid.5", "signal/pgid.5"),
		repl("signal/pid.5", "signal/pid.x"),
		repl("ClockID: 1", "ClockID: one"),
		repl("notify: signal/pid.5\nClockID: 1", "ClockID: 1\nnotify: signal/pid.5"),
	} {
		_, err := ParseTimers(strings.NewReader(in))
		wantMalformed(t, err)
	}
}
