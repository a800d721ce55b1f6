package tests

// First half of the end-to-end C/R cases (tests/cases/a_*.c). Each case
// records its state before "ready" and verifies it from inside after the
// last restore; see the comment at the top of each C file.

import "testing"

// Vector (zmm/ymm/xmm, opmask), general registers, MXCSR and x87 control
// word held live in registers by an asm loop across the dumps.
func TestCR_Regs(t *testing.T) {
	runCase(t, Case{Name: "Regs", Src: "a_regs.c"})
}

// The same with the AVX2 (ymm0-14) register set only.
func TestCR_RegsAVX2(t *testing.T) {
	runCase(t, Case{Name: "RegsAVX2", Src: "a_regs.c", CFlags: []string{"-DREGS_VARIANT=2"}})
}

// The same with the SSE (xmm0-14) register set only.
func TestCR_RegsSSE(t *testing.T) {
	runCase(t, Case{Name: "RegsSSE", Src: "a_regs.c", CFlags: []string{"-DREGS_VARIANT=1"}})
}

// 8 threads with __thread counters contending on one mutex.
func TestCR_TLSThreads(t *testing.T) {
	runCase(t, Case{Name: "TLSThreads", Src: "a_tls_threads.c"})
}

// Handlers, sigaltstacks, per-thread masks and queued pending signals.
func TestCR_Signals(t *testing.T) {
	runCase(t, Case{Name: "Signals", Src: "a_signals.c"})
}

// Interval timers and POSIX timers keep their ids and rates.
func TestCR_Timers(t *testing.T) {
	runCase(t, Case{Name: "Timers", Src: "a_timers.c"})
}

// A thread in nanosleep and a thread blocked in read() on an internal pipe.
func TestCR_SleepRead(t *testing.T) {
	runCase(t, Case{Name: "SleepRead", Src: "a_sleep_read.c"})
}

// Seccomp filters (per thread) and no_new_privs.
func TestCR_Seccomp(t *testing.T) {
	runCase(t, Case{Name: "Seccomp", Src: "a_seccomp.c"})
}

// Groups, gids, umask, cwd, rlimits, personality, prctl attributes.
func TestCR_Creds(t *testing.T) {
	runCase(t, Case{Name: "Creds", Src: "a_creds.c"})
}

// A process that dropped root to uid 1000 with a few capabilities kept.
func TestCR_NonRoot(t *testing.T) {
	runCase(t, Case{Name: "NonRoot", Src: "a_nonroot.c", Uid: 1000})
}
