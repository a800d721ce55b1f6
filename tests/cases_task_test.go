package tests

// C/R cases of per-task state that must come back exactly: scheduling,
// OOM and audit attributes, membarrier registrations, memory locks.

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ctr-cr/ctr-cr/internal/testutil"
)

// Per-thread scheduling policy, rt priority, reset-on-fork, nice and
// ioprio; oom_score_adj and loginuid of the process.
func TestCR_Sched(t *testing.T) {
	runCase(t, Case{Name: "Sched", Src: "a_sched.c"})
}

// Membarrier registrations (private expedited, sync-core, rseq, global
// expedited) of a multi-threaded process.
func TestCR_Membarrier(t *testing.T) {
	runCase(t, Case{Name: "Membarrier", Src: "a_membarrier.c"})
}

// mlock, mlock2(MLOCK_ONFAULT) and mlockall(MCL_FUTURE|MCL_ONFAULT), then
// a uid change to one whose RLIMIT_MEMLOCK the restore may not exceed.
func TestCR_Mlock(t *testing.T) {
	runCase(t, Case{Name: "Mlock", Src: "a_mlock.c"})
}

// The same with MCL_FUTURE only: a fresh mapping after restore must be
// locked (and populated).
func TestCR_MlockFuture(t *testing.T) {
	runCase(t, Case{Name: "MlockFuture", Src: "a_mlock.c", CFlags: []string{"-DNO_ONFAULT"}})
}

// A process under mlockall(MCL_FUTURE) whose RLIMIT_MEMLOCK is below what
// it has locked can map nothing more, not even the dumper's scratch page:
// the dump is refused naming it, and the process runs on unchanged.
func TestNegative_MlockFutureOverLimit(t *testing.T) {
	refuseDump(t, Case{Name: "MlockOverLimit", Src: "a_mlock.c", CFlags: []string{"-DLIMIT_KB=96"}}, "MCL_FUTURE", "RLIMIT_MEMLOCK")
}

// refuseDump starts case c, requires its dump (killing and leave-running)
// to fail naming the pid and every word of want, and the case to run on
// untraced and pass.
func refuseDump(t *testing.T, c Case, want ...string) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, c)
	start := procStartTime(t, r.Pid)
	for _, leave := range []bool{false, true} {
		img := filepath.Join(t.TempDir(), "img")
		args := []string{"dump", "-t", strconv.Itoa(r.Pid), "-D", img}
		if leave {
			args = append(args, "--leave-running")
		}
		_, stderr, err := ctrcr(t, args...)
		requireExitCode(t, err, stderr, 1)
		requireNoPanic(t, stderr)
		for _, w := range append(want, strconv.Itoa(r.Pid)) {
			if !strings.Contains(stderr, w) {
				t.Errorf("dump error does not name %q:\n%s", w, stderr)
			}
		}
		requireRunningUntraced(t, r.Pid)
		if st := procStartTime(t, r.Pid); st != start {
			t.Fatalf("pid %d is another process now", r.Pid)
		}
	}
	finishChild(t, r)
}

// A filter installed with SECCOMP_FILTER_FLAG_TSYNC is shared by all
// threads after restore (a later TSYNC behaves the same), with a
// thread-private filter on top in one thread.
func TestCR_SeccompTsync(t *testing.T) {
	runCase(t, Case{Name: "SeccompTsync", Src: "a_seccomp_tsync.c"})
}

// A thread in seccomp strict mode, and a filter a thread installed without
// no_new_privs before giving up root.
func TestCR_SeccompStrict(t *testing.T) {
	runCase(t, Case{Name: "SeccompStrict", Src: "a_seccomp_strict.c"})
}

// Children stopped by SIGTSTP (one thread blocking it), SIGTTIN and
// SIGTTOU stay stopped by that signal: the parent's waitid reports it.
func TestTree_StopSignal(t *testing.T) {
	runTree(t, Case{Name: "t_stopsig", Src: "t_stopsig.c"})
}

// The same children dumped twice with --leave-running: the originals stay
// stopped by their own signals, with no signal left pending (the case
// checks this itself after go).
func TestTree_StopSignalLeaveRunning(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	r := startCase(t, Case{Name: "t_stopsig", Src: "t_stopsig.c"})
	for i := 0; i < 2; i++ {
		img := filepath.Join(t.TempDir(), "img")
		if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running"); err != nil {
			r.fatalf(stderr, "dump --leave-running %d: %v", i, err)
		}
		requireRunningUntraced(t, r.Pid)
	}
	finishChild(t, r)
}

// A SIGTRAP handler with SIGTRAP queued (process-wide and to one thread,
// with their siginfo), a handler alone, and SIGTRAP ignored.
func TestCR_Sigtrap(t *testing.T) {
	for _, m := range []struct{ name, mode string }{{"Pending", "0"}, {"Handler", "1"}, {"Ignored", "2"}} {
		t.Run(m.name, func(t *testing.T) {
			runCase(t, Case{Name: "Sigtrap" + m.name, Src: "a_sigtrap.c", CFlags: []string{"-DMODE=" + m.mode}})
		})
	}
}

// The same dumped twice with --leave-running: the original keeps its
// SIGTRAP action and queued SIGTRAPs (the case checks after go).
func TestCR_SigtrapLeaveRunning(t *testing.T) {
	testutil.RequiresRoot(t)
	if noCR {
		t.Skip("CTRCR_NOCR=1")
	}
	for _, mode := range []string{"0", "1", "2"} {
		r := startCase(t, Case{Name: "SigtrapLeave" + mode, Src: "a_sigtrap.c", CFlags: []string{"-DMODE=" + mode}})
		for i := 0; i < 2; i++ {
			img := filepath.Join(t.TempDir(), "img")
			if _, stderr, err := ctrcr(t, "dump", "-t", strconv.Itoa(r.Pid), "-D", img, "--leave-running"); err != nil {
				r.fatalf(stderr, "dump --leave-running %d: %v", i, err)
			}
			requireRunningUntraced(t, r.Pid)
		}
		finishChild(t, r)
	}
}

// Fds on /proc files of the tree's own tasks: a child's, its own (through
// /proc/self) and its own second thread's.
func TestTree_ProcFds(t *testing.T) {
	runTree(t, Case{Name: "t_procfds", Src: "t_procfds.c"})
}

// A thread under SCHED_DEADLINE: the dump is refused naming the policy.
func TestNegative_SchedDeadline(t *testing.T) {
	refuseDump(t, Case{Name: "SchedDeadline", Src: "a_sched_deadline.c"}, "SCHED_DEADLINE")
}
