package tests

// C/R cases of per-task state that must come back exactly: scheduling,
// OOM and audit attributes, membarrier registrations, memory locks.

import "testing"

// Per-thread scheduling policy, rt priority, reset-on-fork, nice and
// ioprio; oom_score_adj and loginuid of the process.
func TestCR_Sched(t *testing.T) {
	runCase(t, Case{Name: "Sched", Src: "a_sched.c"})
}
