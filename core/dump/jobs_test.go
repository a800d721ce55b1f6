package dump

import "testing"

func TestJobsFor(t *testing.T) {
	for _, c := range []struct{ cpus, running, want int }{
		{2, 1, 4},  // quiet two-CPU host: only us
		{2, 2, 2},  // one other task running
		{2, 3, 1},  // two CPU hogs
		{2, 19, 1}, // loaded
		{8, 1, 4},
		{8, 6, 4},
		{8, 8, 2},
		{1, 1, 2},
		{2, -1, 4}, // unknown: the old default
		{2, 0, 4},
	} {
		if got := jobsFor(c.cpus, c.running); got != c.want {
			t.Errorf("jobsFor(%d cpus, %d running) = %d, want %d", c.cpus, c.running, got, c.want)
		}
	}
}

func TestRunnableNow(t *testing.T) {
	if n := runnableNow(); n < 1 {
		t.Errorf("runnableNow() = %d: at least this test runs", n)
	}
}

func TestSpliceThreshold(t *testing.T) {
	for env, want := range map[string]uint64{"": 16384, "256": 256, "0": 0, "lots": 16384} {
		if got := spliceThreshold(env); got != want {
			t.Errorf("spliceThreshold(%q) = %d, want %d", env, got, want)
		}
	}
}
